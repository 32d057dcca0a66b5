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


def scored(cases, split=None):
    """Full cases that are scored (not excluded), of one split (fit / holdout) or all."""
    return [c for c in cases if c["kind"] == "full" and not c.get("excluded") and (split is None or c["split"] == split)]


def architecture(case):
    """The architecture facts a user gives for the case's model (from its config.json), without a measured size."""
    model = dict(PRESETS[case["model"]])
    model.pop("weights_gib", None)
    return model


def predict(case, weights="estimated"):
    """The sizing of a full case, with the release that logged it.

    weights: estimated (from the architecture facts, as for a model without a preset size) or measured (the
    weights vLLM logged, as model.weights_gib).
    """
    model = architecture(case)
    tp = case["tensor_parallel_size"]
    if weights == "measured" and "weights_gib" in case["observed"]:
        model["weights_gib"] = case["observed"]["weights_gib"] * tp
    return _sizing.size(model=model, dtype=case["dtype"], quantization=case.get("quantization"), gpu_name=case["gpu"],
                        tensor_parallel_size=tp, gpu_memory_utilization=case["gpu_memory_utilization"],
                        max_model_len=case["max_model_len"], max_num_seqs=case.get("max_num_seqs"),
                        max_num_batched_tokens=case.get("max_num_batched_tokens"),
                        vllm_version=case["vllm_version"], engine=case["engine"])


def kv_ok(predicted, observed):
    err = abs(predicted - observed)
    return err <= KV_ABS or err <= KV_REL * abs(observed)


def verdict_ok(result, case):
    """Right, or "does not fit" for a case that fits within the tolerance of the edge (the planner errs that way)."""
    observed = case["observed"]["fits"]
    return result["fits"] is observed or (observed and not result["fits"] and result["edge"])


def kv_observed(case):
    return case["observed"].get("kv_cache_gib")


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
