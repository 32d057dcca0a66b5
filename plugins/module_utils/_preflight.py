# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster roles' setting checks (ingress, monitoring, namespace, GPU plugin): every problem at once, each
naming the variable and the fix.

Pure logic, stdlib only. The roles' preflight task files pass their settings in one mapping and fail with the whole
list, so a run that has several bad settings says all of them, and one task does what a task per check did.
The messages never show a key or a password (the identity, quota and Redis checks name the entry instead).
"""

from __future__ import annotations

import json
import numbers
import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _guard, _identity, _lora, _netsec, _quotas, _shared, _tracing, _values

AUTH_MODES = ("api-key", "basic", "forward", "none")
TLS_MODES = ("self-signed", "secret", "cert-manager")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_RATE_PERIOD = re.compile(r"^[0-9]+(ms|s|m|h)$")
_URL = re.compile(r"^https?://[^\s/]+")
# A Redis password goes into redis-server's config as a double-quoted line: printable ASCII without space, quote or
# backslash, and long enough to resist guessing.
_REDIS_PASSWORD = re.compile(r"^[!#-&(-\[\]-~]{16,}$")
_SIZE = re.compile(r"^[0-9]+(Mi|Gi|Ti)$")
_AB_PATH = re.compile(r"^/[a-z0-9][-a-z0-9]*$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$")
_RELEASE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_URL_PATH = re.compile(r"^(/[-a-zA-Z0-9_.]+)*/?$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_NO_SPACE = re.compile(r"^\S+$")
GPU_STACKS = ("device-plugin", "gpu-operator", "none")


def js(value):
    """A value as the messages show it (JSON, as Ansible's to_json writes it)."""
    return json.dumps(value)


def number(value):
    """Any number (Jinja's `number` test)."""
    return isinstance(value, numbers.Number)


def at_least(value, low):
    """A whole number (not a bool: Jinja's `integer` test) of at least low."""
    return _values.is_int(value) and value >= low


def matches(pattern, value):
    return isinstance(value, str) and pattern.match(value) is not None


def as_float(value):
    """Jinja's float filter: the number, or 0.0 when it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def as_int(value):
    """Jinja's int filter: the whole number, or 0 when it is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _rate_limit(var, limit):
    """The problem of one of the two rate limits, or None."""
    address = var == "ingress_address_rate_limit"
    allowed = ["average", "period", "burst"] + (["ip_depth"] if address else [])
    mapping = limit if isinstance(limit, dict) else {}
    extra = [key for key in mapping if key not in allowed]
    good = (isinstance(limit, dict) and at_least(mapping.get("average"), 1) and at_least(mapping.get("burst"), 1)
            and _RATE_PERIOD.match(str(mapping.get("period"))) is not None and at_least(mapping.get("ip_depth", 0), 0)
            and not extra)
    if good:
        return None
    moved = ("The limit counts per identity now (the gateway sets X-Llmserve-User), per address before authentication in "
             "ingress_address_rate_limit: drop source and ip_depth."
             if not address and ("source" in mapping or "ip_depth" in mapping) else "")
    example = {"average": 100, "period": "1s", "burst": 200, "ip_depth": 0} if address else {"average": 20, "period": "1s", "burst": 40}
    shown = (var, js(limit), ", ip_depth >= 0" if address else "", js(extra), moved, js(example))
    return ("%s is %s: average must be a whole number > 0, burst >= 1, period a duration such as 1s or 1m%s; no other "
            "keys (%s given). %s Fix: e.g. %s." % shown)


def _auth_problems(s, keys, users, problems):
    """The problems of the auth mode and of the identities it uses (keys, users: those of the mode, else [])."""
    mode = s["auth_mode"]
    if mode not in AUTH_MODES:
        problems.append("llmserve_auth_mode (ingress_auth_mode) is %s. Fix: use api-key, basic, forward or none." % js(mode))
    problems.extend(_identity.identity_errors(keys, users))
    # Credentials are needed where they are applied: a render-only run writes no Secret and needs none.
    if mode == "api-key" and not s["api_keys"] and s["apply"]:
        problems.append(
            "llmserve_api_keys (ingress_api_keys) is empty while llmserve_auth_mode is api-key and the bundle is applied. "
            "Fix: put llmserve_api_keys in Ansible Vault (a list of keys of 16 or more characters, or of {name, key, groups}) "
            "or export LLMSERVE_API_KEYS=key1,key2.")
    if mode == "basic" and not s["basic_auth_users"] and s["apply"]:
        problems.append(
            "llmserve_basic_auth_users (ingress_basic_auth_users) is empty while llmserve_auth_mode is basic and the bundle "
            "is applied. Fix: put the users in Ansible Vault, e.g. llmserve_basic_auth_users: [{name: alice, password: ..., "
            "groups: [staff]}].")
    if mode == "forward":
        address = (s["forward_auth"] or {}).get("address", "")
        if not matches(_URL, address):
            problems.append(
                "ingress_forward_auth.address is %s while llmserve_auth_mode is forward. Fix: set the URL of the SSO/LDAP "
                "auth proxy, e.g. http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth." % js(address))


def _redis_problems(s, problems):
    if s["redis_enabled"] and s["redis_password"] and not matches(_REDIS_PASSWORD, s["redis_password"]):
        problems.append(
            "llmserve_redis_password (or LLMSERVE_REDIS_PASSWORD) is shorter than 16 characters or holds a space, a quote, "
            "a backslash or a character outside printable ASCII. Fix: generate one with: openssl rand -hex 32 (or leave it "
            "unset: the apply step generates one and keeps it in Secret llmserve-redis).")
    good = (at_least(s["usage_user_series"], 1) and at_least(s["redis_maxmemory_mib"], 16)
            and matches(_SIZE, str(s["redis_storage_size"])) and as_float(s["redis_timeout_s"]) > 0
            and "latest" not in (s["redis_image_tag"], s["redis_exporter_image_tag"])
            and (not s["quotas"] or s["redis_enabled"]))
    if not good:
        problems.append(
            "ingress_usage_user_series %s, ingress_redis_maxmemory_mib %s, ingress_redis_storage_size %s, "
            "ingress_redis_timeout_s %s, image tags %s, llmserve_redis_enabled %s with %d quotas: need a whole number of "
            "user series >= 1, maxmemory >= 16 MiB, a size such as 1Gi, a timeout > 0, pinned tags, and Redis on wherever "
            "llmserve_quotas is set (the counters live there). Fix: e.g. 1000, 128, 1Gi, 0.5, 7.2.7-alpine, and leave "
            "llmserve_redis_enabled unset (it follows llmserve_quotas)."
            % (js(s["usage_user_series"]), js(s["redis_maxmemory_mib"]), js(s["redis_storage_size"]),
               js(s["redis_timeout_s"]), js([s["redis_image_tag"], s["redis_exporter_image_tag"]]),
               js(s["redis_enabled"]), len(s["quotas"])))


def _frontdoor_problems(s, problems):
    in_flight = s["in_flight"] if isinstance(s["in_flight"], dict) else {}
    if not ((not s["in_flight_enabled"] or at_least(in_flight.get("amount"), 1)) and at_least(s["max_request_body_bytes"], 1)):
        problems.append(
            "ingress_in_flight %s / ingress_max_request_body_bytes %s: amount and the body limit must be whole numbers >= 1. "
            "Fix: e.g. amount: 8, ingress_max_request_body_bytes: 10485760." % (js(s["in_flight"]), js(s["max_request_body_bytes"])))
    if not (at_least(s["frontdoor_replicas"], 1) and at_least(s["frontdoor_read_timeout_s"], 1)):
        problems.append(
            "ingress_frontdoor_replicas %s, read timeout %s: need replicas >= 1 and a timeout >= 1 s. Fix: e.g. 2, 600."
            % (js(s["frontdoor_replicas"]), js(s["frontdoor_read_timeout_s"])))
    limits = [s["max_answer_s"], s["frontdoor_small_body_bytes"], s["frontdoor_large_body_slots"],
              s["frontdoor_max_in_flight"], s["frontdoor_body_timeout_s"]]
    good = (all(at_least(value, 1) for value in limits) and at_least(s["frontdoor_prestop_s"], 0)
            and _values.is_int(s["frontdoor_workers"]) and 1 <= s["frontdoor_workers"] <= 64)
    # The comparisons hold only between numbers: another type is a problem already.
    good = good and number(s["max_request_body_bytes"]) and s["frontdoor_small_body_bytes"] <= s["max_request_body_bytes"]
    good = good and number(s["frontdoor_read_timeout_s"]) and s["max_answer_s"] >= s["frontdoor_read_timeout_s"]
    if not good:
        problems.append(
            "ingress_max_answer_s %s, ingress_frontdoor_prestop_s %s, ingress_frontdoor_small_body_bytes %s, "
            "ingress_frontdoor_large_body_slots %s, ingress_frontdoor_max_in_flight %s, ingress_frontdoor_body_timeout_s %s, "
            "ingress_frontdoor_workers %s (1 to 64): each a whole number >= 1 (the pause >= 0), the small-body size at most "
            "ingress_max_request_body_bytes, and the longest answer at least ingress_frontdoor_read_timeout_s (%s). "
            "Fix: e.g. 900, 10, 65536, 4, 512, 60, 1."
            % (js(s["max_answer_s"]), js(s["frontdoor_prestop_s"]), js(s["frontdoor_small_body_bytes"]),
               js(s["frontdoor_large_body_slots"]), js(s["frontdoor_max_in_flight"]), js(s["frontdoor_body_timeout_s"]),
               js(s["frontdoor_workers"]), js(s["frontdoor_read_timeout_s"])))


def _ab_problem(ab, enabled):
    backends = ab.get("backends") or []
    models = [b.get("model") if isinstance(b, dict) else None for b in backends]
    weights = [b.get("weight") if isinstance(b, dict) else None for b in backends]
    path = ab.get("path", "")
    good = (matches(_AB_PATH, path) and path not in ("/v1", "/models") and len(backends) == 2
            and len([m for m in models if m in enabled]) == 2 and len(set(map(str, models))) == 2
            and len([w for w in weights if at_least(w, 1)]) == 2)
    if good:
        return None
    return ("ingress_ab_test is %s: it needs a path such as /ab (not /v1 or /models) and two backends, each {model, weight} "
            "with an enabled catalog model (enabled: %s) and a whole weight > 0. Fix: e.g. backends: "
            "[{model: llama-3.1-8b, weight: 90}, {model: mixtral-8x7b, weight: 10}]." % (js(ab), js(enabled)))


def ingress_problems(settings, plan):
    """Every problem of the ingress settings (the role's ingress_* variables, named without the prefix) against the
    plan (its enabled models and catalog); [] when all is well."""
    s = settings
    enabled = list(plan["enabled"])
    problems = []
    if not _netsec.is_dns_name(s["host"]):
        problems.append("llmserve_ingress_host (ingress_host) is %s: not a DNS name. Fix: use lower-case labels of letters, "
                        "digits and '-', separated by dots, e.g. llm.university.local." % js(s["host"]))
    if s["default_model"] and s["default_model"] not in enabled:
        problems.append("llmserve_ingress_default_model (ingress_default_model) is %s: not an enabled catalog model. "
                        "Fix: use one of %s, or leave it empty for the first one." % (js(s["default_model"]), js(enabled)))
    mode = s["tls_mode"]
    if not (mode in TLS_MODES and matches(_SECRET_NAME, s["tls_secret"])
            and (mode != "cert-manager" or s["cert_manager_issuer"]) and (mode != "self-signed" or as_int(s["tls_days"]) >= 1)):
        problems.append(
            "llmserve_ingress_tls_mode (ingress_tls_mode) is %s with ingress_tls_secret %s and ingress_cert_manager_issuer %s. "
            "Fix: use self-signed, secret (a kubernetes.io/tls Secret named by ingress_tls_secret) or cert-manager "
            "(set ingress_cert_manager_issuer to an existing issuer)." % (js(mode), js(s["tls_secret"]), js(s["cert_manager_issuer"])))
    # The identities of the auth mode in use: their problems, and the groups the quotas may name.
    keys = s["api_keys"] if s["auth_mode"] == "api-key" else []
    users = s["basic_auth_users"] if s["auth_mode"] == "basic" else []
    _auth_problems(s, keys, users, problems)
    for var in ("ingress_address_rate_limit", "ingress_rate_limit"):
        problem = _rate_limit(var, s[var[len("ingress_"):]])
        if problem:
            problems.append(problem)
    # Removed: Traefik's Redis is the collection's own now, rendered with the quotas (or llmserve_redis_enabled).
    if s["rate_limit_redis_set"]:
        problems.append(
            "ingress_rate_limit_redis is set (%s) but no longer exists. Fix: remove it and set llmserve_redis_enabled: true "
            "(the collection renders Redis, Service llmserve-redis, and the per-identity rate limit counts in it across "
            "Traefik replicas; it is on already when llmserve_quotas is set)." % js(s["rate_limit_redis"]))
    groups = _quotas.known_groups(s["auth_mode"], keys, users)
    problems.extend(_quotas.quota_errors(s["quotas"], groups, s["quota_on_redis_error"], s["auth_mode"]))
    problems.extend(_guard.policy_errors(s["guard"], plan["catalog"]))
    _redis_problems(s, problems)
    _frontdoor_problems(s, problems)
    bad = _netsec.bad_ip_ranges(list(s["ip_allow_list"]) + list(s["trusted_ips"]))
    if bad:
        problems.append("ingress_ip_allow_list / ingress_trusted_ips hold %s, which do not parse as IP networks. Fix: write "
                        "addresses or CIDRs with no host bits set, e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32." % js(bad))
    ab = s["ab_test"] if isinstance(s["ab_test"], dict) else {}
    if s["ab_test_enabled"]:
        problem = _ab_problem(ab, enabled)
        if problem:
            problems.append(problem)
    return problems


def monitoring_problems(settings, plan):
    """Every problem of the monitoring settings (the role's monitoring_* variables, named without the prefix) against
    the plan (where it put Jaeger); [] when all is well. The Grafana password is checked, never shown."""
    s = settings
    problems = []
    for var, value in (("monitoring_namespace", s["namespace"]),
                       ("monitoring_serving_namespace (llmserve_namespace)", s["serving_namespace"])):
        if not _lora.is_dns_label(value):
            problems.append("%s is %s: not a DNS-1123 label. Fix: lower-case letters, digits and '-', at most 63 characters "
                            "(e.g. monitoring, llm-serving)." % (var, js(value)))
    for var in ("stack_chart_version", "adapter_chart_version", "dcgm_image_tag"):
        if not _VERSION.match(str(s[var])):
            problems.append("monitoring_%s is %s: not a pinned version. Fix: give an exact release such as 88.1.3 (charts) "
                            "or 4.5.2-4.8.1-ubuntu22.04 (DCGM exporter), never a range or latest." % (var, js(s[var])))
    host, path, middlewares = s["grafana_ingress_host"], s["grafana_ingress_path"], s["grafana_middlewares"]
    if not ((not host or matches(_catalog.DNS1123_SUBDOMAIN, host)) and matches(_URL_PATH, path) and isinstance(middlewares, list)
            and all(isinstance(m, dict) and "name" in m for m in middlewares)):
        problems.append(
            "The Grafana route is invalid: monitoring_grafana_ingress_host %s (a DNS name or empty), "
            "monitoring_grafana_ingress_path %s (a path such as /grafana, or / for the host's root), "
            "monitoring_grafana_middlewares %s (a list of {name: ..., namespace: ...}). Fix the one that does not match."
            % (js(host), js(path), js(middlewares)))
    alerts = s["alerts"]
    ratios = ("kv_cache_ratio", "5xx_ratio", "429_ratio")
    counts = ("queue_waiting", "preemptions_per_10m", "pod_restarts_per_hour", "quota_refusals_per_hour")
    positive = ("ttft_p95_seconds", "gpu_temp_celsius")
    if not (all(number(alerts[k]) and 0 < alerts[k] <= 1 for k in ratios) and all(number(alerts[k]) and alerts[k] >= 0 for k in counts)
            and all(number(alerts[k]) and alerts[k] > 0 for k in positive)):
        shown = {k: js(v) for k, v in alerts.items()}
        problems.append(
            "An alert threshold is out of range: ratios (monitoring_alert_kv_cache_ratio {kv_cache_ratio}, "
            "monitoring_alert_5xx_ratio {5xx_ratio}, monitoring_alert_429_ratio {429_ratio}) must be numbers in (0, 1], "
            "e.g. 0.9 for 90%; monitoring_alert_queue_waiting {queue_waiting}, monitoring_alert_ttft_p95_seconds "
            "{ttft_p95_seconds}, monitoring_alert_preemptions_per_10m {preemptions_per_10m}, monitoring_alert_gpu_temp_celsius "
            "{gpu_temp_celsius}, monitoring_alert_pod_restarts_per_hour {pod_restarts_per_hour} and "
            "monitoring_alert_quota_refusals_per_hour {quota_refusals_per_hour} must be non-negative numbers (TTFT and "
            "temperature above 0). Fix the one that does not match.".format(**shown))
    for var, value in s["durations"].items():
        if not matches(_DURATION, value):
            problems.append("%s is %s: not a Prometheus duration. Fix: e.g. 30s, 5m, 1h, 15d." % (var, js(value)))
    if s["adapter_enabled"] and not (all(matches(_METRIC, m) for m in s["adapter_metrics"])
                                     and matches(_URL, s["adapter_prometheus_url"])):
        problems.append(
            "monitoring_adapter_metrics %s must be Prometheus metric names (e.g. vllm:num_requests_waiting) and "
            "monitoring_adapter_prometheus_url %s an http(s) URL of the Prometheus. Fix the one that does not match."
            % (js(s["adapter_metrics"]), js(s["adapter_prometheus_url"])))
    # Only when this run applies: a render needs no password.
    if s["apply"] and not s["external_prometheus"] and len(s["grafana_admin_password"] or "") < 8:
        problems.append(
            "The Grafana admin password is missing or shorter than 8 characters. Fix: set llmserve_grafana_admin_password in "
            "Ansible Vault (or export GRAFANA_ADMIN_PASSWORD), or set monitoring_external_prometheus: true to skip the stack.")
    backend, jaeger_namespace = s["tracing_backend"], plan["tracing"].get("jaeger_namespace")
    if not (backend in _tracing.BACKENDS and (backend != "jaeger" or jaeger_namespace == s["namespace"])
            and _RELEASE.match(str(s["jaeger_image_tag"])) and at_least(s["jaeger_max_traces"], 1)):
        problems.append(
            "monitoring_tracing_backend %s (none or jaeger), Jaeger's namespace in the plan %s and monitoring_namespace %s "
            "(the same: the senders are given the plan's address), monitoring_jaeger_image_tag %s (a pinned release such as "
            "2.5.0), monitoring_jaeger_max_traces %s (>= 1). Fix: set llmserve_monitoring_namespace (not monitoring_namespace "
            "alone) to move the monitoring component, and fix the one that does not match."
            % (js(backend), js(jaeger_namespace), js(s["namespace"]), js(s["jaeger_image_tag"]), js(s["jaeger_max_traces"])))
    return problems


def namespace_problems(settings):
    """Every problem of the llm_namespace role's settings (named without the llm_namespace_ prefix); [] when all is well."""
    s = settings
    problems = []
    if not _lora.is_dns_label(s["name"]):
        problems.append("llmserve_namespace (llm_namespace_name) is %s: not a DNS-1123 label. Fix: use lower-case letters, "
                        "digits and '-', at most 63 characters, e.g. llm-serving." % js(s["name"]))
    quota = s["gpu_quota"]
    if not (quota is None or (number(quota) and as_int(quota) >= 0)):
        problems.append("llm_namespace_gpu_quota is %s: not a whole number of GPUs. Fix: set 0 or more, or leave it unset."
                        % js(quota))
    groups = list(s["operators_groups"]) + list(s["viewers_groups"])
    if (_netsec.bad_ip_ranges(list(s["egress_https_cidrs"]) + list(s["egress_https_except"]))
            or not matches(_lora.DNS1123_LABEL, s["monitoring_namespace"]) or not all(matches(_NO_SPACE, g) for g in groups)):
        problems.append(
            "llm_namespace_egress_https_cidrs %s must be CIDRs, llmserve_monitoring_namespace %s a namespace name, and "
            "llm_namespace_operators_groups / llm_namespace_viewers_groups lists of group names without spaces. "
            "Fix: e.g. [0.0.0.0/0], monitoring, [llmserve-operators]." % (js(s["egress_https_cidrs"]), js(s["monitoring_namespace"])))
    # An empty selector would admit every pod of the monitoring namespace (Grafana too) to vLLM's key-free endpoints.
    labels = s["prometheus_pod_labels"]
    if not (isinstance(labels, dict) and labels):
        problems.append(
            "llm_namespace_prometheus_pod_labels is %s: the network policies admit only the pods with these labels in %s to "
            "the metrics ports and to vLLM. Fix: give the labels your Prometheus pods carry, e.g. "
            "{app.kubernetes.io/name: prometheus}." % (js(labels), s["monitoring_namespace"]))
    return problems


def gpu_problems(settings):
    """Every problem of the gpu_device_plugin role's settings (named without the prefix); [] when all is well."""
    s = settings
    problems = []
    accelerator, stack = s["accelerator"], s["stack"]
    if not (accelerator in _shared.GPU_RESOURCES and stack in GPU_STACKS and (accelerator == "nvidia" or stack == "none")):
        problems.append(
            "llmserve_accelerator is %s and llmserve_gpu_stack %s. Fix: llmserve_accelerator is nvidia, amd or intel-gaudi; "
            "llmserve_gpu_stack is device-plugin, gpu-operator or none, and must be none for amd / intel-gaudi (install the "
            "vendor's device plugin yourself)." % (js(accelerator), js(stack)))
    replicas = s["time_slicing_replicas"]
    if not (re.match(r"^[0-9]+$", str(replicas)) and 1 <= as_int(replicas) <= 16):
        problems.append("llmserve_gpu_time_slicing_replicas (gpu_device_plugin_time_slicing_replicas) is %s. Fix: 1 (no "
                        "sharing) up to 16 pods per GPU." % js(replicas))
    return problems
