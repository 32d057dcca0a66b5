"""Tracing in the rendered bundle: off by default (no flag, no config key, no environment, no Jaeger, no policy);
on with an existing collector (Traefik's flags, the front door's config, vLLM's argument, environment and egress,
nothing deployed); on with backend jaeger (Jaeger v2 in the monitoring component, its NetworkPolicy, a Grafana data
source, every sender pointed at it). The bundles pass the schema checks of test_smoke.py like every other."""

from __future__ import annotations

import json

import yaml

from k8s_schema import validate

COLLECTOR = "grpc://otel-collector.observability.svc:4317"
PREFETCH = {
    "tracing-collector": {"extra_vars": {"llmserve_tracing": {"enabled": True, "endpoint": COLLECTOR, "sample_rate": 0.2,
                                                              "record_identity": True}}},
    "tracing-jaeger": {"extra_vars": {"llmserve_tracing": {"enabled": True, "backend": "jaeger"}}},
}


def objects(renders, label):
    return renders.bundle(label=label, **PREFETCH[label])[1]


def validate_bundle(objs):
    crds = [o for o in objs.values() if o["kind"] == "CustomResourceDefinition"]
    assert {path: errs for path, obj in objs.items() if (errs := validate(obj, crds))} == {}


def one(bundle, kind, name):
    (found,) = [o for o in bundle.values() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def traefik_args(bundle):
    return yaml.safe_load(one(bundle, "HelmChartConfig", "traefik")["spec"]["valuesContent"])["additionalArguments"]


def door_config(bundle):
    return json.loads(one(bundle, "ConfigMap", "llmserve-frontdoor")["data"]["config.json"])


def models(bundle):
    return [o for o in bundle.values() if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("vllm-")
            and not o["metadata"]["name"].endswith("-router")]


def test_off_by_default(workstation):
    objs = workstation[1]
    assert not [a for a in traefik_args(objs) if a.startswith("--tracing")]
    assert "tracing" not in door_config(objs)
    for deployment in models(objs):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--otlp-traces-endpoint" not in container["args"]
        assert not [e for e in container["env"] if e["name"].startswith("OTEL_")]
    assert not [o for o in objs.values() if "jaeger" in o["metadata"]["name"] or o["metadata"]["name"] == "allow-tracing-out"]
    assert "additionalDataSources" not in one(objs, "HelmChart", "kube-prometheus-stack")["spec"]["valuesContent"]


def test_an_existing_collector_gets_every_sender_and_nothing_is_deployed(renders):
    objs = objects(renders, "tracing-collector")
    validate_bundle(objs)
    assert traefik_args(objs)[-5:] == ["--tracing=true", "--tracing.serviceName=traefik", "--tracing.sampleRate=0.2",
                                       "--tracing.otlp.grpc.endpoint=otel-collector.observability.svc:4317",
                                       "--tracing.otlp.grpc.insecure=true"]
    assert door_config(objs)["tracing"] == {"protocol": "grpc", "endpoint": "otel-collector.observability.svc:4317",
                                            "sample_rate": 0.2, "record_identity": True, "service_name": "llmserve-gateway"}
    deployments = models(objs)
    assert deployments
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args, env = container["args"], {e["name"]: e.get("value") for e in container["env"]}
        assert args[args.index("--otlp-traces-endpoint") + 1] == COLLECTOR
        assert env["OTEL_SERVICE_NAME"] == args[args.index("--served-model-name") + 1]
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio" and env["OTEL_TRACES_SAMPLER_ARG"] == "0.2"
    policy = one(objs, "NetworkPolicy", "allow-tracing-out")
    assert policy["spec"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 4317}]}]
    assert not [o for o in objs.values() if "jaeger" in o["metadata"]["name"]]


def test_jaeger_backend_is_rendered_and_every_sender_points_at_it(renders):
    objs = objects(renders, "tracing-jaeger")
    validate_bundle(objs)
    address = "llmserve-jaeger.monitoring.svc.cluster.local:4317"
    assert "--tracing.otlp.grpc.endpoint=" + address in traefik_args(objs)
    assert door_config(objs)["tracing"]["endpoint"] == address
    deployment = one(objs, "Deployment", "llmserve-jaeger")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/jaegertracing/jaeger:2.5.0"
    assert {p["containerPort"] for p in container["ports"]} >= {4317, 4318, 16686}
    config = yaml.safe_load(one(objs, "ConfigMap", "llmserve-jaeger")["data"]["config.yaml"])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert "memory" in config["extensions"]["jaeger_storage"]["backends"]["memstore"]
    service = one(objs, "Service", "llmserve-jaeger")
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 16686}
    policy = one(objs, "NetworkPolicy", "llmserve-jaeger")
    otlp, ui = policy["spec"]["ingress"]
    assert {p["port"] for p in otlp["ports"]} == {4317, 4318} and [p["port"] for p in ui["ports"]] == [16686]
    assert otlp["from"][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-serving"}}}
    assert otlp["from"][1]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik"}
    assert ui["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "grafana"}}}]
    values = yaml.safe_load(one(objs, "HelmChart", "kube-prometheus-stack")["spec"]["valuesContent"])
    (source,) = values["grafana"]["additionalDataSources"]
    assert source["type"] == "jaeger" and source["url"] == "http://llmserve-jaeger.monitoring.svc:16686"
    egress = one(objs, "NetworkPolicy", "allow-tracing-out")["spec"]["egress"][0]
    assert egress["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "jaeger"}
