# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the roles' templates need; thin wrappers over module_utils."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog


def model_plan(models, nodes, defaults, classes, predownload=False):
    return _catalog.plan_catalog(models, nodes, defaults, classes, predownload)


def vllm_args(plan, port=8000):
    if not isinstance(plan, dict) or "model" not in plan:
        raise AnsibleFilterError("vllm_args expects a planned model (an item of model_plan's models)")
    return _catalog.vllm_args(plan, port)


def serving_plan(models):
    """Enabled catalog entries with how the front door reaches each (router or Service), for the ingress templates.

    The same decision as the plan's (module_utils/_catalog.serving): a model with replicas > 1 or autoscaling has a router.
    """
    out = []
    for entry in models or []:
        if not isinstance(entry, dict) or not entry.get("name") or entry.get("enabled", True) is False:
            continue
        auto = entry.get("autoscaling") if isinstance(entry.get("autoscaling"), dict) else {}
        out.append(dict(entry, **_catalog.serving(entry, entry.get("replicas", 1), auto.get("enabled") is True)))
    return out


def frontdoor_backend(model, port=8000):
    """The front door's config entry of one served model (an item of serving_plan or of the plan's models)."""
    return {"url": "http://%s:%d" % (model["backend_service"], int(port)),
            "client_affinity": bool(model.get("router_enabled") and model.get("session_affinity"))}


def gpu_nodes(hostnames, hostvars):
    """GPU facts per node: what nvidia_gpu_info found on the host (llmserve_gpu_facts), else the inventory's values."""
    nodes = []
    for host in hostnames or []:
        hvars = hostvars[host]
        facts = hvars.get("llmserve_gpu_facts") or {}
        gpus = facts.get("gpus") or []
        count = int(facts.get("count", len(gpus)) if facts else hvars.get("llmserve_gpu_count", 0) or 0)
        name = gpus[0].get("name") if gpus else hvars.get("llmserve_gpu_name", "")
        # Without a working driver nvidia_gpu_info knows the GPUs from the PCI bus but not their memory.
        memory = round(gpus[0]["memory_total_mib"] / 1024.0, 2) if gpus and gpus[0].get("memory_total_mib") else hvars.get("llmserve_gpu_memory_gib")
        labels = dict(hvars.get("llmserve_node_labels") or {})
        if count:
            labels.setdefault("llmserve.io/gpu", "true")
            labels.setdefault("llmserve.io/gpu-product", (name or "unknown").replace(" ", "-"))
        # Time-slicing (gpu_device_plugin): the device plugin advertises N GPUs per GPU, each with 1/N of its memory.
        slices = int(hvars.get("llmserve_gpu_time_slicing_replicas", 1) or 1) if count else 1
        nodes.append({"name": host, "gpu_count": count * slices, "gpu_name": name, "gpu_slices": slices,
                      "gpu_memory_gib": round(float(memory) / slices, 2) if memory and slices > 1 else memory, "labels": labels})
    return nodes


def stale_objects(objects, enabled):
    """Objects labelled with a model (llmserve.io/model) that is not among the enabled ones."""
    wanted = set(enabled or [])
    return [obj for obj in objects or []
            if ((obj.get("metadata") or {}).get("labels") or {}).get("llmserve.io/model") not in wanted | {None}]


class FilterModule:
    def filters(self):
        return {"model_plan": model_plan, "vllm_args": vllm_args, "k8s_name": _catalog.k8s_name, "gpu_nodes": gpu_nodes,
                "serving_plan": serving_plan, "frontdoor_backend": frontdoor_backend, "stale_objects": stale_objects}
