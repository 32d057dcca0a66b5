"""plugins/filter/llmserve.py: GPU facts per node (host facts first, inventory otherwise) and the prune selection."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.filter import llmserve
from ansible_collections.llmserve.k3s.plugins.module_utils import _plan

HOSTVARS = {
    # nvidia_gpu_info found two L40S with the driver loaded.
    "probed": {"llmserve_gpu_count": 9, "llmserve_gpu_facts": {"count": 2, "gpus": [
        {"name": "NVIDIA L40S", "memory_total_mib": 46068}, {"name": "NVIDIA L40S", "memory_total_mib": 46068}]}},
    # No driver yet: the PCI bus knows the GPU, not its memory; the inventory's memory is used.
    "pci-only": {"llmserve_gpu_memory_gib": 44.99, "llmserve_gpu_facts": {"count": 1, "gpus": [{"name": "NVIDIA L40"}]}},
    # Render-only: the inventory's values, with extra node labels.
    "inventory": {"llmserve_gpu_count": 4, "llmserve_gpu_name": "NVIDIA L40", "llmserve_gpu_memory_gib": 44.99,
                  "llmserve_node_labels": {"zone": "a"}},
    "cpu-only": {"llmserve_gpu_count": 0},
}


def test_gpu_nodes():
    nodes = {n["name"]: n for n in llmserve.gpu_nodes(list(HOSTVARS), HOSTVARS)}
    assert (nodes["probed"]["gpu_count"], nodes["probed"]["gpu_name"], nodes["probed"]["gpu_memory_gib"]) == (2, "NVIDIA L40S", 44.99)
    assert nodes["probed"]["labels"] == {"llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40S"}
    assert (nodes["pci-only"]["gpu_count"], nodes["pci-only"]["gpu_memory_gib"]) == (1, 44.99)
    assert nodes["inventory"]["labels"] == {"zone": "a", "llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40"}
    assert (nodes["cpu-only"]["gpu_count"], nodes["cpu-only"]["labels"]) == (0, {})


def test_prune_list_takes_looped_k8s_info_results():
    listed = [{"resources": [{"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "gone", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "llmserve.k3s", "llmserve.io/component": "ingress"}}}]},
        {"resources": []}]
    assert [o["name"] for o in llmserve.prune_list(listed, {}, ["ingress"])] == ["gone"]
    assert llmserve.prune_list(listed, {}, ["models"]) == []


def test_vllm_args_needs_a_planned_model():
    with pytest.raises(AnsibleFilterError, match="planned model"):
        llmserve.vllm_args({"name": "m"})


def test_filters_are_registered():
    assert set(llmserve.FilterModule().filters()) == {"plan", "vllm_args", "k8s_name", "gpu_nodes", "measured_weights",
                                                      "bundle_objects", "apply_steps", "prune_list", "run_scope", "prunable_kinds",
                                                      "frontdoor_backend", "traefik_arguments", "traefik_values", "gpu_node_labels",
                                                      "lora_slots", "lora_paths",
                                                      "lora_restart_reasons", "plan_setting_problems"}


def test_the_plan_sends_multi_replica_models_to_their_router():
    """The front door's backends come from the plan (module_utils/_resolve.serving): a router exactly where the
    vllm_models role renders one."""
    catalog = [{"name": "one"}, {"name": "two.x", "replicas": 2}, {"name": "hpa", "autoscaling": {"enabled": True}},
               {"name": "sticky", "replicas": 3, "session_affinity": True}, {"name": "off", "enabled": False, "replicas": 2},
               {"name": "rr", "replicas": 2, "router_policy": "round_robin"}]
    catalog = [dict(entry, model="org/" + entry["name"], params_b=0.5) for entry in catalog]
    nodes = [{"name": "n", "gpu_count": 16, "gpu_name": "NVIDIA L40", "gpu_memory_gib": 44.99, "labels": {}}]
    planned = _plan.build_plan(catalog, nodes, {"dtype": "bfloat16", "kv_cache_dtype": "auto", "gpu_memory_utilization": 0.9,
                                                "enable_prefix_caching": True, "max_model_len": None, "max_num_seqs": None,
                                                "max_num_batched_tokens": None, "revision": None},
                               {"small": {"cpu": "2", "memory": "8Gi", "memory_limit": "16Gi", "gpus": 1, "replicas": 1}})
    assert planned["errors"] == []
    served = {m["name"]: m for m in planned["models"]}
    assert sorted(served) == ["hpa", "one", "rr", "sticky", "two.x"]
    backends = {n: llmserve.frontdoor_backend(m, 8000) for n, m in served.items()}
    assert backends == {
        "one": {"url": "http://vllm-one:8000", "client_affinity": False},
        "two.x": {"url": "http://vllm-two-x-router:8000", "client_affinity": False, "fallback_url": "http://vllm-two-x:8000"},
        "hpa": {"url": "http://vllm-hpa-router:8000", "client_affinity": False, "fallback_url": "http://vllm-hpa:8000"},
        "sticky": {"url": "http://vllm-sticky-router:8000", "client_affinity": True, "fallback_url": "http://vllm-sticky:8000"},
        "rr": {"url": "http://vllm-rr-router:8000", "client_affinity": False, "fallback_url": "http://vllm-rr:8000"}}
    assert (served["sticky"]["router_policy"], served["rr"]["router_policy"], served["two.x"]["router_policy"]) == \
        ("consistent_hash", "round_robin", "cache_aware")


def test_client_address_findings_one_per_address_with_its_endpoints():
    from ansible_collections.llmserve.k3s.plugins.filter import health

    def result(model, endpoint, address):
        return {"item": {"model": model, "endpoint": endpoint}, "client_address": address}

    addresses = [{"type": "InternalIP", "address": "192.168.1.20"}, {"type": "Hostname", "address": "gpu-1"}]
    nodes = [{"status": {"addresses": addresses}}]
    results = [result("a", "service", None), result("a", "ingress", "10.42.0.1"), result("a", "shared", "10.42.0.1"),
               result("b", "ingress", "192.168.1.20"), result("b", "shared", "192.168.1.50")]
    findings = health.client_address_findings(results, nodes, None, ["192.168.1.50"])
    assert [(f["level"], f["address"], f["endpoints"]) for f in findings] == [
        ("warning", "10.42.0.1", ["a (ingress)", "a (shared)"]), ("warning", "192.168.1.20", ["b (ingress)"])]
    assert health.client_address_findings(results, nodes, None, ["192.168.1.20"])[0]["level"] == "note"
    assert health.client_address_findings([result("a", "ingress", "10.42.0.1")], [], [], []) == []
