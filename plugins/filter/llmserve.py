# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the roles' templates and tasks need; thin wrappers over module_utils."""

from __future__ import annotations

import os

import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _apply, _catalog, _gateway, _lora, _plan, _shared, _traefik


def plan(models, nodes, defaults, classes, settings=None, measured=None):
    """The plan fact (llmserve_plan) of a catalog on its nodes; see _plan.build_plan."""
    return _plan.build_plan(models, nodes, defaults, classes, settings, measured)


def vllm_args(planned, port=_shared.PORTS["vllm"]):
    if not isinstance(planned, dict) or "model" not in planned:
        raise AnsibleFilterError("vllm_args expects a planned model (an item of llmserve_plan.models)")
    return _catalog.vllm_args(planned, port)


def lora_slots(planned, mount):
    """{LLMSERVE_LORA_<i>: adapter JSON or ""}: the model's --lora-modules slots (its ConfigMap <k8s name>-lora)."""
    return _lora.slot_values(planned, mount)


def frontdoor_backend(model, port=_shared.PORTS["vllm"]):
    """The front door's config entry of one served model (an item of llmserve_plan.models); see _gateway."""
    return _gateway.frontdoor_backend(model, port)


def gpu_node_labels(gpu_name):
    """The labels of a GPU node (the k3s role sets them; the GPU pods select the first): llmserve.io/gpu, its product."""
    return {_shared.GPU_NODE_LABEL: "true", _shared.GPU_PRODUCT_LABEL: (gpu_name or "unknown").replace(" ", "-")}


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
            for key, value in gpu_node_labels(name).items():
                labels.setdefault(key, value)
        # Time-slicing (gpu_device_plugin): the device plugin advertises N GPUs per GPU, each with 1/N of its memory.
        slices = int(hvars.get("llmserve_gpu_time_slicing_replicas", 1) or 1) if count else 1
        nodes.append({"name": host, "gpu_count": count * slices, "gpu_name": name, "gpu_slices": slices,
                      "gpu_memory_gib": round(float(memory) / slices, 2) if memory and slices > 1 else memory, "labels": labels})
    return nodes


def measured_weights(hostnames, hostvars):
    """{model name: GiB} of the weights model_storage measured on the hosts (their fact llmserve_model_sizes)."""
    return _plan.measured_weights(hostnames, dict((h, hostvars[h].get("llmserve_model_sizes") or {}) for h in hostnames or []))


def bundle_objects(root):
    """{relative path: object} of every manifest the render step wrote under root (kustomization.yaml aside)."""
    if not os.path.isdir(str(root)):
        raise AnsibleFilterError("the bundle folder %s does not exist: render it first (playbooks/render.yml, or run the "
                                 "whole cluster play without --tags)" % root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        dirnames.sort()
        for fname in sorted(filenames):
            if not fname.endswith(".yaml") or fname.startswith(".") or fname == "kustomization.yaml":
                continue
            path = os.path.join(dirpath, fname)
            with open(path, encoding="utf-8") as handle:
                docs = [doc for doc in yaml.safe_load_all(handle) if doc]
            if len(docs) != 1:
                raise AnsibleFilterError("%s holds %d objects; the bundle has one object a file" % (path, len(docs)))
            out[os.path.relpath(path, str(root))] = docs[0]
    return out


def apply_steps(bundle, scope):
    try:
        return _apply.apply_steps(bundle, scope)
    except _apply.ApplyError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def prune_list(listed, bundle, scope, prune_protected=False):
    """listed: k8s_info results (looped), or a flat list of objects."""
    live = []
    for item in listed or []:
        live.extend(item.get("resources") or [] if isinstance(item, dict) and "resources" in item else [item])
    return _apply.prune_list(live, bundle, scope, prune_protected)


def traefik_arguments(settings=None):
    """The bundled Traefik's static flags (HelmChartConfig additionalArguments); see _traefik.traefik_arguments."""
    try:
        return _traefik.traefik_arguments(settings)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def traefik_values(settings=None):
    """The bundled Traefik's HelmChartConfig valuesContent (a dict); see _traefik.traefik_values."""
    try:
        return _traefik.traefik_values(settings)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def prunable_kinds(dummy=None):
    return [{"api_version": a, "kind": k, "namespaced": n} for a, k, n in _apply.KINDS]


class FilterModule:
    def filters(self):
        return {"plan": plan, "plan_setting_problems": _plan.setting_problems, "vllm_args": vllm_args, "k8s_name": _catalog.k8s_name, "gpu_nodes": gpu_nodes,
                "gpu_node_labels": gpu_node_labels, "measured_weights": measured_weights,
                "bundle_objects": bundle_objects, "apply_steps": apply_steps, "prune_list": prune_list,
                "run_scope": _apply.run_scope, "prunable_kinds": prunable_kinds, "frontdoor_backend": frontdoor_backend,
                "traefik_arguments": traefik_arguments, "traefik_values": traefik_values,
                "lora_slots": lora_slots, "lora_paths": _lora.wanted_paths,
                "lora_restart_reasons": _lora.restart_reasons}
