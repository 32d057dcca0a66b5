# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Distributed tracing, decided once (the plan role): where spans go, how many requests are traced, what is recorded.

llmserve_tracing (the user's; every key optional):
  enabled          false: nothing traces, nothing is sent, no header is added anywhere
  endpoint         an existing collector's OTLP address: grpc://host:4317 (OTLP/gRPC, plaintext) or
                   http(s)://host:4318[/v1/traces] (OTLP/HTTP); "" with backend jaeger: the collection's own Jaeger
  backend          none | jaeger: render Jaeger v2 (in memory) in the monitoring component and send there
  sample_rate      the share of requests Traefik starts a trace for, 0 to 1; every later hop follows its decision
  record_identity  false: the front door's span carries no user name or group (privacy); true: it does

llmserve_otlp_traces_endpoint (the older setting, vLLM alone) still works: set alone, it turns tracing on with that
endpoint (http://host:port without a path is read as gRPC, as vLLM did). The plan's `tracing` entry is what every
role reads: {enabled, endpoint, protocol, host_port, url, sample_rate, record_identity, backend, jaeger_namespace}.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

VARIABLE = "llmserve_tracing"
LEGACY = "llmserve_otlp_traces_endpoint"
KEYS = ("enabled", "endpoint", "backend", "sample_rate", "record_identity")
BACKENDS = ("none", "jaeger")
JAEGER_SERVICE = "llmserve-jaeger"
OTLP_GRPC_PORT, OTLP_HTTP_PORT = 4317, 4318
HTTP_PATH = "/v1/traces"
# scheme://host[:port][/path]: a DNS name, an IPv4 address or a bracketed IPv6 address.
ENDPOINT = re.compile(r"^(?P<scheme>grpc|http|https)://(?P<host>[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                      r"(:(?P<port>[0-9]{1,5}))?(?P<path>/[-A-Za-z0-9._~/]*)?$")
OFF = {"enabled": False, "endpoint": "", "protocol": "", "host_port": "", "url": "", "sample_rate": 1.0,
       "record_identity": False, "backend": "none", "jaeger_namespace": ""}
FIX = ("Fix: e.g. %s: {enabled: true, endpoint: grpc://otel-collector.monitoring.svc:4317, sample_rate: 0.1} "
       "or {enabled: true, backend: jaeger}" % VARIABLE)


def parse_endpoint(endpoint):
    """(protocol, host_port, url) of an OTLP endpoint; ValueError saying what is wrong and how to write it.

    grpc://h:p -> ('grpc', 'h:p', 'grpc://h:p'); http(s)://h:p[/path] -> ('http/protobuf', 'h:p', the URL with
    /v1/traces when no path is given): the URL every OTLP/HTTP sender here needs (Traefik and vLLM post to it as is).
    """
    text = endpoint if isinstance(endpoint, str) else ""
    match = ENDPOINT.match(text.strip()) if text else None
    if not match:
        raise ValueError("%s.endpoint is %r: not an OTLP address. Write grpc://host:4317 (OTLP/gRPC) or "
                         "http://host:4318 (OTLP/HTTP, https:// with TLS)." % (VARIABLE, endpoint))
    scheme, host, port, path = match.group("scheme"), match.group("host"), match.group("port"), match.group("path")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError("%s.endpoint is %r: port %s is out of range (1-65535)." % (VARIABLE, endpoint, port))
    if scheme == "grpc":
        if path not in (None, "", "/"):
            raise ValueError("%s.endpoint is %r: an OTLP/gRPC address has no path. Write grpc://%s:%s."
                             % (VARIABLE, endpoint, host, port or OTLP_GRPC_PORT))
        host_port = "%s:%s" % (host, port or OTLP_GRPC_PORT)
        return "grpc", host_port, "grpc://" + host_port
    if port is not None and int(port) == OTLP_GRPC_PORT:
        raise ValueError("%s.endpoint is %r: 4317 is the OTLP/gRPC port, but %s:// sends OTLP/HTTP. Write "
                         "grpc://%s:4317, or %s://%s:4318 for OTLP/HTTP." % (VARIABLE, endpoint, scheme, host, scheme, host))
    host_port = "%s:%s" % (host, port or OTLP_HTTP_PORT)
    return "http/protobuf", host_port, "%s://%s%s" % (scheme, host_port, path if path not in (None, "", "/") else HTTP_PATH)


def _rate(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value).strip())
        except ValueError:
            return None
    value = float(value)
    return value if 0.0 <= value <= 1.0 else None


def _flag(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    return None


def tracing_plan(tracing, legacy_endpoint="", monitoring_namespace="monitoring"):
    """(settings, errors): the plan's tracing entry (OFF when tracing is off) and a list of messages that name the
    variable, the bad value and the fix (empty when the input is good)."""
    if tracing in (None, ""):
        tracing = {}
    if not isinstance(tracing, dict):
        return dict(OFF), ["%s is %r: not a mapping. %s" % (VARIABLE, tracing, FIX)]
    errors = []
    unknown = sorted(set(tracing) - set(KEYS))
    if unknown:
        errors.append("%s has unknown keys %s: known are %s. %s" % (VARIABLE, ", ".join(unknown), ", ".join(KEYS), FIX))
    legacy = (legacy_endpoint or "").strip() if isinstance(legacy_endpoint, str) else legacy_endpoint
    endpoint = tracing.get("endpoint", "")
    if endpoint in (None, ""):
        endpoint = ""
    if legacy and isinstance(legacy, str):
        # vLLM sent the older setting's address over gRPC whatever its scheme (its exporter's default protocol):
        # http(s)://host:port without a path keeps meaning that.
        legacy = re.sub(r"^https?://([^/]+)/?$", r"grpc://\1", legacy)
    if legacy and not endpoint:
        endpoint = legacy  # the older setting: the endpoint, and tracing on unless enabled says otherwise
    enabled = _flag(tracing.get("enabled", bool(legacy)))
    if enabled is None:
        errors.append("%s.enabled is %r: give true or false." % (VARIABLE, tracing.get("enabled")))
        enabled = False
    rate = _rate(tracing.get("sample_rate", 1.0))
    if rate is None:
        errors.append("%s.sample_rate is %r: not a number from 0 to 1 (the share of requests traced). "
                      "Fix: e.g. sample_rate: 0.1 for one request in ten, 1.0 for every request." % (VARIABLE, tracing.get("sample_rate")))
    record_identity = _flag(tracing.get("record_identity", False))
    if record_identity is None:
        errors.append("%s.record_identity is %r: give true or false (false keeps user names out of traces)."
                      % (VARIABLE, tracing.get("record_identity")))
    backend = tracing.get("backend", "none") or "none"
    if backend not in BACKENDS:
        errors.append("%s.backend is %r: give none (send to endpoint) or jaeger (the collection renders Jaeger v2 in "
                      "the monitoring namespace)." % (VARIABLE, backend))
    if not enabled:
        return dict(OFF), errors
    if backend == "jaeger" and endpoint:
        errors.append("%s: backend jaeger and endpoint %r both given (from %s): the collection's Jaeger is the endpoint. "
                      "Fix: drop endpoint to send to the rendered Jaeger, or set backend: none to send to %r."
                      % (VARIABLE, endpoint, LEGACY if endpoint == legacy else VARIABLE + ".endpoint", endpoint))
    elif backend == "jaeger":
        endpoint = "grpc://%s.%s.svc.cluster.local:%d" % (JAEGER_SERVICE, monitoring_namespace, OTLP_GRPC_PORT)
    elif not endpoint:
        errors.append("%s.enabled is true but there is nowhere to send spans: endpoint is empty and backend is none. %s"
                      % (VARIABLE, FIX))
    protocol = host_port = url = ""
    if endpoint and not errors:
        try:
            protocol, host_port, url = parse_endpoint(endpoint)
        except ValueError as exc:
            message = str(exc)
            if endpoint == legacy:
                message = message.replace(VARIABLE + ".endpoint", LEGACY + " (" + VARIABLE + ".endpoint)")
            errors.append("%s %s" % (message, FIX))
    if errors:
        return dict(OFF), errors
    return {"enabled": True, "endpoint": endpoint, "protocol": protocol, "host_port": host_port, "url": url,
            "sample_rate": rate, "record_identity": bool(record_identity), "backend": backend,
            "jaeger_namespace": monitoring_namespace if backend == "jaeger" else ""}, []


def vllm_tracing_env(tracing, service_name):
    """Environment of a vLLM container with tracing on (OTEL_SERVICE_NAME names its spans' service; the sampler
    follows the caller's decision, and starts a trace for sample_rate of the requests that come without one); []
    with tracing off."""
    if not tracing or not tracing.get("enabled"):
        return []
    env = [{"name": "OTEL_SERVICE_NAME", "value": service_name},
           {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
           {"name": "OTEL_TRACES_SAMPLER_ARG", "value": repr(float(tracing["sample_rate"]))}]
    if tracing["protocol"] != "grpc":
        env.append({"name": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "value": "http/protobuf"})
    return env


def vllm_tracing_args(tracing):
    """vLLM's --otlp-traces-endpoint (the URL its exporter takes as is), or [] with tracing off."""
    if not tracing or not tracing.get("enabled"):
        return []
    return ["--otlp-traces-endpoint", tracing["url"]]


def frontdoor_tracing(tracing, service_name="llmserve-gateway"):
    """The front door config's `tracing` entry, or None with tracing off (the key is then left out)."""
    if not tracing or not tracing.get("enabled"):
        return None
    return {"protocol": tracing["protocol"], "endpoint": tracing["host_port"] if tracing["protocol"] == "grpc" else tracing["url"],
            "sample_rate": float(tracing["sample_rate"]), "record_identity": bool(tracing["record_identity"]),
            "service_name": service_name}
