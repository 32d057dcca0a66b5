# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage 3 of the plan: the replicas of the enabled models on the GPU nodes, and time-sliced GPUs shared out.

Pure logic, stdlib only. Every function returns new models and leaves the ones it is given as they are.
nodes: gpu_nodes()'s [{name, gpu_count, gpu_name, gpu_memory_gib, gpu_slices, labels}].
"""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS


def matches(selector, labels):
    return all(str(labels.get(k)) == str(v) for k, v in (selector or {}).items())


def check_fit(models, nodes):
    """Problems of replicas that cannot fit one node: its GPUs (tensor parallelism stays on a node) and, for a model
    without an architecture preset, its weights in their memory (the sizing checks the others in full)."""
    problems = _catalog.Problems()
    for model in (m for m in models if m["enabled"]):
        index, name, tp = model["index"], model["name"], model["tensor_parallel_size"]
        matching = [n for n in nodes if matches(model["node_selector"], n.get("labels") or {})]
        largest = max([int(n.get("gpu_count") or 0) for n in matching] or [0])
        if tp > largest:
            problems.add(index, name, "tensor_parallel_size",
                         "%d GPUs per replica, but the largest node%s has %d (a replica runs on one node)"
                         % (tp, " matching node_selector %s" % model["node_selector"] if model["node_selector"] else "", largest),
                         "set tensor_parallel_size to %d or less, change node_selector, or add GPUs (llmserve_gpu_count)" % largest
                         if largest else "add a GPU node (llmserve_gpu_count) or change node_selector")
            continue
        memory = [float(n["gpu_memory_gib"]) for n in matching
                  if n.get("gpu_memory_gib") and int(n.get("gpu_count") or 0) >= tp]
        if model["weights_gib"] and memory and model.get("architecture") not in PRESETS:
            usable = max(memory) * model["gpu_memory_utilization"]
            if model["weights_gib"] / tp > usable:
                problems.add(index, name, "tensor_parallel_size",
                             "the weights (%.1f GiB) over %d GPU(s) need %.1f GiB per GPU, more than the %.1f GiB usable "
                             "(%.2f GiB x gpu_memory_utilization %s)"
                             % (model["weights_gib"], tp, model["weights_gib"] / tp, usable, max(memory), model["gpu_memory_utilization"]),
                             "raise tensor_parallel_size, or use a quantized build (quantization: awq, fp8, ...)")
    return list(problems)


def place(models, nodes):
    """First-fit-decreasing of every enabled replica's GPUs onto one node each; HPA maxima capped at what is left.

    Returns {models: with placement (the nodes of the replicas, in order), free: {node: GPUs left}, problems}.
    """
    problems = _catalog.Problems()
    free = {n["name"]: int(n.get("gpu_count") or 0) for n in nodes}
    labels = {n["name"]: n.get("labels") or {} for n in nodes}
    todo = sorted((m for m in models if m["enabled"]), key=lambda m: (-m["tensor_parallel_size"], m["name"]))
    placement = {}
    for model in todo:
        placed = placement[model["index"]] = []
        tp = model["tensor_parallel_size"]
        for replica in range(model["base_replicas"]):
            fits = [n for n in free if free[n] >= tp and matches(model["node_selector"], labels[n])]
            if not fits:
                problems.add(
                    model["index"], model["name"], "replicas",
                    "replica %d needs %d GPU(s) on one node%s, but free GPUs per node are %s "
                    "(the enabled catalog asks for %d GPUs, the nodes have %d)"
                    % (replica + 1, tp, " matching node_selector %s" % model["node_selector"] if model["node_selector"] else "",
                       ", ".join("%s=%d" % kv for kv in sorted(free.items())) or "none (no nodes)",
                       sum(m["tensor_parallel_size"] * m["base_replicas"] for m in todo),
                       sum(int(n.get("gpu_count") or 0) for n in nodes)),
                    "lower replicas or tensor_parallel_size, disable a model (enabled: false), or add GPUs (llmserve_gpu_count)")
                break
            best = min(fits, key=lambda n: (free[n], n))
            free[best] -= tp
            placed.append(best)
    out = []
    for model in models:
        if model["index"] not in placement:
            out.append(model)
            continue
        model = dict(model, placement=placement[model["index"]])
        auto = model["autoscaling"]
        if auto["enabled"]:
            tp = model["tensor_parallel_size"]
            room = sum(free[n] // tp for n in free if matches(model["node_selector"], labels[n]))
            model["autoscaling"] = dict(auto, max_replicas_requested=auto["max_replicas"],
                                        max_replicas=max(auto["min_replicas"], min(auto["max_replicas"], auto["min_replicas"] + room)))
        out.append(model)
    return {"models": out, "free": free, "problems": list(problems)}


def share_sliced_gpus(models, nodes):
    """Models on time-sliced GPUs (N slices a GPU) take 1/N of the physical GPU. Returns {models, problems}.

    The nodes already show N times the GPUs with 1/N of the memory each, which placement and sizing used; vLLM's
    --gpu-memory-utilization is a share of the whole physical GPU, so it is divided by N. Tensor parallelism over
    slices could put two ranks on one physical GPU: that is a problem.
    """
    problems = _catalog.Problems()
    slices_of = {n["name"]: int(n.get("gpu_slices") or 1) for n in nodes}
    out = []
    for model in models:
        slices = max([slices_of.get(n, 1) for n in model.get("placement") or []] or [1])
        model = dict(model, gpu_slices=slices)
        if slices > 1:
            if model["tensor_parallel_size"] > 1:
                problems.add(model["index"], model["name"], "tensor_parallel_size",
                             "%d on time-sliced GPUs (llmserve_gpu_time_slicing_replicas %d): ranks could share one physical GPU"
                             % (model["tensor_parallel_size"], slices),
                             "use tensor_parallel_size 1 on time-sliced nodes, or turn time-slicing off")
            model["gpu_memory_utilization"] = round(model["gpu_memory_utilization"] / slices, 4)
            model["sources"] = dict(model["sources"], gpu_memory_utilization="time-slicing")
        out.append(model)
    return {"models": out, "problems": list(problems)}
