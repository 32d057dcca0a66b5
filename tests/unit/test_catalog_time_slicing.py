"""Time-sliced GPUs (llmserve_gpu_time_slicing_replicas): N slices a GPU, each with 1/N of its memory."""

from __future__ import annotations

import pathlib

import yaml

from ansible_collections.llmserve.k3s.plugins.filter.llmserve import gpu_nodes
from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _plan

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLE = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text())
DEFAULTS, CLASSES = ROLE["plan_model_defaults"], ROLE["plan_size_classes"]
LLAMA = {"name": "llama-small", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
         "max_model_len": 4096, "max_num_seqs": 16}


def _nodes(slices, count=1):
    hostvars = {"ws": {"llmserve_gpu_count": count, "llmserve_gpu_name": "NVIDIA L40", "llmserve_gpu_memory_gib": 44.99,
                       "llmserve_gpu_time_slicing_replicas": slices}}
    return gpu_nodes(["ws"], hostvars)


def _by_name(result):
    return {p["name"]: p for p in result["models"]}


def test_nodes_show_n_gpus_with_a_share_of_the_memory():
    (node,) = _nodes(2, count=4)
    assert (node["gpu_count"], node["gpu_slices"], node["gpu_memory_gib"]) == (8, 2, 22.5)
    (plain,) = _nodes(1, count=4)
    assert (plain["gpu_count"], plain["gpu_slices"], plain["gpu_memory_gib"]) == (4, 1, 44.99)


def test_two_replicas_share_one_gpu_and_each_asks_vllm_for_half_of_it():
    entry = dict(LLAMA, replicas=2)
    result = _plan.plan_catalog([entry], _nodes(2), DEFAULTS, CLASSES)
    assert result["errors"] == []
    plan = _by_name(result)["llama-small"]
    assert plan["placement"] == ["ws", "ws"]
    assert plan["gpu_memory_utilization"] == 0.45
    args = _catalog.vllm_args(plan)
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.45"
    # Sized on the slice: less KV cache than the same model on a whole L40.
    whole = _by_name(_plan.plan_catalog([dict(LLAMA)], _nodes(1), DEFAULTS, CLASSES))["llama-small"]
    assert 0 < plan["sizing"]["kv_cache_gib"] < whole["sizing"]["kv_cache_gib"] - 15


def test_the_same_two_replicas_do_not_fit_one_gpu_without_slicing():
    result = _plan.plan_catalog([dict(LLAMA, replicas=2)], _nodes(1), DEFAULTS, CLASSES)
    assert any("replicas" in e and "free GPUs per node are ws=0" in e for e in result["errors"]), result["errors"]


def test_tensor_parallel_over_slices_is_an_error():
    result = _plan.plan_catalog([dict(LLAMA, tensor_parallel_size=2)], _nodes(2), DEFAULTS, CLASSES)
    assert any("tensor_parallel_size: 2 on time-sliced GPUs (llmserve_gpu_time_slicing_replicas 2)" in e
               for e in result["errors"]), result["errors"]


def test_a_model_too_big_for_a_slice_does_not_fit():
    big = {"name": "mixtral", "model": "mistralai/Mixtral-8x7B-Instruct-v0.1", "architecture": "mixtral-8x7b",
           "quantization": "awq", "dtype": "float16", "max_model_len": 16384}
    assert _plan.plan_catalog([big], _nodes(1), DEFAULTS, CLASSES)["errors"] == []
    errors = _plan.plan_catalog([big], _nodes(2), DEFAULTS, CLASSES)["errors"]
    assert errors and "mixtral" in errors[0]
