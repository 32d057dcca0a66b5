"""Unit tests of the cluster roles' setting checks (plugins/module_utils/_preflight.py).

Each case changes one setting of a good set and expects exactly one problem, naming the variable; several bad
settings give every problem at once; no message shows a key or a password. tests/render/test_ingress_preflight.py
and test_monitoring.py run the same checks through the real render playbook.
"""

from __future__ import annotations

import copy

import pytest

from ansible_collections.llmserve.k3s.plugins.filter import preflight
from ansible_collections.llmserve.k3s.plugins.module_utils import _preflight

PLAN = {"enabled": ["llama-3.1-8b", "mixtral-8x7b"],
        "catalog": [{"name": "llama-3.1-8b", "enabled": True}, {"name": "mixtral-8x7b", "enabled": True},
                    {"name": "llama-3.1-8b-multi", "enabled": False}],
        "tracing": {"jaeger_namespace": "monitoring"}}
KEY = "sk-preflight-unit-key-0123456789"
PASSWORD = "grafana-admin-password-42"
REDIS_PASSWORD = "redis-pass-0123456789abcdef"

INGRESS = {
    "host": "llm.university.local", "default_model": "", "tls_mode": "self-signed", "tls_secret": "llm-ingress-tls",
    "tls_days": 825, "cert_manager_issuer": "", "auth_mode": "api-key", "api_keys": [{"name": "alice", "key": KEY}],
    "basic_auth_users": [], "apply": True, "forward_auth": {"address": ""},
    "address_rate_limit": {"average": 100, "period": "1s", "burst": 200, "ip_depth": 0},
    "rate_limit": {"average": 20, "period": "1s", "burst": 40}, "rate_limit_redis_set": False, "rate_limit_redis": {},
    "quotas": {}, "quota_on_redis_error": "allow", "guard": {"enabled": False}, "redis_enabled": True,
    "redis_password": REDIS_PASSWORD, "usage_user_series": 1000, "redis_maxmemory_mib": 128, "redis_storage_size": "1Gi",
    "redis_timeout_s": 0.5, "redis_image_tag": "7.2.7-alpine", "redis_exporter_image_tag": "v1.67.0",
    "in_flight": {"enabled": True, "amount": 8}, "in_flight_enabled": True, "max_request_body_bytes": 10485760,
    "frontdoor_replicas": 2, "frontdoor_read_timeout_s": 600, "max_answer_s": 900, "frontdoor_prestop_s": 10,
    "frontdoor_small_body_bytes": 65536, "frontdoor_large_body_slots": 4, "frontdoor_max_in_flight": 512,
    "frontdoor_body_timeout_s": 60, "frontdoor_workers": 1, "ip_allow_list": [], "trusted_ips": [],
    "ab_test": {"enabled": False, "path": "/ab", "backends": []}, "ab_test_enabled": False,
}

AB = {"enabled": True, "path": "/ab", "backends": [{"model": "llama-3.1-8b", "weight": 90}, {"model": "mixtral-8x7b", "weight": 10}]}

# id -> (changes, a phrase of the one problem)
INGRESS_CASES = {
    "host-not-dns": ({"host": "LLM_server.local"}, 'llmserve_ingress_host (ingress_host) is "LLM_server.local": not a DNS name'),
    "host-is-ip": ({"host": "192.0.2.10"}, "llmserve_ingress_host (ingress_host)"),
    "default-model-unknown": ({"default_model": "gpt-5"}, 'Fix: use one of ["llama-3.1-8b", "mixtral-8x7b"]'),
    "default-model-disabled": ({"default_model": "llama-3.1-8b-multi"}, "not an enabled catalog model"),
    "tls-mode-unknown": ({"tls_mode": "letsencrypt"}, 'ingress_tls_mode) is "letsencrypt"'),
    "tls-secret-name": ({"tls_secret": "Bad_Name"}, 'ingress_tls_secret "Bad_Name"'),
    "cert-manager-no-issuer": ({"tls_mode": "cert-manager"}, 'ingress_cert_manager_issuer ""'),
    "self-signed-zero-days": ({"tls_days": "0"}, "llmserve_ingress_tls_mode (ingress_tls_mode)"),
    "auth-mode-unknown": ({"auth_mode": "oauth"}, 'llmserve_auth_mode (ingress_auth_mode) is "oauth"'),
    "api-key-too-short": ({"api_keys": ["short"]}, "llmserve_api_keys[0]"),
    "api-key-without-keys": ({"api_keys": []}, "llmserve_api_keys (ingress_api_keys) is empty"),
    "basic-without-users": ({"auth_mode": "basic"}, "llmserve_basic_auth_users (ingress_basic_auth_users) is empty"),
    "basic-user-colon": ({"auth_mode": "basic", "basic_auth_users": [{"name": "a:b", "password": "long-enough-pw"}]},
                         "llmserve_basic_auth_users[0].name: 'a:b' holds ':'"),
    "forward-without-address": ({"auth_mode": "forward"}, 'ingress_forward_auth.address is "" while'),
    "forward-not-a-url": ({"auth_mode": "forward", "forward_auth": {"address": "oauth2-proxy:4180"}}, "ingress_forward_auth.address"),
    "rate-average-zero": ({"rate_limit": {"average": 0, "period": "1s", "burst": 5}}, 'ingress_rate_limit is {"average": 0'),
    "rate-average-bool": ({"rate_limit": {"average": True, "period": "1s", "burst": 5}}, "ingress_rate_limit is"),
    "rate-burst-zero": ({"rate_limit": {"average": 5, "period": "1s", "burst": 0}}, "burst >= 1"),
    "rate-source-gone": ({"rate_limit": {"average": 5, "period": "1s", "burst": 5, "source": "auth-header"}},
                         '(["source"] given). The limit counts per identity now'),
    "rate-not-a-mapping": ({"rate_limit": "20/s"}, 'ingress_rate_limit is "20/s"'),
    "address-rate-period": ({"address_rate_limit": {"average": 5, "period": "often", "burst": 5}},
                            'ingress_address_rate_limit is {"average": 5, "period": "often"'),
    "address-ip-depth-negative": ({"address_rate_limit": {"average": 5, "period": "1s", "burst": 5, "ip_depth": -1}},
                                  "ip_depth >= 0"),
    "removed-rate-limit-redis": ({"rate_limit_redis_set": True, "rate_limit_redis": {"endpoints": ["r:6379"]}},
                                 'ingress_rate_limit_redis is set ({"endpoints": ["r:6379"]}) but no longer exists'),
    "quota-unknown-group": ({"quotas": {"ghosts": {"tokens_per_day": 10}}}, "ghosts"),
    "guard-unknown-model": ({"guard": {"enabled": True, "model": "gpt-5"}}, "gpt-5"),
    "redis-password-space": ({"redis_password": "has a space in it 0123"}, "llmserve_redis_password (or LLMSERVE_REDIS_PASSWORD)"),
    "redis-password-short": ({"redis_password": "short"}, "shorter than 16 characters"),
    "user-series-zero": ({"usage_user_series": 0}, "ingress_usage_user_series 0,"),
    "redis-memory-small": ({"redis_maxmemory_mib": 8}, "ingress_redis_maxmemory_mib 8,"),
    "redis-size": ({"redis_storage_size": "1GB"}, 'ingress_redis_storage_size "1GB"'),
    "redis-timeout": ({"redis_timeout_s": "soon"}, 'ingress_redis_timeout_s "soon"'),
    "redis-latest": ({"redis_image_tag": "latest"}, 'image tags ["latest", "v1.67.0"]'),
    "quotas-without-redis": ({"quotas": {"default": {"tokens_per_day": 10}}, "redis_enabled": False},
                             "llmserve_redis_enabled false with 1 quotas"),
    "in-flight-zero": ({"in_flight": {"enabled": True, "amount": 0}}, 'ingress_in_flight {"enabled": true, "amount": 0}'),
    "replicas-zero": ({"frontdoor_replicas": 0}, "ingress_frontdoor_replicas 0, read timeout 600"),
    "answer-short": ({"max_answer_s": 30}, "ingress_frontdoor_read_timeout_s (600)"),
    "small-body-large": ({"frontdoor_small_body_bytes": 20971520}, "ingress_frontdoor_small_body_bytes 20971520"),
    "slots-zero": ({"frontdoor_large_body_slots": 0}, "ingress_frontdoor_large_body_slots 0"),
    "prestop-negative": ({"frontdoor_prestop_s": -1}, "ingress_frontdoor_prestop_s -1"),
    "workers-zero": ({"frontdoor_workers": 0}, "ingress_frontdoor_workers 0 (1 to 64)"),
    "workers-many": ({"frontdoor_workers": 65}, "ingress_frontdoor_workers 65 (1 to 64)"),
    "answer-not-a-number": ({"max_answer_s": "long"}, 'ingress_max_answer_s "long"'),
    "allow-list-range": ({"ip_allow_list": ["10.0.0.0/8", "10.1.2.300/24"]}, 'hold ["10.1.2.300/24"]'),
    "trusted-ip-host-bits": ({"trusted_ips": ["192.0.2.1/24"]}, 'hold ["192.0.2.1/24"]'),
    "ab-weight-zero": ({"ab_test": dict(AB, backends=[{"model": "llama-3.1-8b", "weight": 0}, {"model": "mixtral-8x7b", "weight": 10}])},
                       "a whole weight > 0"),
    "ab-unknown-model": ({"ab_test": dict(AB, backends=[{"model": "llama-3.1-8b", "weight": 1}, {"model": "gpt-5", "weight": 1}])},
                         "ingress_ab_test is"),
    "ab-disabled-model": ({"ab_test": dict(AB, backends=[{"model": "llama-3.1-8b", "weight": 1},
                                                         {"model": "llama-3.1-8b-multi", "weight": 1}])}, "enabled catalog model"),
    "ab-same-model": ({"ab_test": dict(AB, backends=[{"model": "llama-3.1-8b", "weight": 1}, {"model": "llama-3.1-8b", "weight": 1}])},
                      "two backends"),
    "ab-path-v1": ({"ab_test": dict(AB, path="/v1")}, "not /v1 or /models"),
    "ab-one-backend": ({"ab_test": dict(AB, backends=AB["backends"][:1])}, "two backends"),
}


def _ingress(changes):
    settings = copy.deepcopy(INGRESS)
    settings.update(copy.deepcopy(changes))
    if "ab_test" in changes:
        settings["ab_test_enabled"] = bool(changes["ab_test"].get("enabled"))
    return settings


def test_good_ingress_settings_have_no_problem():
    assert not _preflight.ingress_problems(INGRESS, PLAN)


@pytest.mark.parametrize("case", sorted(INGRESS_CASES))
def test_each_bad_ingress_setting_is_one_problem_naming_it(case):
    changes, phrase = INGRESS_CASES[case]
    problems = _preflight.ingress_problems(_ingress(changes), PLAN)
    assert len(problems) == 1, problems
    assert phrase in problems[0]
    assert "Fix" in problems[0] or "fix" in problems[0]


@pytest.mark.parametrize("changes", [
    {"apply": False, "api_keys": []},  # a render writes no Secret: it needs no key
    {"auth_mode": "basic", "apply": False},
    {"auth_mode": "none", "api_keys": ["short"]},  # the keys of another mode are not read
    {"redis_enabled": False, "redis_password": "short"},  # no Redis: its password is not read
    {"redis_password": ""},  # generated at apply
    {"in_flight": {"enabled": False, "amount": 0}, "in_flight_enabled": False},
    {"ab_test": dict(AB, backends=[])},  # off (enabled false below): not checked
    {"default_model": "mixtral-8x7b", "ip_allow_list": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]},
    {"auth_mode": "forward", "forward_auth": {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth"}},
    {"tls_mode": "cert-manager", "cert_manager_issuer": "letsencrypt"},
])
def test_settings_a_check_does_not_read_pass(changes):
    settings = _ingress(changes)
    if "ab_test" in changes:
        settings["ab_test_enabled"] = False
    assert not _preflight.ingress_problems(settings, PLAN)


def test_every_ingress_problem_at_once_in_order_and_no_secret_shown():
    cases = ("host-not-dns", "tls-mode-unknown", "rate-burst-zero", "redis-password-short", "workers-zero", "allow-list-range",
             "ab-path-v1")
    changes = {}
    for case in cases:
        changes.update(INGRESS_CASES[case][0])
    changes["api_keys"] = [{"name": "alice", "key": KEY}, {"name": "alice", "key": KEY + "-other"}]
    problems = _preflight.ingress_problems(_ingress(changes), PLAN)
    assert len(problems) == len(cases) + 1, problems
    wanted = [INGRESS_CASES[case][1] for case in cases[:2]]
    wanted += ["used twice", "burst >= 1", "shorter than 16", "(1 to 64)", "10.1.2.300/24", "not /v1 or /models"]
    assert [next(i for i, p in enumerate(problems) if w in p) for w in wanted] == list(range(len(problems)))
    assert not [p for p in problems if KEY in p]


def test_a_zero_body_limit_is_refused_and_so_is_every_small_body_under_it():
    problems = _preflight.ingress_problems(_ingress({"max_request_body_bytes": 0}), PLAN)
    assert len(problems) == 2, problems
    assert "ingress_max_request_body_bytes 0:" in problems[0]
    assert "the small-body size at most ingress_max_request_body_bytes" in problems[1]


def test_a_bad_redis_password_is_not_shown():
    secret = "a bad 'password' of mine"
    problems = _preflight.ingress_problems(_ingress({"redis_password": secret}), PLAN)
    assert len(problems) == 1 and "LLMSERVE_REDIS_PASSWORD" in problems[0]
    assert secret not in problems[0] and "mine" not in problems[0]


MONITORING = {
    "namespace": "monitoring", "serving_namespace": "llm-serving", "stack_chart_version": "88.1.3",
    "adapter_chart_version": "5.2.0", "dcgm_image_tag": "4.5.2-4.8.1-ubuntu22.04", "grafana_ingress_host": "",
    "grafana_ingress_path": "/grafana", "grafana_middlewares": [],
    "alerts": {"kv_cache_ratio": 0.9, "5xx_ratio": 0.05, "429_ratio": 0.2, "queue_waiting": 10, "ttft_p95_seconds": 5,
               "preemptions_per_10m": 1, "gpu_temp_celsius": 85, "pod_restarts_per_hour": 3, "quota_refusals_per_hour": 50},
    "durations": {"monitoring_scrape_interval": "15s", "monitoring_prometheus_retention": "15d",
                  "monitoring_alert_queue_for": "5m"},
    "adapter_enabled": True, "adapter_metrics": ["vllm:num_requests_waiting"],
    "adapter_prometheus_url": "http://prometheus.monitoring.svc:9090", "apply": True, "external_prometheus": False,
    "grafana_admin_password": PASSWORD, "tracing_backend": "none", "jaeger_image_tag": "2.5.0", "jaeger_max_traces": 10000,
}

MONITORING_CASES = {
    "namespace-upper": ({"namespace": "Monitoring"}, 'monitoring_namespace is "Monitoring": not a DNS-1123 label'),
    "serving-namespace-long": ({"serving_namespace": "a" * 64}, "monitoring_serving_namespace (llmserve_namespace) is"),
    "chart-range": ({"stack_chart_version": "^88.0"}, 'monitoring_stack_chart_version is "^88.0": not a pinned version'),
    "dcgm-latest": ({"dcgm_image_tag": "latest"}, 'monitoring_dcgm_image_tag is "latest"'),
    "grafana-host": ({"grafana_ingress_host": "Grafana_Host"}, 'monitoring_grafana_ingress_host "Grafana_Host"'),
    "grafana-path": ({"grafana_ingress_path": "grafana"}, 'monitoring_grafana_ingress_path "grafana"'),
    "grafana-middleware-no-name": ({"grafana_middlewares": [{"namespace": "kube-system"}]}, "monitoring_grafana_middlewares"),
    "ratio-above-1": ({"alerts": dict(MONITORING["alerts"], kv_cache_ratio=90)}, "monitoring_alert_kv_cache_ratio 90,"),
    "ttft-zero": ({"alerts": dict(MONITORING["alerts"], ttft_p95_seconds=0)}, "monitoring_alert_ttft_p95_seconds 0,"),
    "restarts-text": ({"alerts": dict(MONITORING["alerts"], pod_restarts_per_hour="3")}, 'monitoring_alert_pod_restarts_per_hour "3"'),
    "duration-words": ({"durations": dict(MONITORING["durations"], monitoring_alert_queue_for="5 min")},
                       'monitoring_alert_queue_for is "5 min": not a Prometheus duration'),
    "adapter-metric": ({"adapter_metrics": ["vllm num requests"]}, 'monitoring_adapter_metrics ["vllm num requests"]'),
    "adapter-url": ({"adapter_prometheus_url": "prometheus:9090"}, 'monitoring_adapter_prometheus_url "prometheus:9090"'),
    "password-short": ({"grafana_admin_password": "short"}, "The Grafana admin password is missing or shorter than 8"),
    "password-missing": ({"grafana_admin_password": ""}, "The Grafana admin password is missing"),
    "backend-unknown": ({"tracing_backend": "zipkin"}, 'monitoring_tracing_backend "zipkin" (none or jaeger)'),
    "jaeger-elsewhere": ({"tracing_backend": "jaeger", "namespace": "observability"},
                         'Jaeger\'s namespace in the plan "monitoring" and monitoring_namespace "observability"'),
    "jaeger-traces-zero": ({"jaeger_max_traces": 0}, "monitoring_jaeger_max_traces 0 (>= 1)"),
}


def test_good_monitoring_settings_have_no_problem():
    assert not _preflight.monitoring_problems(MONITORING, PLAN)
    assert not _preflight.monitoring_problems(dict(MONITORING, tracing_backend="jaeger"), PLAN)


@pytest.mark.parametrize("case", sorted(MONITORING_CASES))
def test_each_bad_monitoring_setting_is_one_problem_naming_it(case):
    changes, phrase = MONITORING_CASES[case]
    problems = _preflight.monitoring_problems(dict(copy.deepcopy(MONITORING), **changes), PLAN)
    assert len(problems) == 1, problems
    assert phrase in problems[0]
    assert PASSWORD not in problems[0] and "short" not in problems[0].replace("shorter", "")


@pytest.mark.parametrize("changes", [
    {"grafana_admin_password": "", "apply": False},  # a render needs no password
    {"grafana_admin_password": "", "external_prometheus": True},  # no stack, no Grafana
    {"adapter_enabled": False, "adapter_prometheus_url": "nowhere"},
    {"grafana_ingress_host": "grafana.university.local", "grafana_ingress_path": "/",
     "grafana_middlewares": [{"name": "campus-only", "namespace": "kube-system"}]},
])
def test_monitoring_settings_a_check_does_not_read_pass(changes):
    assert not _preflight.monitoring_problems(dict(MONITORING, **changes), PLAN)


def test_every_monitoring_problem_at_once():
    changes = {}
    for case in ("namespace-upper", "chart-range", "duration-words", "password-short", "jaeger-traces-zero"):
        changes.update(MONITORING_CASES[case][0])
    problems = _preflight.monitoring_problems(dict(MONITORING, **changes), PLAN)
    assert len(problems) == 5, problems


NAMESPACE = {"name": "llm-serving", "gpu_quota": None, "egress_https_cidrs": ["0.0.0.0/0", "::/0"],
             "egress_https_except": ["10.42.0.0/16", "10.43.0.0/16"], "monitoring_namespace": "monitoring",
             "operators_groups": ["llmserve-operators"], "viewers_groups": ["llmserve-viewers"],
             "prometheus_pod_labels": {"app.kubernetes.io/name": "prometheus"}}

NAMESPACE_CASES = {
    "name-upper": ({"name": "LLM_serving"}, 'llmserve_namespace (llm_namespace_name) is "LLM_serving": not a DNS-1123 label'),
    "name-long": ({"name": "a" * 64}, "llmserve_namespace (llm_namespace_name) is"),
    "quota-negative": ({"gpu_quota": -1}, "llm_namespace_gpu_quota is -1: not a whole number of GPUs"),
    "quota-text": ({"gpu_quota": "four"}, 'llm_namespace_gpu_quota is "four"'),
    "egress-range": ({"egress_https_cidrs": ["0.0.0.0/0", "10.0.0.1/8"]}, 'llm_namespace_egress_https_cidrs ["0.0.0.0/0", "10.0.0.1/8"]'),
    "egress-except-range": ({"egress_https_except": ["campus"]}, "must be CIDRs"),
    "monitoring-namespace": ({"monitoring_namespace": "Mon"}, 'llmserve_monitoring_namespace "Mon" a namespace name'),
    "group-space": ({"viewers_groups": ["lab viewers"]}, "lists of group names without spaces"),
    "group-not-text": ({"operators_groups": [7]}, "lists of group names without spaces"),
    "labels-empty": ({"prometheus_pod_labels": {}}, "llm_namespace_prometheus_pod_labels is {}: the network policies admit only"),
    "labels-list": ({"prometheus_pod_labels": ["prometheus"]}, 'llm_namespace_prometheus_pod_labels is ["prometheus"]'),
}


def test_good_namespace_settings_have_no_problem():
    assert not _preflight.namespace_problems(NAMESPACE)
    assert not _preflight.namespace_problems(dict(NAMESPACE, gpu_quota=0))
    assert not _preflight.namespace_problems(dict(NAMESPACE, gpu_quota=8, operators_groups=[], viewers_groups=[]))


@pytest.mark.parametrize("case", sorted(NAMESPACE_CASES))
def test_each_bad_namespace_setting_is_one_problem_naming_it(case):
    changes, phrase = NAMESPACE_CASES[case]
    problems = _preflight.namespace_problems(dict(NAMESPACE, **changes))
    assert len(problems) == 1, problems
    assert phrase in problems[0] and "Fix" in problems[0]


def test_every_namespace_problem_at_once():
    changes = {"name": "LLM", "gpu_quota": -1, "viewers_groups": ["a b"], "prometheus_pod_labels": {}}
    assert len(_preflight.namespace_problems(dict(NAMESPACE, **changes))) == 4


GPU = {"accelerator": "nvidia", "stack": "device-plugin", "time_slicing_replicas": 1}


@pytest.mark.parametrize("changes", [{}, {"stack": "gpu-operator"}, {"stack": "none"}, {"accelerator": "amd", "stack": "none"},
                                     {"accelerator": "intel-gaudi", "stack": "none"}, {"time_slicing_replicas": 16},
                                     {"time_slicing_replicas": "4"}])
def test_good_gpu_settings_have_no_problem(changes):
    assert not _preflight.gpu_problems(dict(GPU, **changes))


@pytest.mark.parametrize("changes, phrase", [
    ({"accelerator": "tpu"}, 'llmserve_accelerator is "tpu" and llmserve_gpu_stack "device-plugin"'),
    ({"stack": "helm"}, 'llmserve_gpu_stack "helm"'),
    ({"accelerator": "amd"}, "must be none for amd / intel-gaudi"),
    ({"time_slicing_replicas": 0}, "llmserve_gpu_time_slicing_replicas (gpu_device_plugin_time_slicing_replicas) is 0."),
    ({"time_slicing_replicas": 17}, "is 17. Fix: 1 (no sharing) up to 16"),
    ({"time_slicing_replicas": 1.5}, "is 1.5."),
    ({"time_slicing_replicas": "two"}, 'is "two".'),
])
def test_each_bad_gpu_setting_is_one_problem_naming_it(changes, phrase):
    problems = _preflight.gpu_problems(dict(GPU, **changes))
    assert len(problems) == 1, problems
    assert phrase in problems[0]


def test_the_filters_are_the_checks():
    filters = preflight.FilterModule().filters()
    assert filters["ingress_problems"] is _preflight.ingress_problems
    assert filters["monitoring_problems"] is _preflight.monitoring_problems
    assert filters["namespace_problems"] is _preflight.namespace_problems
    assert filters["gpu_problems"] is _preflight.gpu_problems
