"""Network policies and RBAC of the serving namespace, evaluated as data (tests/lib/netpol.py).

No CNI runs here: the rendered NetworkPolicies are evaluated with the NetworkPolicy semantics for the connections
that must work (Traefik and Prometheus to vLLM's port, DNS) and those that must not (anything else).
"""

from __future__ import annotations

import pytest

from k8s_schema import load_bundle, validate
from netpol import connection, pod
from playbook import render

VLLM = pod("llm-serving", {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b"})
TRAEFIK = pod("kube-system", {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": "traefik-kube-system"})
COREDNS = pod("kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS = pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
FRONTDOOR = pod("llm-serving", {"app.kubernetes.io/name": "llmserve-frontdoor", "app.kubernetes.io/part-of": "llmserve"})
ROUTER = pod("llm-serving", {"app.kubernetes.io/name": "vllm-router", "llmserve.io/model": "llama-3.1-8b-multi"})
API_SERVER = {"ip": "192.168.1.10"}
HF_CDN = {"ip": "18.164.174.23"}


def _policies(bundle):
    return [o for o in bundle[1].values() if o["kind"] == "NetworkPolicy"]


@pytest.fixture(scope="module")
def predownloaded(tmp_path_factory):
    dest = tmp_path_factory.mktemp("predownload")
    result = render(dest, extra_vars={"llmserve_models_predownload": True, "llmserve_monitoring_namespace": "observability",
                                      "llm_namespace_viewers_groups": []}, tags="namespace")
    assert result.returncode == 0, result.stdout[-3000:]
    return dest, load_bundle(dest), result.stdout


def test_policies_and_roles_validate(workstation):
    objs = [o for o in workstation[1].values() if o["kind"] in ("NetworkPolicy", "Role", "RoleBinding")]
    assert len(objs) >= 9
    assert [validate(o) for o in objs] == [[]] * len(objs)


@pytest.mark.parametrize("src, dst, port, protocol, expected", [
    # The serving path: Traefik -> front door -> (router ->) model pods; nothing skips a hop.
    (TRAEFIK, FRONTDOOR, 8080, "TCP", True),
    (FRONTDOOR, VLLM, 8000, "TCP", True),
    (FRONTDOOR, ROUTER, 8000, "TCP", True),
    (ROUTER, VLLM, 8000, "TCP", True),
    (ROUTER, API_SERVER, 6443, "TCP", True),    # service discovery of the model's pods
    (TRAEFIK, VLLM, 8000, "TCP", False),        # the front door is the one way in
    (TRAEFIK, ROUTER, 8000, "TCP", False),
    (TRAEFIK, FRONTDOOR, 9090, "TCP", False),   # its metrics port is not the API
    (FRONTDOOR, API_SERVER, 6443, "TCP", False),
    (VLLM, API_SERVER, 6443, "TCP", False),
    (FRONTDOOR, HF_CDN, 443, "TCP", False),
    (ROUTER, FRONTDOOR, 8080, "TCP", False),
    (PROMETHEUS, FRONTDOOR, 9090, "TCP", True),
    (PROMETHEUS, ROUTER, 29000, "TCP", True),
    (PROMETHEUS, FRONTDOOR, 8080, "TCP", False),
    (PROMETHEUS, VLLM, 8000, "TCP", True),
    (VLLM, COREDNS, 53, "UDP", True),
    (VLLM, COREDNS, 53, "TCP", True),
    (VLLM, HF_CDN, 443, "TCP", True),           # models download at start (llmserve_models_predownload false)
    (TRAEFIK, VLLM, 8001, "TCP", False),        # only vLLM's port
    (pod("kube-system", {"app.kubernetes.io/name": "metrics-server"}), VLLM, 8000, "TCP", False),
    (pod("default", {"app.kubernetes.io/name": "traefik"}), VLLM, 8000, "TCP", False),  # right labels, wrong namespace
    (pod("default", {"run": "curl"}), VLLM, 8000, "TCP", False),
    (pod("llm-serving", {"run": "debug"}), VLLM, 8000, "TCP", False),  # default deny inside the namespace too
    (VLLM, HF_CDN, 80, "TCP", False),
    (VLLM, pod("default", {"app": "db"}), 5432, "TCP", False),
    (VLLM, pod("kube-system", {"k8s-app": "kube-dns"}), 9153, "TCP", False),
    (VLLM, {"ip": "10.43.0.1"}, 443, "TCP", False),   # the API server's ClusterIP is cut out of the HTTPS rule
    (VLLM, {"ip": "10.42.3.7"}, 443, "TCP", False),   # and so are other pods
    (VLLM, {"ip": "2606:4700::6810:84e5"}, 443, "TCP", True),
    (pod("llm-serving", {"run": "debug"}), HF_CDN, 443, "TCP", False),  # HTTPS egress is for model pods only
])
def test_connections(workstation, src, dst, port, protocol, expected):
    assert connection(_policies(workstation), src, dst, port, protocol) is expected


def test_predownloaded_models_get_no_https_and_scrapers_follow_the_variable(workstation, predownloaded):
    pols = _policies(predownloaded)
    assert connection(pols, VLLM, HF_CDN, 443) is False
    assert connection(pols, VLLM, COREDNS, 53, "UDP") is True
    assert connection(pols, pod("observability", {}), VLLM, 8000) is True
    assert connection(pols, PROMETHEUS, VLLM, 8000) is False
    # The same pod in the default render may download: the difference is the variable, not the evaluator.
    assert connection(_policies(workstation), VLLM, HF_CDN, 443) is True


def test_default_deny_holds_without_the_allow_policies(workstation):
    only_deny = [p for p in _policies(workstation) if p["metadata"]["name"] == "default-deny"]
    assert only_deny and only_deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for src, dst, port in ((TRAEFIK, FRONTDOOR, 8080), (FRONTDOOR, VLLM, 8000), (VLLM, COREDNS, 53), (PROMETHEUS, VLLM, 8000)):
        assert connection(only_deny, src, dst, port, "UDP" if port == 53 else "TCP") is False
    assert connection([], TRAEFIK, FRONTDOOR, 8080) is True  # no policy at all: not isolated


def _rules(role):
    return [(g, r, set(rule["verbs"])) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]]


def test_operators_manage_and_viewers_only_read(workstation, predownloaded):
    roles = {o["metadata"]["name"]: o for o in workstation[1].values() if o["kind"] == "Role"}
    ops, viewers = _rules(roles["llmserve-operators"]), _rules(roles["llmserve-viewers"])
    manage = {"create", "update", "patch", "delete"}
    for group, resource in (("apps", "deployments"), ("", "services"), ("autoscaling", "horizontalpodautoscalers"),
                            ("policy", "poddisruptionbudgets"), ("llmserve.io", "llmconfigs")):
        assert any(g == group and r == resource and manage <= v for g, r, v in ops), resource
        assert any(g == group and r == resource and v == {"get", "list", "watch"} for g, r, v in viewers), resource
    assert any(rule[1] == "pods/log" and "get" in rule[2] for rule in ops)
    assert any(rule[1] == "pods/log" and rule[2] == {"get"} for rule in viewers)
    assert all(rule[2] <= {"get", "list", "watch"} for rule in viewers)
    assert not any(rule[1] in ("secrets", "*") for rule in ops + viewers)
    bindings = {o["metadata"]["name"]: o for o in workstation[1].values() if o["kind"] == "RoleBinding"}
    assert bindings["llmserve-viewers"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "llmserve-viewers"}]
    assert bindings["llmserve-operators"]["roleRef"]["name"] == "llmserve-operators"
    assert not [o for o in predownloaded[1].values() if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "llmserve-viewers"]
