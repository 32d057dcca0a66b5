"""The gateway's route and config as the ingress template writes them (plugins/module_utils/_gateway.py)."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _gateway

SETTINGS = {"port": 8080, "auth_port": 8081, "metrics_port": 9090, "auth_mode": "api-key",
            "identities_file": "/etc/llmserve-gateway/identities.json", "model_port": 8000, "default_model": "",
            "max_request_body_bytes": 10485760, "small_body_bytes": 65536, "large_body_slots": 4, "max_in_flight": 512,
            "body_timeout_s": 60, "read_timeout_s": 600, "max_answer_s": 900, "ab_test": {"enabled": False},
            "forward_user_header": "X-Auth-Request-User", "forward_groups_header": "X-Auth-Request-Groups"}
SOLO = {"name": "llama-3.1-8b", "k8s_name": "vllm-llama-3-1-8b", "backend_service": "vllm-llama-3-1-8b",
        "router_enabled": False, "session_affinity": False}
MULTI = {"name": "llama-multi", "k8s_name": "vllm-llama-multi", "backend_service": "vllm-llama-multi-router",
         "router_enabled": True, "session_affinity": True}


@pytest.mark.parametrize("mode, allow, in_flight, expected", [
    ("api-key", False, True, ["llm-errors", "llm-rate-limit-address", "llm-gateway-auth", "llm-rate-limit", "llm-in-flight"]),
    ("basic", True, False, ["llm-errors", "llm-ip-allow-list", "llm-rate-limit-address", "llm-auth-basic", "llm-gateway-auth",
                            "llm-rate-limit"]),
    ("forward", False, True, ["llm-errors", "llm-rate-limit-address", "llm-auth-forward", "llm-gateway-auth", "llm-rate-limit",
                              "llm-in-flight"]),
    ("none", False, False, ["llm-errors", "llm-rate-limit-address", "llm-gateway-auth", "llm-rate-limit"]),
])
def test_the_chain_limits_addresses_before_authentication_and_identities_after(mode, allow, in_flight, expected):
    chain = _gateway.middleware_chain(mode, ["10.0.0.0/8"] if allow else [], in_flight)
    assert chain == expected
    assert chain.index("llm-rate-limit-address") < chain.index("llm-gateway-auth") < chain.index("llm-rate-limit")


def test_a_model_behind_a_router_falls_back_to_its_own_service():
    assert _gateway.frontdoor_backend(SOLO, 8000) == {"url": "http://vllm-llama-3-1-8b:8000", "client_affinity": False}
    assert _gateway.frontdoor_backend(MULTI, 8000) == {"url": "http://vllm-llama-multi-router:8000", "client_affinity": True,
                                                       "fallback_url": "http://vllm-llama-multi:8000"}


def test_the_config_carries_the_settings_and_no_secret():
    config = _gateway.frontdoor_config([SOLO, MULTI], dict(SETTINGS, auth_mode="forward"))
    assert config["auth"] == {"host": "0.0.0.0", "port": 8081} and config["drain_s"] == 900
    assert config["user_header"] == "X-Auth-Request-User" and config["groups_header"] == "X-Auth-Request-Groups"
    assert sorted(config["models"]) == ["llama-3.1-8b", "llama-multi"] and config["ab_tests"] == {}
    assert "user_header" not in _gateway.frontdoor_config([SOLO], SETTINGS)
    ab = {"enabled": True, "path": "/ab", "backends": [{"model": "llama-3.1-8b", "weight": 9}, {"model": "llama-multi", "weight": 1}]}
    assert _gateway.frontdoor_config([SOLO, MULTI], dict(SETTINGS, ab_test=ab))["ab_tests"] == {"/ab": ab["backends"]}
    assert not any("key" in k.lower() and k != "identities_file" for k in config)


@pytest.mark.parametrize("body, slots, small, in_flight, expected", [
    (10485760, 4, 65536, 512, 256),   # 96 + 80 + 64 = 240 -> 256
    (10485760, 1, 65536, 64, 128),    # 96 + 20 + 8 = 124 -> 128
    (104857600, 4, 65536, 512, 960),  # 96 + 800 + 64 = 960
])
def test_the_memory_limit_grows_with_what_may_be_held(body, slots, small, in_flight, expected):
    assert _gateway.frontdoor_memory_mib(body, slots, small, in_flight) == expected


def test_the_route_covers_the_api_roots_only():
    assert _gateway.route_prefixes() == ["/v1/", "/models/"]
    assert _gateway.route_prefixes("/ab") == ["/v1/", "/models/", "/ab/"]


QUOTAS = {"students": {"tokens_per_day": 200000, "tokens_per_hour": 50000, "requests_per_minute": 30, "in_flight": 4},
          "staff": {"per": "group", "tokens_per_day": 5000000}, "default": {"tokens_per_day": 100000}}
REDIS = {"namespace": "llm-serving", "port": 6379, "db": 0, "timeout_s": 0.5}


def test_usage_is_on_by_default_with_a_bounded_user_label():
    assert _gateway.frontdoor_config([SOLO], SETTINGS)["usage"] == {"enabled": True, "user_series": 1000, "log": True}
    off = dict(SETTINGS, usage_enabled=False, usage_user_series=50, usage_log=False)
    assert _gateway.frontdoor_config([SOLO], off)["usage"] == {"enabled": False, "user_series": 50, "log": False}


def test_no_quotas_no_quota_key():
    assert "quotas" not in _gateway.frontdoor_config([SOLO], SETTINGS)
    assert "quotas" not in _gateway.frontdoor_config([SOLO], dict(SETTINGS, quotas={}, redis=REDIS))


def test_quotas_become_sorted_rules_with_the_default_last_and_the_in_cluster_redis():
    config = _gateway.frontdoor_config([SOLO], dict(SETTINGS, quotas=QUOTAS, quota_on_redis_error="deny", redis=REDIS))
    assert config["quotas"] == {
        "rules": [{"group": "staff", "per": "group", "tokens_per_day": 5000000},
                  {"group": "students", "per": "user", "tokens_per_day": 200000, "tokens_per_hour": 50000,
                   "requests_per_minute": 30, "in_flight": 4},
                  {"default": True, "per": "user", "tokens_per_day": 100000}],
        "on_redis_error": "deny",
        "redis": {"host": "llmserve-redis.llm-serving.svc.cluster.local", "port": 6379, "db": 0, "timeout_s": 0.5}}
    # No password anywhere in the config: it comes from the environment.
    assert "password" not in repr(config)


@pytest.mark.parametrize("mode, allow, in_flight, ab_path, middlewares, match", [
    ("api-key", False, True, None,
     ["llm-errors", "llm-rate-limit-address", "llm-gateway-auth", "llm-rate-limit", "llm-in-flight"],
     "Host(`llm.example.org`) && (PathPrefix(`/v1/`) || PathPrefix(`/models/`))"),
    ("basic", True, False, "/ab/",
     ["llm-errors", "llm-ip-allow-list", "llm-rate-limit-address", "llm-auth-basic", "llm-gateway-auth", "llm-rate-limit"],
     "Host(`llm.example.org`) && (PathPrefix(`/v1/`) || PathPrefix(`/models/`) || PathPrefix(`/ab/`))"),
    ("forward", False, False, None,
     ["llm-errors", "llm-rate-limit-address", "llm-auth-forward", "llm-gateway-auth", "llm-rate-limit"],
     "Host(`llm.example.org`) && (PathPrefix(`/v1/`) || PathPrefix(`/models/`))"),
    ("none", False, False, "/ab",
     ["llm-errors", "llm-rate-limit-address", "llm-gateway-auth", "llm-rate-limit"],
     "Host(`llm.example.org`) && (PathPrefix(`/v1/`) || PathPrefix(`/models/`) || PathPrefix(`/ab/`))"),
])
def test_the_api_route_sends_the_api_roots_through_the_chain_to_the_front_door(mode, allow, in_flight, ab_path, middlewares, match):
    chain = _gateway.middleware_chain(mode, ["10.0.0.0/8"] if allow else [], in_flight)
    route = _gateway.api_route("llm.example.org", _gateway.route_prefixes(ab_path), chain, "8080")
    assert route == {"kind": "Rule", "match": match, "middlewares": [{"name": n} for n in middlewares],
                     "services": [{"name": "llmserve-frontdoor", "port": 8080}]}
    # The order Traefik applies them in is the order written (the bundle keeps the keys' order too).
    assert list(route) == ["kind", "match", "middlewares", "services"]


def test_auth_request_headers_carry_the_key_the_address_and_each_identity_header_once():
    assert _gateway.auth_request_headers() == ["Authorization", "X-Real-Ip", "X-Forwarded-For", "X-Forwarded-User",
                                               "X-Forwarded-Groups"]
    assert _gateway.auth_request_headers("X-Auth-Request-User", "X-Auth-Request-Groups")[-2:] == [
        "X-Auth-Request-User", "X-Auth-Request-Groups"]
    # An SSO proxy that puts user and groups in one header, or the address header again: each is passed once.
    assert _gateway.auth_request_headers("X-Remote", "X-Remote") == ["Authorization", "X-Real-Ip", "X-Forwarded-For", "X-Remote"]
    assert _gateway.auth_request_headers("X-Forwarded-For", "X-Groups") == ["Authorization", "X-Real-Ip", "X-Forwarded-For", "X-Groups"]


def test_the_config_checksum_changes_with_the_script_and_with_the_config():
    config = _gateway.frontdoor_config([SOLO], SETTINGS)
    first = _gateway.config_checksum("print('door')\n", config)
    assert len(first) == 64 and int(first, 16) >= 0
    assert _gateway.config_checksum("print('door')\n", _gateway.frontdoor_config([SOLO], SETTINGS)) == first
    assert _gateway.config_checksum("print('door 2')\n", config) != first
    assert _gateway.config_checksum("print('door')\n", _gateway.frontdoor_config([SOLO, MULTI], SETTINGS)) != first
    # sha256 of the script followed by the config as Ansible's to_json writes it (", " and ": " between items).
    assert _gateway.config_checksum("x", {"a": 1, "b": [True, None]}) == hashlib.sha256(b'x{"a": 1, "b": [true, null]}').hexdigest()


@pytest.mark.parametrize("resources, expected", [
    ({"requests": {"cpu": "100m", "memory": "128Mi"}},
     {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}),
    # A limit the user set: the memory limit is replaced, the others kept.
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}},
     {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "256Mi"}}),
    ({}, {"limits": {"memory": "256Mi"}}),
])
def test_the_front_door_s_memory_limit_is_the_one_worked_out(resources, expected):
    given = {k: dict(v) for k, v in resources.items()}
    assert _gateway.frontdoor_resources(resources, 256) == expected
    assert resources == given
