# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage 4 of the plan: every enabled model with an architecture preset sized on the GPU of its nodes.

Pure logic, stdlib only; the memory model is _sizing.py's (the gpu_sizing module's). Unset max_model_len /
max_num_seqs get the recommended values; the weights, the startup budget, /dev/shm and the memory request (never
below the size class, never over what the catalog sets) come from the sizing; a model that cannot fit is a problem
naming the field to change. Returns new models; the ones given are left as they are.
"""

from __future__ import annotations

import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _lora, _sizing, _values
from ansible_collections.llmserve.k3s.plugins.module_utils._placement import matches
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS

GIB = 1024 ** 3
# What the plan keeps of the sizing's result (model["sizing"]), with the node it was sized on.
KEPT = ("weights_gib", "activation_gib", "non_torch_gib", "lora_gib", "kv_cache_gib", "kv_bytes_per_token", "kv_cache_tokens",
        "max_concurrency", "fits", "gpu")


def gpu_of(model, nodes):
    """The node whose GPU the model runs on: of the nodes it is placed on, else of the GPU nodes it may run on; the smallest."""
    by_name = {n["name"]: n for n in nodes}
    candidates = [by_name[n] for n in model.get("placement") or [] if n in by_name]
    if not candidates:
        candidates = [n for n in nodes if int(n.get("gpu_count") or 0) and matches(model["node_selector"], n.get("labels") or {})]
    candidates = [n for n in candidates if n.get("gpu_memory_gib") or n.get("gpu_name")]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (float(n.get("gpu_memory_gib") or 0), n["name"]))


def _memory_gi(text):
    match = re.match(r"^(\d+(?:\.\d+)?)Gi$", str(text))
    return float(match.group(1)) if match else None


def _lora_gib(model, dtype):
    """(GiB of the LoRA buffers on each GPU, the model's LoRA plan with that figure as gpu_gib)."""
    lora = model["lora"]
    if not lora:
        return 0.0, lora
    gib = _lora.lora_bytes(PRESETS[model["architecture"]], lora["max_lora_rank"], lora["max_loras"],
                           _values.DTYPE_BYTES.get(dtype, 2), model["tensor_parallel_size"]) / float(GIB)
    return gib, dict(lora, gpu_gib=round(gib, 3))


def size_model(model, nodes, predownload):
    """(the sized model, its problems) of one model; unsized (sizing None) without a preset or a GPU to size it on."""
    model = dict(model, sizing=None)
    if not model["enabled"] or model.get("architecture") not in PRESETS:
        return model, []
    node = gpu_of(model, nodes)
    if node is None:
        return model, []
    problems = _catalog.Problems()
    index, name, tp = model["index"], model["name"], model["tensor_parallel_size"]
    preset = {"model_preset": model["architecture"]}
    if model["sources"]["weights_gib"] == "measured":
        preset = {"model": dict(PRESETS[model["architecture"]], weights_gib=model["weights_gib"])}
    dtype = "bfloat16" if model["dtype"] == "auto" else model["dtype"]
    lora_gib, model["lora"] = _lora_gib(model, dtype)
    try:
        result = _sizing.size(
            dtype=dtype, lora_gib=lora_gib,
            quantization=model["quantization"], kv_cache_dtype=model["kv_cache_dtype"],
            gpu_memory_gib=node.get("gpu_memory_gib"), gpu_name=node.get("gpu_name") or None,
            tensor_parallel_size=tp, gpu_memory_utilization=model["gpu_memory_utilization"],
            max_model_len=model["max_model_len"], max_num_seqs=model["max_num_seqs"],
            max_num_batched_tokens=model["max_num_batched_tokens"], download=not predownload, **preset)
    except _sizing.SizingError as exc:
        problems.add(index, name, "architecture", "cannot be sized on %s (%s)" % (node["name"], exc),
                     "correct the entry or the node's GPU facts (llmserve_gpu_name / llmserve_gpu_memory_gib)")
        return model, list(problems)
    rec = result["recommended"]
    gpu = "%s (%s GiB, node %s)" % (node.get("gpu_name") or "GPU", node.get("gpu_memory_gib"), node["name"])
    if not result["fits"]:
        field = "max_model_len" if result["kv_cache_gib"] > 0 else "tensor_parallel_size"
        problems.add(index, name, field,
                     "does not fit on %s with tensor_parallel_size %d: %s" % (gpu, tp, "; ".join(result["reasons"])),
                     (", or ".join(result["suggestions"]) or "use a larger GPU") + " (gpu_sizing's estimate, see docs/sizing.md)")
    sources = model["sources"] = dict(model["sources"])
    if model["max_model_len"] is None and rec["max_model_len"]:
        model["max_model_len"], sources["max_model_len"] = rec["max_model_len"], "sized"
    if model["max_num_seqs"] is None:
        model["max_num_seqs"] = rec["max_num_seqs"]
        sources["max_num_seqs"] = "vllm" if rec["max_num_seqs"] is None else "sized"
    # The sizing's weights (per GPU) replace the estimate; measured ones went into the sizing as they are.
    model["weights_gib_per_gpu"] = result["weights_gib"]
    model["weights_gib"] = round(result["weights_gib"] * tp, 2)
    if sources["weights_gib"] != "measured":
        sources["weights_gib"] = "sized"
    model["startup_budget_s"], model["shm_size"] = rec["startup_budget_s"], rec["shm_size"]
    sources["startup_budget_s"] = sources["shm_size"] = "sized"
    model["resources"] = dict((part, dict(values)) for part, values in model["resources"].items())
    for part, key, value in (("requests", "memory", rec["memory_request"]), ("limits", "memory", rec["memory_limit"])):
        if sources["resources.%s.%s" % (part, key)] == "catalog":
            continue
        current = _memory_gi(model["resources"][part][key])
        if current is None or _memory_gi(value) > current:
            model["resources"][part][key] = value
            sources["resources.%s.%s" % (part, key)] = "sized"
    model["sizing"] = dict((k, result[k]) for k in KEPT)
    model["sizing"]["node"] = node["name"]
    return model, list(problems)


def size(models, nodes, predownload=False):
    """Stage 4: {models: every model, sized where it can be, problems: of the ones that do not fit}."""
    out, problems = [], []
    for model in models:
        model, found = size_model(model, nodes, predownload)
        out.append(model)
        problems += found
    return {"models": out, "problems": problems}
