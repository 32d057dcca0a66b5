"""The recorded vLLM startup cases (tests/unit/fixtures/vllm_startup_cases.yaml) and the sizing model's answer to each.

Shared by tests/unit/test_sizing_accuracy.py and benchmarks/sizing_accuracy.py.
"""

from __future__ import annotations

import pathlib

import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _sizing
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS

CASES_FILE = pathlib.Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "vllm_startup_cases.yaml"
KV_REL, KV_ABS = 0.05, 0.75  # targets: KV within 5% or 0.75 GiB


def load_cases():
    return yaml.safe_load(CASES_FILE.read_text())["cases"]


def predict(case, weights="measured"):
    """The sizing of a full case. weights: measured (the weights vLLM logged) or estimated (from params_b)."""
    model = dict(PRESETS[case["model"]])
    tp = case["tensor_parallel_size"]
    if weights == "measured":
        model["weights_gib"] = case["observed"]["weights_gib"] * tp
    else:
        model.pop("weights_gib", None)
    return _sizing.size(model=model, dtype=case["dtype"], quantization=case.get("quantization"), gpu_name=case["gpu"],
                        tensor_parallel_size=tp, gpu_memory_utilization=case["gpu_memory_utilization"],
                        max_model_len=case["max_model_len"], max_num_seqs=case.get("max_num_seqs"),
                        max_num_batched_tokens=case.get("max_num_batched_tokens"))


def kv_ok(predicted, observed):
    err = abs(predicted - observed)
    return err <= KV_ABS or err <= KV_REL * abs(observed)


def formula(case):
    """What the model says for a formula case: tokens in the logged KV GiB, GiB max_model_len needs, largest length."""
    arch = PRESETS[case["model"]]
    per_token = _sizing.kv_bytes_per_token(arch, case["tensor_parallel_size"], case.get("kv_cache_dtype", "auto"), case["dtype"])
    kv = case["observed"]["kv_cache_gib"]
    tokens = int(kv * _sizing.GIB // (per_token * _sizing.BLOCK_SIZE)) * _sizing.BLOCK_SIZE
    length = case["max_model_len"]
    need = -(-length // _sizing.BLOCK_SIZE) * _sizing.BLOCK_SIZE * per_token / _sizing.GIB
    return {"kv_bytes_per_token": per_token, "kv_cache_tokens": tokens, "needed_kv_gib": need,
            "largest_max_model_len": tokens, "max_concurrency": tokens / float(length), "fits": tokens >= length}
