# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The static settings of the Traefik that k3s deploys: its command-line flags and the HelmChartConfig values.

k3s installs Traefik from its own HelmChart (kube-system/traefik); the ingress role merges values into it with a
HelmChartConfig. Static settings go in as `additionalArguments` (flag names are the same in every Traefik v3 chart);
the Service and the workload kind go in as chart values. Every flag here was started with the real binary of the
version it is given for (tests/integration/test_traefik_entrypoints.py): Traefik exits at start on a flag it does
not know, which on k3s is a crash loop of the only ingress.

settings (role variables the ingress role passes; every key optional, DEFAULTS below):
  version                     ingress_traefik_version: the Traefik the pinned k3s bundles (flags are gated on it)
  chart_version               ingress_traefik_chart_version: the Traefik chart k3s packages (spec.chart of the HelmChart
                              kube-system/traefik, e.g. traefik-40.1.4+up40.1.0.tgz); value names follow it
  http_redirect               ingress_http_redirect: web (80) answers a permanent redirect to https
  trusted_ips                 ingress_trusted_ips: proxies in front of Traefik whose X-Forwarded-For it trusts
  alias_headers_strategy      ingress_alias_headers_strategy: delete | reject | keep
  external_traffic_policy     ingress_traefik_external_traffic_policy: Local (the client address reaches Traefik)
                              or Cluster (k3s' default: Traefik sees a cluster-internal address)
  kind                        ingress_traefik_kind: DaemonSet (a Traefik on every node) or Deployment
  proxy_protocol_trusted_ips  ingress_traefik_proxy_protocol_trusted_ips: load balancers in front of the nodes that
                              speak the PROXY protocol (HAProxy, a cloud NLB); none by default
  tracing                     the plan's tracing entry (module_utils/_tracing.py, llmserve_tracing): OTLP tracing
                              when it is enabled
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ENTRY_POINTS = ("web", "websecure")

DEFAULTS = {
    "version": "3.7.8",
    # k3s 1.35.7 and 1.36.3 package traefik-40.1.4+up40.1.0 (upstream chart 40.1.0) with their own image tag.
    "chart_version": "40.1.4+up40.1.0",
    "http_redirect": True,
    "trusted_ips": [],
    "alias_headers_strategy": "delete",
    "external_traffic_policy": "Local",
    "kind": "DaemonSet",
    "proxy_protocol_trusted_ips": [],
    "tracing": None,
}
# Traefik's spans carry this service name; the front door's and vLLM's carry their own.
TRACING_SERVICE = "traefik"
VARIABLES = {
    "version": "ingress_traefik_version",
    "chart_version": "ingress_traefik_chart_version",
    "http_redirect": "ingress_http_redirect",
    "trusted_ips": "ingress_trusted_ips",
    "alias_headers_strategy": "ingress_alias_headers_strategy",
    "external_traffic_policy": "ingress_traefik_external_traffic_policy",
    "kind": "ingress_traefik_kind",
    "proxy_protocol_trusted_ips": "ingress_traefik_proxy_protocol_trusted_ips",
    "tracing": "llmserve_tracing",
}
HEADER_STRATEGIES = ("delete", "reject", "keep")
TRAFFIC_POLICIES = ("Local", "Cluster")
KINDS = ("DaemonSet", "Deployment")

# Encoded characters an entry point refuses with 400 before any router (pkg/server/router/deny.go). The OpenAI API
# has no path that needs one of them, and each is a way to make one path look like another to the next hop:
# %2F and %5C join segments (/v1/..%2Finvocations reaches /invocations behind a decoding backend), %25 encodes
# twice, %00 %3B %3F %23 cut a path short in some parsers. Traefik has refused none of them by default since 3.6.3.
ENCODED_CHARACTERS = ("Slash", "BackSlash", "NullCharacter", "Semicolon", "Percent", "QuestionMark", "Hash")


def parse_version(version):
    """(major, minor, patch) of '3.7.8' or 'v3.7.8' (a pre-release suffix is ignored); ValueError naming the variable."""
    text = str(version or "").strip().lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError("%s=%r is not a Traefik version: give the one the pinned k3s bundles, e.g. 3.7.8"
                         % (VARIABLES["version"], version))
    if int(parts[0]) != 3:
        raise ValueError("%s=%r: only Traefik v3 (k3s 1.32 and later) is supported" % (VARIABLES["version"], version))
    return tuple(int(p) for p in parts)


def header_strategy_option(version):
    """The entry point option that drops request headers aliasing another header's name, or None.

    underscoreHeadersStrategy (X_Forwarded_User): 3.6.22+ and 3.7.6+; 3.7.12 deprecates it for aliasHeadersStrategy
    (every alias, X.Forwarded.User too). Earlier releases refuse both at start.
    """
    if version >= (3, 7, 12):
        return "aliasHeadersStrategy"
    if (3, 7, 6) <= version or (3, 6, 22) <= version < (3, 7, 0):
        return "underscoreHeadersStrategy"
    return None


def _settings(settings):
    out = dict(DEFAULTS)
    unknown = sorted(set(settings or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError("unknown Traefik settings %s: known are %s" % (", ".join(unknown), ", ".join(sorted(DEFAULTS))))
    out.update(dict((k, v) for k, v in (settings or {}).items() if v is not None))
    if out["alias_headers_strategy"] not in HEADER_STRATEGIES:
        raise ValueError("%s=%r: give delete, reject or keep" % (VARIABLES["alias_headers_strategy"],
                                                                 out["alias_headers_strategy"]))
    if out["external_traffic_policy"] not in TRAFFIC_POLICIES:
        raise ValueError("%s=%r: give Local (Traefik sees the client's address) or Cluster"
                         % (VARIABLES["external_traffic_policy"], out["external_traffic_policy"]))
    if out["kind"] not in KINDS:
        raise ValueError("%s=%r: give DaemonSet or Deployment" % (VARIABLES["kind"], out["kind"]))
    for key in ("trusted_ips", "proxy_protocol_trusted_ips"):
        value = out[key]
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ValueError("%s=%r: give a list of addresses or CIDRs" % (VARIABLES[key], value))
    out["version"] = parse_version(out["version"])
    out["chart_major"] = chart_major(out["chart_version"])
    return out


def chart_major(chart_version):
    """The upstream chart's major version of k3s' package name: 40 for 40.1.4+up40.1.0 (the +upX.Y.Z part wins)."""
    text = str(chart_version or "").strip()
    upstream = text.split("+up", 1)[1] if "+up" in text else text.lstrip("v")
    head = upstream.split(".", 1)[0]
    if not head.isdigit():
        raise ValueError("%s=%r is not a chart version: give the one in the HelmChart kube-system/traefik, e.g. "
                         "40.1.4+up40.1.0" % (VARIABLES["chart_version"], chart_version))
    return int(head)


def _both(option, value):
    return ["--entryPoints.%s.%s=%s" % (entry_point, option, value) for entry_point in ENTRY_POINTS]


def traefik_arguments(settings=None):
    """The `--...` flags of the HelmChartConfig's additionalArguments, for the Traefik version in settings."""
    s = _settings(settings)
    version = s["version"]
    # Middlewares of other namespaces (the Grafana route uses the rate limit) and router labels on metrics (429 panels).
    args = ["--providers.kubernetescrd.allowCrossNamespace=true", "--metrics.prometheus.addRoutersLabels=true"]
    option = header_strategy_option(version)
    if option:
        args += _both("http.%s" % option, s["alias_headers_strategy"])
    if version >= (3, 6, 3):
        for name in ENCODED_CHARACTERS:
            args += _both("http.encodedCharacters.allowEncoded%s" % name, "false")
    if version >= (3, 4, 0):
        # Already the default; pinned because a router matches, and the backend gets, the cleaned path (/./, /../
        # and // removed after %2E is decoded): without it /v1/../invocations would match the /v1/ prefix.
        args += _both("http.sanitizePath", "true")
    # A writeTimeout is a deadline on writing the whole answer: a stream longer than it is cut mid-answer (measured).
    # Traefik's default is none; this pins it, and wins over a value set through the chart's ports (the chart puts
    # additionalArguments last; the last flag wins). readTimeout (default 60s) is left alone: it bounds reading the
    # request only (Go clears the deadline once the body is read), and a 10-minute stream outlives it unharmed.
    args += _both("transport.respondingTimeouts.writeTimeout", "0s")
    if s["http_redirect"]:
        args += ["--entryPoints.web.http.redirections.entryPoint.to=:443",
                 "--entryPoints.web.http.redirections.entryPoint.scheme=https",
                 "--entryPoints.web.http.redirections.entryPoint.permanent=true"]
    if s["trusted_ips"]:
        args += _both("forwardedHeaders.trustedIPs", ",".join(s["trusted_ips"]))
    if s["proxy_protocol_trusted_ips"]:
        args += _both("proxyProtocol.trustedIPs", ",".join(s["proxy_protocol_trusted_ips"]))
    return args + tracing_arguments(s["tracing"])


def tracing_arguments(tracing):
    """Traefik's OTLP tracing flags for the plan's tracing entry ([] when off). Traefik starts a trace for sampleRate
    of the requests that come without a sampled traceparent (parent-based: a caller's decision is kept) and sends its
    own span's context on (W3C traceparent) to the front door. gRPC: host:port, plaintext; HTTP: the whole URL."""
    if not tracing or not tracing.get("enabled"):
        return []
    args = ["--tracing=true", "--tracing.serviceName=%s" % TRACING_SERVICE,
            "--tracing.sampleRate=%s" % repr(float(tracing["sample_rate"]))]
    if tracing["protocol"] == "grpc":
        return args + ["--tracing.otlp.grpc.endpoint=%s" % tracing["host_port"], "--tracing.otlp.grpc.insecure=true"]
    return args + ["--tracing.otlp.http.endpoint=%s" % tracing["url"]]


def traefik_values(settings=None):
    """The valuesContent of the HelmChartConfig kube-system/traefik (a dict; the template writes it as YAML).

    externalTrafficPolicy Local: kube-proxy delivers a request only to a Traefik on the node it entered, without
    rewriting its source address (ServiceLB advertises only nodes with a ready Traefik). DaemonSet: a Traefik on
    every node, so every node ServiceLB runs on is advertised and keeps the client's address.
    See docs/ingress.md, "Client addresses on k3s".
    """
    s = _settings(settings)
    values = {
        "additionalArguments": traefik_arguments(settings),
        "service": {"spec": {"externalTrafficPolicy": s["external_traffic_policy"]}},
        "deployment": {"kind": s["kind"]},
    }
    # The chart validates values against its schema, which refuses unknown top-level keys: chart 41 renamed
    # logs.access to accessLog (upstream "fix(logs)!: align syntax with upstream"), and each refuses the other's.
    if s["chart_major"] >= 41:
        values["accessLog"] = {"enabled": True}
    else:
        values["logs"] = {"access": {"enabled": True}}
    return values
