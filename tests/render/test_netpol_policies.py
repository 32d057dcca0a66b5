"""Network policies and RBAC of the serving namespace, evaluated as data (tests/lib/netpol.py).

No CNI and no API server run here: the rendered NetworkPolicies are evaluated with the NetworkPolicy semantics for
the connections that must work and those that must not, between pods carrying the labels and ports of the rendered
Deployments (front door, vllm-router, vLLM) and of the pods other charts run (Traefik, CoreDNS, kube-prometheus-stack:
their labels are not ours to render, so they are written here as those charts set them). The Roles are checked for
every route to a Secret's value: no verb on secrets, no way to start or change what a pod runs, no tunnel past the
policies.
"""

from __future__ import annotations

import pytest

from bundle import model_objects, one
from k8s_schema import validate
from netpol import connection, pod

TRAEFIK = pod("kube-system", {"app.kubernetes.io/name": "traefik", "app.kubernetes.io/instance": "traefik-kube-system"})
COREDNS = pod("kube-system", {"k8s-app": "kube-dns"})
# kube-prometheus-stack: the operator's Prometheus pods, and the other pods of the monitoring namespace.
PROMETHEUS = pod("monitoring", {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "kube-prometheus-stack-prometheus",
                                "prometheus": "kube-prometheus-stack-prometheus"})
GRAFANA = pod("monitoring", {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "kube-prometheus-stack"})
NOT_SCRAPERS = [GRAFANA,
                pod("monitoring", {"app.kubernetes.io/name": "prometheus-adapter"}),
                pod("monitoring", {"app.kubernetes.io/name": "alertmanager"}),
                pod("monitoring", {"app.kubernetes.io/name": "prometheus-node-exporter"}),
                pod("monitoring", {})]
API_SERVER = {"ip": "192.168.1.10"}
HF_CDN = {"ip": "18.164.174.23"}
MODEL, MULTI = "llama-3.1-8b", "llama-3.1-8b-multi"


def _policies(bundle):
    return [o for o in bundle[1].values() if o["kind"] == "NetworkPolicy"]


def _pod_of(deployment):
    return pod(deployment["metadata"]["namespace"], deployment["spec"]["template"]["metadata"]["labels"])


def _ports(deployment):
    (ctr,) = deployment["spec"]["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in ctr["ports"]}


@pytest.fixture(scope="module")
def serving(multinode):
    """Pods and ports of the serving path as the bundle renders them (multinode: it has a model with routers)."""
    objects = multinode[1]
    door = one(objects, "Deployment", "llmserve-frontdoor")
    model = model_objects(objects, MODEL)["Deployment"]
    other = model_objects(objects, MULTI)["Deployment"]
    router = model_objects(objects, MULTI, part="router")["Deployment"]
    pods = {"frontdoor": _pod_of(door), "vllm": _pod_of(model), "vllm-multi": _pod_of(other), "router": _pod_of(router),
            "traefik": TRAEFIK, "prometheus": PROMETHEUS, "grafana": GRAFANA, "coredns": COREDNS,
            "api-server": API_SERVER, "hf-cdn": HF_CDN}
    ports = {"frontdoor": _ports(door), "vllm": _ports(model), "router": _ports(router)}
    assert set(ports["frontdoor"]) >= {"http", "metrics"} and set(ports["router"]) == {"http", "metrics"}
    return {"pods": pods, "ports": ports, "policies": _policies(multinode)}


def _port(serving, spec):
    """'router.metrics' -> the router's metrics containerPort ('vllm.http+1': the port after it); an int stays itself."""
    if isinstance(spec, int):
        return spec
    spec, dummy, offset = spec.partition("+")
    owner, name = spec.split(".")
    return serving["ports"][owner][name] + int(offset or 0)


@pytest.fixture(scope="module")
def predownloaded(renders):
    return renders.bundle(extra_vars={"llmserve_models_predownload": True, "llmserve_monitoring_namespace": "observability",
                                      "llm_namespace_prometheus_pod_labels": {"app": "campus-prometheus"},
                                      "llm_namespace_viewers_groups": []}, tags="namespace", label="predownload")


def test_policies_and_roles_validate(multinode):
    objs = [o for o in multinode[1].values() if o["kind"] in ("NetworkPolicy", "Role", "RoleBinding")]
    assert len(objs) >= 9
    assert [validate(o) for o in objs] == [[]] * len(objs)


@pytest.mark.parametrize("src, dst, port, protocol, expected", [
    # The serving path: Traefik -> front door -> (router ->) model pods; nothing skips a hop.
    ("traefik", "frontdoor", "frontdoor.http", "TCP", True),
    ("traefik", "frontdoor", "frontdoor.auth", "TCP", True),  # the gateway's forwardAuth and error pages
    ("frontdoor", "vllm", "vllm.http", "TCP", True),
    ("frontdoor", "router", "router.http", "TCP", True),
    ("router", "vllm-multi", "vllm.http", "TCP", True),
    ("router", "api-server", 6443, "TCP", True),         # service discovery of the model's pods
    ("traefik", "vllm", "vllm.http", "TCP", False),      # the front door is the one way in
    ("traefik", "router", "router.http", "TCP", False),
    ("traefik", "frontdoor", "frontdoor.metrics", "TCP", False),  # its metrics port is not the API
    ("frontdoor", "api-server", 6443, "TCP", False),
    ("vllm", "api-server", 6443, "TCP", False),
    ("frontdoor", "hf-cdn", 443, "TCP", False),
    ("router", "frontdoor", "frontdoor.http", "TCP", False),
    ("router", "router", "router.http", "TCP", False),
    # Inside the namespace a model reaches no other hop: not a router (whose /add_worker takes any URL), not the
    # front door, not another model.
    ("vllm", "router", "router.http", "TCP", False),
    ("vllm", "router", "router.metrics", "TCP", False),
    ("vllm-multi", "router", "router.http", "TCP", False),
    ("vllm", "frontdoor", "frontdoor.http", "TCP", False),
    ("vllm", "vllm-multi", "vllm.http", "TCP", False),
    # Prometheus scrapes every metrics port (vLLM's /metrics is on its API port), and reaches no API port but vLLM's.
    ("prometheus", "frontdoor", "frontdoor.metrics", "TCP", True),
    ("prometheus", "router", "router.metrics", "TCP", True),
    ("prometheus", "vllm", "vllm.http", "TCP", True),
    ("prometheus", "frontdoor", "frontdoor.http", "TCP", False),
    ("prometheus", "router", "router.http", "TCP", False),
    # Grafana runs in the monitoring namespace and is published at /grafana: it reaches nothing here.
    ("grafana", "vllm", "vllm.http", "TCP", False),
    ("grafana", "router", "router.metrics", "TCP", False),
    ("grafana", "frontdoor", "frontdoor.metrics", "TCP", False),
    ("vllm", "coredns", 53, "UDP", True),
    ("vllm", "coredns", 53, "TCP", True),
    ("vllm", "hf-cdn", 443, "TCP", True),               # models download at start (llmserve_models_predownload false)
    ("traefik", "vllm", "vllm.http+1", "TCP", False),   # only vLLM's port
    ("vllm", "hf-cdn", 80, "TCP", False),
])
def test_connections(serving, src, dst, port, protocol, expected):
    pods = serving["pods"]
    assert connection(serving["policies"], pods[src], pods[dst], _port(serving, port), protocol) is expected


@pytest.mark.parametrize("src, dst, port, expected", [
    (pod("kube-system", {"app.kubernetes.io/name": "metrics-server"}), "vllm", "vllm.http", False),
    (pod("default", {"app.kubernetes.io/name": "traefik"}), "vllm", "vllm.http", False),   # right labels, wrong namespace
    (pod("default", {"app.kubernetes.io/name": "prometheus"}), "vllm", "vllm.http", False),
    (pod("default", {"run": "curl"}), "vllm", "vllm.http", False),
    (pod("llm-serving", {"run": "debug"}), "vllm", "vllm.http", False),  # default deny inside the namespace too
    (pod("llm-serving", {"run": "debug"}), "router", "router.http", False),
    ("vllm", pod("default", {"app": "db"}), 5432, False),
    ("vllm", pod("kube-system", {"k8s-app": "kube-dns"}), 9153, False),
    ("vllm", {"ip": "10.43.0.1"}, 443, False),           # the API server's ClusterIP is cut out of the HTTPS rule
    ("vllm", {"ip": "10.42.3.7"}, 443, False),           # and so are other pods
    ("vllm", {"ip": "2606:4700::6810:84e5"}, 443, True),
    (pod("llm-serving", {"run": "debug"}), "hf-cdn", 443, False),  # HTTPS egress is for model pods only
])
def test_connections_of_other_pods(serving, src, dst, port, expected):
    def pick(peer):
        return serving["pods"][peer] if isinstance(peer, str) else peer
    assert connection(serving["policies"], pick(src), pick(dst), _port(serving, port)) is expected


def test_only_the_prometheus_pods_of_the_monitoring_namespace_scrape(serving):
    """Not the namespace: a pod there without Prometheus' labels reaches no port of the serving namespace."""
    pols, pods, ports = serving["policies"], serving["pods"], serving["ports"]
    owners = {"vllm": "vllm", "vllm-multi": "vllm", "router": "router", "frontdoor": "frontdoor"}
    targets = [(pods[name], port) for name, owner in owners.items() for port in ports[owner].values()]
    for other in NOT_SCRAPERS:
        assert [(t["labels"]["app.kubernetes.io/name"], p) for t, p in targets if connection(pols, other, t, p)] == []
    metrics = [(pods["vllm"], ports["vllm"]["http"]), (pods["router"], ports["router"]["metrics"]), (pods["frontdoor"], ports["frontdoor"]["metrics"])]
    assert all(connection(pols, PROMETHEUS, t, p) for t, p in metrics)


def test_traefik_reaches_every_frontdoor_port_but_metrics(serving):
    """Read from the rendered front door: its API and auth ports are Traefik's, its metrics port is Prometheus'."""
    pols, door = serving["policies"], serving["pods"]["frontdoor"]
    for name, port in serving["ports"]["frontdoor"].items():
        assert connection(pols, TRAEFIK, door, port) is (name != "metrics"), name
        assert connection(pols, PROMETHEUS, door, port) is (name == "metrics"), name


def test_predownloaded_models_get_no_https_and_scrapers_follow_the_variables(serving, predownloaded):
    pols, vllm, http = _policies(predownloaded), serving["pods"]["vllm"], _port(serving, "vllm.http")
    assert connection(pols, vllm, HF_CDN, 443) is False
    assert connection(pols, vllm, COREDNS, 53, "UDP") is True
    assert connection(pols, pod("observability", {"app": "campus-prometheus"}), vllm, http) is True
    assert connection(pols, pod("observability", {"app.kubernetes.io/name": "grafana"}), vllm, http) is False
    assert connection(pols, pod("monitoring", {"app": "campus-prometheus"}), vllm, http) is False
    assert connection(pols, PROMETHEUS, vllm, http) is False
    # The same pod in the default render may download: the difference is the variable, not the evaluator.
    assert connection(serving["policies"], vllm, HF_CDN, 443) is True


def test_default_deny_holds_without_the_allow_policies(serving):
    only_deny = [p for p in serving["policies"] if p["metadata"]["name"] == "default-deny"]
    assert only_deny and only_deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods, door, http = serving["pods"], _port(serving, "frontdoor.http"), _port(serving, "vllm.http")
    for src, dst, port in ((TRAEFIK, pods["frontdoor"], door), (pods["frontdoor"], pods["vllm"], http),
                           (pods["vllm"], COREDNS, 53), (PROMETHEUS, pods["vllm"], http)):
        assert connection(only_deny, src, dst, port, "UDP" if port == 53 else "TCP") is False
    assert connection([], TRAEFIK, pods["frontdoor"], door) is True  # no policy at all: not isolated


# RBAC. A subject reaches a Secret's value by reading it, or by running something in the namespace that mounts it
# (a pod it creates, or a workload whose template it changes), or through a process that runs there (exec, attach,
# an ephemeral container), or by a tunnel past the NetworkPolicies to a port that passes the internal key on
# (port-forward to a router, then /add_worker).
WORKLOADS = {"": ["pods", "replicationcontrollers", "podtemplates"],
             "apps": ["deployments", "replicasets", "statefulsets", "daemonsets"],
             "batch": ["jobs", "cronjobs"]}
WRITE = ["create", "update", "patch"]
INTO_PODS = ["pods/exec", "pods/attach", "pods/ephemeralcontainers", "pods/portforward", "pods/proxy", "services/proxy"]


def _may(role, group, resource, verb):
    """Does the Role grant the verb on the resource (wildcards included)?"""
    return any((group in rule["apiGroups"] or "*" in rule["apiGroups"])
               and (resource in rule["resources"] or "*" in rule["resources"])
               and (verb in rule["verbs"] or "*" in rule["verbs"]) for rule in role["rules"])


def _roles(bundle):
    return {o["metadata"]["name"]: o for o in bundle[1].values() if o["kind"] == "Role"}


@pytest.mark.parametrize("name", ["llmserve-operators", "llmserve-viewers"])
def test_no_role_reaches_a_secret(multinode, name):
    role = _roles(multinode)[name]
    granted = [(g, r, v) for g, resources in WORKLOADS.items() for r in resources for v in WRITE if _may(role, g, r, v)]
    granted += [("", r, v) for r in INTO_PODS for v in ("get", "create", "update", "patch") if _may(role, "", r, v)]
    granted += [("", "secrets", v) for v in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
                if _may(role, "", "secrets", v)]
    granted += [("rbac.authorization.k8s.io", r, v) for r in ("roles", "rolebindings") for v in WRITE + ["bind", "escalate"]
                if _may(role, "rbac.authorization.k8s.io", r, v)]
    granted += [("", "serviceaccounts/token", "create")] if _may(role, "", "serviceaccounts/token", "create") else []
    assert granted == []


def test_the_rbac_check_sees_a_route(multinode):
    """The check above would see a regression: the old operators Role (create/update Deployments) fails it."""
    old = {"rules": [{"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
                      "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}
    assert _may(old, "apps", "deployments", "patch") and not _may(old, "", "secrets", "get")
    assert _may({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}]}, "", "secrets", "get")


def test_operators_scale_restart_and_read_logs_viewers_only_read(multinode, predownloaded):
    roles = _roles(multinode)
    ops, viewers = roles["llmserve-operators"], roles["llmserve-viewers"]
    assert _may(ops, "apps", "deployments/scale", "update") and _may(ops, "apps", "deployments/scale", "patch")
    assert _may(ops, "", "pods", "delete")            # a restart: the ReplicaSet starts a new pod from the same template
    assert _may(ops, "", "pods/log", "get")
    for group, resource in (("autoscaling", "horizontalpodautoscalers"), ("policy", "poddisruptionbudgets")):
        assert all(_may(ops, group, resource, v) for v in WRITE + ["delete"]), resource
        assert _may(viewers, group, resource, "list") and not _may(viewers, group, resource, "update"), resource
    for group, resource in (("apps", "deployments"), ("", "services"), ("", "pods"), ("llmserve.io", "llmconfigs")):
        assert _may(ops, group, resource, "list") and _may(viewers, group, resource, "list"), resource
    assert _may(viewers, "", "pods/log", "get")
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in viewers["rules"])
    bindings = {o["metadata"]["name"]: o for o in multinode[1].values() if o["kind"] == "RoleBinding"}
    assert bindings["llmserve-viewers"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "llmserve-viewers"}]
    assert bindings["llmserve-operators"]["roleRef"]["name"] == "llmserve-operators"
    assert not [o for o in predownloaded[1].values() if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "llmserve-viewers"]
