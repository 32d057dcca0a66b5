"""Distributed tracing decided once (module_utils/_tracing.py) and what each sender gets from it: Traefik's flags
(_traefik.py; started with the pinned binary in tests/integration/test_traefik_entrypoints.py), the front door's
config entry (_gateway.py), vLLM's argument and environment. Bad input: a message naming the variable and the fix."""

from __future__ import annotations

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _gateway, _tracing, _traefik
from ansible_collections.llmserve.k3s.plugins.filter import tracing as tracing_filters

JAEGER = "llmserve-jaeger.monitoring.svc.cluster.local:4317"


def plan(tracing, legacy=""):
    settings, errors = _tracing.tracing_plan(tracing, legacy)
    assert errors == [], errors
    return settings


@pytest.mark.parametrize("endpoint, expected", [
    ("grpc://otel.monitoring.svc:4317", ("grpc", "otel.monitoring.svc:4317", "grpc://otel.monitoring.svc:4317")),
    ("grpc://10.0.0.5", ("grpc", "10.0.0.5:4317", "grpc://10.0.0.5:4317")),
    ("http://tempo.monitoring.svc:4318", ("http/protobuf", "tempo.monitoring.svc:4318", "http://tempo.monitoring.svc:4318/v1/traces")),
    ("https://otlp.example.org", ("http/protobuf", "otlp.example.org:4318", "https://otlp.example.org:4318/v1/traces")),
    ("http://c:4318/otlp/v1/traces", ("http/protobuf", "c:4318", "http://c:4318/otlp/v1/traces")),
    ("grpc://[fd00::1]:4317", ("grpc", "[fd00::1]:4317", "grpc://[fd00::1]:4317")),
])
def test_endpoints_parse_into_what_each_sender_takes(endpoint, expected):
    assert _tracing.parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("tracing, legacy, needles", [
    ({"enabled": True, "endpoint": "otel:4317"}, "", ["llmserve_tracing.endpoint is 'otel:4317': not an OTLP address",
                                                      "grpc://host:4317"]),
    ({"enabled": True, "endpoint": "tcp://otel:4317"}, "", ["not an OTLP address"]),
    ({"enabled": True, "endpoint": "http://otel:4317"}, "", ["4317 is the OTLP/gRPC port", "grpc://otel:4317"]),
    ({"enabled": True, "endpoint": "grpc://otel:4317/v1/traces"}, "", ["an OTLP/gRPC address has no path"]),
    ({"enabled": True, "endpoint": "grpc://otel:99999"}, "", ["port 99999 is out of range"]),
    ({"enabled": True, "endpoint": "grpc://otel with space:4317"}, "", ["not an OTLP address"]),
    ({"enabled": True, "endpoint": "grpc://otel:4317", "sample_rate": 1.5}, "",
     ["llmserve_tracing.sample_rate is 1.5: not a number from 0 to 1", "sample_rate: 0.1"]),
    ({"enabled": True, "endpoint": "grpc://otel:4317", "sample_rate": -0.1}, "", ["sample_rate is -0.1"]),
    ({"enabled": True, "endpoint": "grpc://otel:4317", "sample_rate": "half"}, "", ["sample_rate is 'half'"]),
    ({"enabled": True, "endpoint": "grpc://otel:4317", "sample_rate": True}, "", ["sample_rate is True"]),
    ({"enabled": True}, "", ["nowhere to send spans", "backend: jaeger"]),
    ({"enabled": True, "backend": "tempo"}, "", ["llmserve_tracing.backend is 'tempo'", "none", "jaeger"]),
    ({"enabled": True, "backend": "jaeger", "endpoint": "grpc://otel:4317"}, "", ["backend jaeger and endpoint", "drop endpoint"]),
    ({"enabled": "maybe"}, "", ["llmserve_tracing.enabled is 'maybe'"]),
    ({"enabled": True, "endpoint": "grpc://o:4317", "record_identity": "sometimes"}, "", ["record_identity is 'sometimes'"]),
    ({"enabled": True, "endpoint": "grpc://o:4317", "sample": 0.5}, "", ["unknown keys sample"]),
    (["grpc://o:4317"], "", ["llmserve_tracing is ['grpc://o:4317']: not a mapping"]),
    ({}, "tempo:4317", ["llmserve_otlp_traces_endpoint (llmserve_tracing.endpoint) is 'tempo:4317'"]),
])
def test_bad_input_names_the_variable_and_the_fix(tracing, legacy, needles):
    settings, errors = _tracing.tracing_plan(tracing, legacy)
    assert settings == _tracing.OFF and errors
    text = " ".join(errors)
    for needle in needles:
        assert needle in text, text


def test_off_by_default_and_when_disabled():
    assert plan({}) == _tracing.OFF and plan(None) == _tracing.OFF
    assert plan({"enabled": False, "endpoint": "grpc://o:4317"}) == _tracing.OFF
    # Off, an otherwise bad endpoint or rate is still an error: the input is checked whatever enabled says.
    assert _tracing.tracing_plan({"enabled": False, "sample_rate": 2})[1]


def test_the_older_setting_alone_turns_tracing_on_and_keeps_meaning_grpc():
    settings = plan({}, "http://tempo.monitoring.svc:4317")
    assert settings["enabled"] and settings["protocol"] == "grpc" and settings["url"] == "grpc://tempo.monitoring.svc:4317"
    assert plan({"sample_rate": 0.2}, "grpc://t:4317")["sample_rate"] == 0.2
    assert plan({"enabled": False}, "grpc://t:4317") == _tracing.OFF
    # An OTLP/HTTP URL with its path stays OTLP/HTTP.
    assert plan({}, "http://t:4318/v1/traces")["protocol"] == "http/protobuf"


def test_jaeger_backend_is_the_endpoint_in_the_monitoring_namespace():
    settings, errors = _tracing.tracing_plan({"enabled": True, "backend": "jaeger"}, "", "observability")
    assert errors == []
    assert settings["host_port"] == "llmserve-jaeger.observability.svc.cluster.local:4317"
    assert settings["jaeger_namespace"] == "observability" and settings["backend"] == "jaeger"


def test_traefik_flags_with_grpc_and_http():
    grpc = plan({"enabled": True, "backend": "jaeger", "sample_rate": 0.25})
    args = _traefik.traefik_arguments({"tracing": grpc})
    assert args[-5:] == ["--tracing=true", "--tracing.serviceName=traefik", "--tracing.sampleRate=0.25",
                         "--tracing.otlp.grpc.endpoint=" + JAEGER, "--tracing.otlp.grpc.insecure=true"]
    http = plan({"enabled": True, "endpoint": "http://tempo:4318"})
    assert _traefik.traefik_arguments({"tracing": http})[-1] == "--tracing.otlp.http.endpoint=http://tempo:4318/v1/traces"
    assert "--tracing.sampleRate=1.0" in _traefik.traefik_arguments({"tracing": http})


def test_no_traefik_flag_when_off():
    assert not [a for a in _traefik.traefik_arguments({"tracing": _tracing.OFF}) if a.startswith("--tracing")]
    assert _traefik.traefik_arguments({"tracing": _tracing.OFF}) == _traefik.traefik_arguments({})


def test_front_door_config_entry_only_when_on():
    models = [{"name": "m", "k8s_name": "vllm-m", "backend_service": "vllm-m", "router_enabled": False}]
    settings = {"port": 8080, "auth_port": 8081, "metrics_port": 9090, "auth_mode": "api-key", "identities_file": "/x",
                "model_port": 8000, "default_model": "", "max_request_body_bytes": 1, "small_body_bytes": 1,
                "large_body_slots": 1, "max_in_flight": 1, "body_timeout_s": 1, "read_timeout_s": 1, "max_answer_s": 1}
    assert "tracing" not in _gateway.frontdoor_config(models, settings)
    assert "tracing" not in _gateway.frontdoor_config(models, dict(settings, tracing=_tracing.OFF))
    on = plan({"enabled": True, "endpoint": "http://tempo:4318", "sample_rate": 0.5, "record_identity": True})
    assert _gateway.frontdoor_config(models, dict(settings, tracing=on))["tracing"] == {
        "protocol": "http/protobuf", "endpoint": "http://tempo:4318/v1/traces", "sample_rate": 0.5,
        "record_identity": True, "service_name": "llmserve-gateway"}
    assert _tracing.frontdoor_tracing(plan({"enabled": True, "endpoint": "grpc://o:4317"}))["endpoint"] == "o:4317"


def test_vllm_gets_the_endpoint_a_service_name_and_the_parent_based_sampler():
    grpc = plan({"enabled": True, "endpoint": "grpc://o:4317", "sample_rate": 0.1})
    assert tracing_filters.FilterModule().filters()["vllm_tracing_args"](grpc) == ["--otlp-traces-endpoint", "grpc://o:4317"]
    assert _tracing.vllm_tracing_env(grpc, "llama") == [
        {"name": "OTEL_SERVICE_NAME", "value": "llama"}, {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.1"}]
    http = plan({"enabled": True, "endpoint": "http://o:4318"})
    assert _tracing.vllm_tracing_args(http) == ["--otlp-traces-endpoint", "http://o:4318/v1/traces"]
    assert {"name": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "value": "http/protobuf"} in _tracing.vllm_tracing_env(http, "m")
    assert _tracing.vllm_tracing_args(_tracing.OFF) == [] and _tracing.vllm_tracing_env(_tracing.OFF, "m") == []


def test_the_filter_returns_settings_and_errors():
    out = tracing_filters.tracing_plan({"enabled": True, "sample_rate": 3, "endpoint": "grpc://o:4317"})
    assert out["settings"] == _tracing.OFF and "sample_rate is 3" in out["errors"][0]
