"""One source per value: what one rendered object says about another (pod labels, ports) is what that other object is.

A NetworkPolicy, a Service, a PodMonitor, a route and the front door's config each name pods and ports that another
role renders (the front door, the routers, the vLLM pods, Redis). Each value is decided once (plugins/module_utils/
_shared.py, carried by llmserve_plan); were it written a second time and changed in one place only, a policy would
select no pod, or admit a port nothing listens on. Everything compared here is read from the rendered objects: the test
repeats no label and no port.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

import plans
from bundle import of_kind, one
from netpol import selects

# Multinode: a model with routers, and Redis (the quota store) on: every pod kind the collection runs.
VARS = {"llmserve_redis_enabled": True}


@pytest.fixture(scope="module")
def bundle(renders):
    return renders.bundle("inventories/multinode", extra_vars=VARS, label="one-source")[1]


def _pods(objects):
    """[(deployment name, namespace, pod labels, {port name: containerPort})] of every rendered Deployment."""
    out = []
    for dep in of_kind(objects, "Deployment").values():
        template = dep["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        out.append((dep["metadata"]["name"], dep["metadata"]["namespace"], template["metadata"]["labels"], ports))
    return out


def _selected(pods, namespace, selector):
    return [(name, labels, ports) for name, ns, labels, ports in pods if ns == namespace and selects(selector, labels)]


def _policies(objects):
    return [p for p in of_kind(objects, "NetworkPolicy").values() if p["spec"]["podSelector"]]


def test_every_policy_selects_rendered_pods_and_admits_only_their_ports(bundle):
    """Each policy's pods are rendered pods; each port it opens to them is a port every one of them listens on."""
    pods, checked = _pods(bundle), []
    for policy in _policies(bundle):
        ns, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        selected = _selected(pods, ns, policy["spec"]["podSelector"])
        assert selected, "NetworkPolicy %s selects no rendered pod: %s" % (name, policy["spec"]["podSelector"])
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for pod_name, dummy, ports in selected:
                    assert port["port"] in ports.values(), "%s admits %s to %s, which listens on %s" % (name, port, pod_name, ports)
                    checked.append((name, pod_name, port["port"]))
    assert {name for name, dummy, dummy2 in checked} >= {
        "allow-ingress-controller", "allow-frontdoor-to-models", "allow-frontdoor-to-routers", "allow-monitoring",
        "allow-monitoring-frontdoor", "allow-monitoring-routers", "llmserve-redis"}


def test_every_peer_of_a_policy_is_a_rendered_pod_and_egress_goes_to_its_ports(bundle):
    """A peer named by its pod labels alone (this namespace) is a rendered pod; egress to it, on ports it listens on."""
    pods, peers = _pods(bundle), 0
    for policy in _policies(bundle):
        ns, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction, []):
                for peer in rule.get(key, []):
                    if set(peer) != {"podSelector"}:
                        continue  # other namespaces' pods (Traefik, Prometheus, CoreDNS) and addresses: not ours
                    targets = _selected(pods, ns, peer["podSelector"])
                    assert targets, "%s: %s peer %s is no rendered pod" % (name, key, peer)
                    peers += 1
                    if direction == "egress":
                        for port in rule.get("ports", []):
                            assert all(port["port"] in ports.values() for dummy, dummy2, ports in targets), (name, port, targets)
    assert peers >= 8


def test_every_service_and_pod_monitor_reaches_rendered_pods_on_their_ports(bundle):
    pods = _pods(bundle)
    services = {}
    for svc in of_kind(bundle, "Service").values():
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        selected = _selected(pods, ns, {"matchLabels": svc["spec"]["selector"]})
        if not selected:
            continue  # the DCGM exporter's (a DaemonSet)
        for port in svc["spec"]["ports"]:
            for pod_name, dummy, ports in selected:
                target = port.get("targetPort", port["port"])
                assert (ports.get(target) if isinstance(target, str) else target) == port["port"], (name, port, pod_name, ports)
        services[name] = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert {"llmserve-frontdoor", "llmserve-redis", "vllm-llama-3-1-8b", "vllm-llama-3-1-8b-multi-router"} <= set(services)
    monitored = set()
    for monitor in of_kind(bundle, "PodMonitor").values():
        for ns in monitor["spec"]["namespaceSelector"].get("matchNames", []):
            selected = _selected(pods, ns, monitor["spec"]["selector"])
            if ns == "kube-system":
                continue  # Traefik's, rendered by k3s
            assert selected, "PodMonitor %s selects no rendered pod" % monitor["metadata"]["name"]
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert all(endpoint["port"] in ports for dummy, dummy2, ports in selected), (monitor["metadata"]["name"], endpoint)
            monitored.update(name for name, dummy, dummy2 in selected)
    assert {"llmserve-frontdoor", "llmserve-redis", "vllm-llama-3-1-8b", "vllm-llama-3-1-8b-multi-router"} <= monitored


def test_the_front_door_listens_where_its_deployment_and_service_say_and_sends_where_the_models_listen(bundle):
    config = json.loads(one(bundle, "ConfigMap", "llmserve-frontdoor")["data"]["config.json"])
    door = [ports for name, dummy, dummy2, ports in _pods(bundle) if name == "llmserve-frontdoor"][0]
    assert (config["listen"]["port"], config["auth"]["port"], config["admin"]["port"]) == (door["http"], door["auth"], door["metrics"])
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind(bundle, "Service").values()}
    for model, backend in config["models"].items():
        for url in (backend["url"], backend.get("fallback_url") or backend["url"]):
            parts = urllib.parse.urlsplit(url)
            assert parts.port in services[parts.hostname.split(".")[0]], (model, url)
    route = one(bundle, "IngressRoute", "llm-api")
    for service in (s for r in route["spec"]["routes"] for s in r["services"]):
        assert service["port"] in services[service["name"]], service


def test_everything_carries_the_plans_managed_by_label(bundle):
    """The label the prune lists the cluster's objects by (llmserve_plan.labels.managed_by) is on every rendered object."""
    labels = plans.workstation_plan()["labels"]
    assert labels["managed_by_selector"] == "=".join(*labels["managed_by"].items())
    assert [path for path, obj in bundle.items() if not labels["managed_by"].items() <= obj["metadata"]["labels"].items()] == []
