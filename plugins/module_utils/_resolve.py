# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage 2 of the plan: each valid catalog entry resolved into a planned model, every setting with its source.

Pure logic, stdlib only. A setting the entry leaves unset takes plan_model_defaults' value, or its size class's;
the weights are decided here once (measured on the hosts, else estimated from params_b) and replaced only by the
GPU sizing (_model_sizing.py). model["sources"] says, per setting, where its value came from (SOURCES); the plan
report prints it.
"""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _lora, _values
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS
from ansible_collections.llmserve.k3s.plugins.module_utils._sizing import size_class, startup_budget_s

# Where a setting's value came from (model["sources"]).
SOURCES = {
    "catalog": "the catalog entry",
    "default": "plan_model_defaults",
    "size class": "plan_size_classes, for the entry's size class",
    "preset": "the architecture preset (_presets.py)",
    "params_b": "derived from params_b",
    "fallback": "the planner's fallback (no params_b to derive it from)",
    "estimated": "estimated from params_b (weights) or from the estimated weights",
    "measured": "measured on the hosts (model_storage's llmserve_model_sizes)",
    "sized": "the GPU sizing on the model's GPU (gpu_sizing's model)",
    "time-slicing": "divided by the slices of a time-sliced GPU",
    "vllm": "unset: vLLM's own default",
    "unset": "unset",
}
# vLLM settings an entry sets, else plan_model_defaults; unset ones are vLLM's own.
VLLM_SETTINGS = ("dtype", "kv_cache_dtype", "quantization", "revision", "max_model_len", "max_num_seqs",
                 "max_num_batched_tokens", "gpu_memory_utilization", "enable_prefix_caching")
# Quantizations applied while vLLM loads a 16-bit checkpoint: the checkpoint's size on disk is not their weights.
ONLINE_QUANT = ("fp8", "bitsandbytes", "experts_int8")


def serving(entry, replicas, autoscaling):
    """How the front door reaches a model: several replicas (or an HPA) get one vllm-router in front of them."""
    router = bool(autoscaling) or (_values.is_int(replicas) and replicas > 1)
    name = _catalog.k8s_name(entry["name"])
    return {"k8s_name": name, "session_affinity": entry.get("session_affinity") is True, "router_enabled": router,
            "router_policy": entry.get("router_policy") or ("consistent_hash" if entry.get("session_affinity") is True else "cache_aware"),
            "router_name": name + "-router", "backend_service": name + "-router" if router else name}


def weights(name, estimate, quantization, measured):
    """(GiB, source) of a model's weights, all GPUs together: measured on the hosts, else the estimate from params_b."""
    gib = (measured or {}).get(name)
    if gib and quantization not in ONLINE_QUANT:
        return gib, "measured"
    return estimate, "unset" if estimate is None else "estimated"


def _resources(entry, cls):
    """(resources, sources): the size class's requests and limits, with what the entry sets instead."""
    resources = {"requests": {"cpu": str(cls.get("cpu", "4")), "memory": cls.get("memory", "16Gi")},
                 "limits": {"memory": cls.get("memory_limit", "32Gi")}}
    sources = {}
    for part in ("requests", "limits"):
        wanted = (entry.get("resources") or {}).get(part) or {}
        resources[part].update(wanted)
        for key in resources[part]:
            sources["resources.%s.%s" % (part, key)] = "catalog" if key in wanted else "size class"
    return resources, sources


def resolve_entry(index, entry, defaults, classes, predownload=False, measured=None, cache=_lora.MODEL_CACHE, local_cache=None):
    """The planned model of one valid entry (a new dict; the entry and the defaults are left as they are)."""
    spec = dict(defaults)
    spec.update({k: v for k, v in entry.items() if v is not None or k == "quantization"})
    spec.setdefault("quantization", None)
    sources = dict((field, "vllm" if spec.get(field) is None else "catalog" if entry.get(field) is not None else "default")
                   for field in VLLM_SETTINGS)
    arch = PRESETS.get(entry.get("architecture") or "", {})
    params_b = entry.get("params_b") if entry.get("params_b") is not None else arch.get("params_b")
    sources["params_b"] = "catalog" if entry.get("params_b") is not None else "preset" if params_b is not None else "unset"
    spec["params_b"] = params_b
    spec["size_class"] = entry.get("size_class") or (size_class(float(params_b)) if params_b is not None else "medium")
    sources["size_class"] = "catalog" if entry.get("size_class") else "params_b" if params_b is not None else "fallback"
    cls = classes.get(spec["size_class"], {})
    spec["enabled"] = _catalog.is_enabled(entry)
    spec["k8s_name"] = _catalog.k8s_name(entry["name"])
    for field, key, fallback in (("tensor_parallel_size", "gpus", 1), ("replicas", "replicas", 1)):
        spec[field] = entry.get(field, cls.get(key, fallback))
        sources[field] = "catalog" if field in entry else "size class"
    auto = dict(enabled=False, min_replicas=None, max_replicas=None, target_waiting=defaults.get("autoscaling_target_waiting", 5))
    auto.update(entry.get("autoscaling") or {})
    if auto["enabled"]:
        auto["min_replicas"] = auto["min_replicas"] if auto["min_replicas"] is not None else spec["replicas"]
        auto["max_replicas"] = auto["max_replicas"] if auto["max_replicas"] is not None else auto["min_replicas"]
    spec["autoscaling"] = auto
    spec["resources"], resource_sources = _resources(entry, cls)
    sources.update(resource_sources)
    spec["extra_args"] = entry.get("extra_args", [])
    spec["extra_env"] = entry.get("extra_env", {})
    spec["node_selector"] = entry.get("node_selector", {})
    spec["gated"] = bool(entry.get("gated", False))
    spec["session_affinity"] = bool(entry.get("session_affinity", False))
    spec["role"] = entry.get("role") or "serve"
    estimate = _catalog.weights_gib(float(params_b), spec["dtype"], spec["quantization"]) if params_b is not None else None
    spec["weights_gib"], sources["weights_gib"] = weights(entry["name"], estimate, spec["quantization"], measured)
    if sources["weights_gib"] == "measured":
        spec["weights_measured"] = True
    tp = spec["tensor_parallel_size"] if _values.is_int(spec["tensor_parallel_size"]) else 1
    spec["weights_gib_per_gpu"] = None if not spec["weights_gib"] else round(float(spec["weights_gib"]) / (tp if tp > 0 else 1), 2)
    # From the estimate, as it always was: measured weights change the budget of a preset model, through its sizing.
    spec["startup_budget_s"] = startup_budget_s(estimate or 16.0, not predownload)
    spec["shm_size"] = _values.shm_size(tp)
    sources["startup_budget_s"] = sources["shm_size"] = "estimated"
    spec["base_replicas"] = auto["min_replicas"] if auto["enabled"] else spec["replicas"]
    spec.update(serving(entry, spec["replicas"], auto["enabled"]))
    spec["placement"] = []
    spec["lora"] = _lora.plan(entry, cache, local_cache, predownload)
    for field in ("adapters", "max_loras", "max_cpu_loras"):
        spec.pop(field, None)
    spec["index"] = index
    spec["sources"] = sources
    return spec


def resolve(entries, defaults, classes, predownload=False, measured=None, cache=_lora.MODEL_CACHE, local_cache=None):
    """Stage 2: the valid entries of validate() -> {models: planned models in catalog order, problems: their settings'}.

    measured: {model name: weights GiB} measured on the hosts; cache: the model cache's path on the hosts;
    local_cache: the same cache where this process can read it (adapters' adapter_config.json), or None.
    """
    models, problems = [], []
    for index, entry in entries:
        model = resolve_entry(index, entry, defaults, classes, predownload, measured, cache, local_cache)
        problems += _catalog.check_resolved(model, classes)
        models.append(model)
    return {"models": models, "problems": problems}
