"""The catalog planner sizes each enabled model on the GPU of its nodes (gpu_sizing's model).

No GPU is available where these tests run; the GPUs are the inventories' facts (4x NVIDIA L40, 44.99 GiB).
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _plan

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLE = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text())
DEFAULTS, CLASSES = ROLE["plan_model_defaults"], ROLE["plan_size_classes"]
L40_NODE = dict(name="workstation", gpu_count=4, gpu_name="NVIDIA L40", gpu_memory_gib=44.99, labels={"llmserve.io/gpu": "true"})
RTX3090_NODE = dict(name="desk", gpu_count=1, gpu_name="NVIDIA GeForce RTX 3090", gpu_memory_gib=24.0, labels={})


def catalog(inventory):
    return yaml.safe_load((ROOT / "inventories" / inventory / "group_vars" / "all" / "models.yml").read_text())["llmserve_models"]


def plan(models, nodes=(L40_NODE,), predownload=False):
    return _plan.plan_catalog(models, list(nodes), DEFAULTS, CLASSES, predownload)


def by_name(result):
    return {p["name"]: p for p in result["models"]}


def test_workstation_catalog_fits_and_gets_recommended_values():
    result = plan(catalog("workstation"))
    assert result["errors"] == []
    models = by_name(result)
    llama, mixtral, deepseek = models["llama-3.1-8b"], models["mixtral-8x7b"], models["deepseek-coder-v2-lite"]
    assert llama["max_model_len"] == 32768 and llama["max_num_seqs"] == 256      # set in the catalog: kept
    assert mixtral["max_num_seqs"] is not None and 1 <= mixtral["max_num_seqs"] <= 256  # unset: recommended
    for model in (llama, mixtral, deepseek):
        assert model["sizing"]["fits"] and model["sizing"]["kv_cache_tokens"] >= model["max_model_len"]
        assert model["sizing"]["node"] == "workstation"
    assert models["llama-3.1-8b-multi"]["sizing"] is None  # disabled: not sized
    assert "--max-num-seqs" in _catalog.vllm_args(mixtral)


def test_multinode_catalog_fits():
    nodes = [dict(name="gpu-server-1", gpu_count=4, gpu_name="NVIDIA L40", gpu_memory_gib=44.99, labels={}),
             dict(name="gpu-node-2", gpu_count=4, gpu_name="NVIDIA L40", gpu_memory_gib=44.99, labels={}),
             dict(name="gpu-node-3", gpu_count=2, gpu_name="NVIDIA L40S", gpu_memory_gib=44.99, labels={})]
    assert plan(catalog("multinode"), nodes)["errors"] == []


def test_unset_max_model_len_is_recommended():
    models = by_name(plan([{"name": "qwen", "model": "Qwen/Qwen2.5-7B-Instruct", "architecture": "qwen2.5-7b"}]))
    qwen = models["qwen"]
    assert qwen["max_model_len"] and qwen["max_model_len"] <= 32768
    assert qwen["sizing"]["kv_cache_tokens"] >= qwen["max_model_len"]


def test_a_model_too_big_for_the_gpu_is_an_error_with_the_fix():
    result = plan([{"name": "llama-70b", "model": "meta-llama/Llama-3.1-70B-Instruct", "architecture": "llama-3.1-70b",
                    "max_model_len": 8192}])
    (error,) = result["errors"]
    assert error.startswith("llmserve_models[0] (llama-70b).tensor_parallel_size: does not fit on NVIDIA L40 (44.99 GiB, node workstation)")
    assert "no memory is left for the KV cache" in error and "set tensor_parallel_size to 4" in error


def test_a_context_too_long_is_an_error_naming_max_model_len():
    result = plan([{"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
                    "max_model_len": 131072}], nodes=[RTX3090_NODE])
    (error,) = result["errors"]
    assert error.startswith("llmserve_models[0] (llama).max_model_len: does not fit on NVIDIA GeForce RTX 3090")
    assert "set max_model_len to" in error and "Fix:" in error


def test_resources_set_by_the_entry_are_kept_and_others_never_shrink():
    entry = {"name": "mixtral", "model": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "architecture": "mixtral-8x7b",
             "quantization": "awq", "dtype": "float16", "max_model_len": 16384,
             "resources": {"requests": {"memory": "20Gi"}}}
    mixtral = by_name(plan([entry]))["mixtral"]
    assert mixtral["resources"]["requests"]["memory"] == "20Gi"
    assert mixtral["resources"]["limits"]["memory"] == CLASSES["large"]["memory_limit"]


def test_predownloaded_weights_shorten_the_startup_budget():
    models = catalog("workstation")[:1]
    assert by_name(plan(models, predownload=True))["llama-3.1-8b"]["startup_budget_s"] < \
        by_name(plan(models))["llama-3.1-8b"]["startup_budget_s"]


def test_nodes_without_gpu_facts_are_not_sized():
    node = dict(name="blank", gpu_count=1, gpu_name="", gpu_memory_gib=None, labels={})
    result = plan(catalog("workstation")[:1], nodes=[node])
    assert result["errors"] == [] and result["models"][0]["sizing"] is None


def _allowed_values():
    from ansible_collections.llmserve.k3s.plugins.module_utils import _values
    rows = [("dtype", v) for v in _catalog.DTYPES] + [("kv_cache_dtype", v) for v in _catalog.KV_CACHE_DTYPES]
    return rows + [("quantization", v) for v in _catalog.QUANTIZATIONS] + [("quantization", None)], _values


ALLOWED, _VALUES = _allowed_values()


def test_the_catalog_and_the_sizing_share_one_list_of_values():
    from ansible_collections.llmserve.k3s.plugins.module_utils import _sizing
    assert _catalog.DTYPES is _VALUES.DTYPES and _catalog.KV_CACHE_DTYPES is _sizing.KV_CACHE_DTYPES is _VALUES.KV_CACHE_DTYPES
    assert set(_catalog.QUANTIZATIONS) == set(_sizing.QUANTIZATIONS) - {"none"}
    assert {"w8a8", "int8", "w4a16", "fp8_e4m3", "fp8_e5m2"} <= set(_catalog.QUANTIZATIONS) | set(_catalog.KV_CACHE_DTYPES)


@pytest.mark.parametrize("field, value", ALLOWED, ids=["%s=%s" % row for row in ALLOWED])
def test_every_value_the_catalog_accepts_is_sized(field, value):
    """A model with an architecture preset and each allowed value plans without error and is sized."""
    entry = {"name": "m", "model": "org/m", "architecture": "llama-3.1-8b", "max_model_len": 8192, field: value}
    result = plan([entry])
    assert result["errors"] == []
    sizing = by_name(result)["m"]["sizing"]
    assert sizing is not None and sizing["fits"] is True and sizing["kv_cache_tokens"] > 0


def test_fp8_e4m3_on_the_seed_models_plans():
    models = [dict(m, kv_cache_dtype="fp8_e4m3") for m in catalog("workstation")]
    result = plan(models)
    assert result["errors"] == []
    auto = by_name(plan(catalog("workstation")))
    for name, planned in by_name(result).items():
        if planned["sizing"]:
            assert planned["sizing"]["kv_bytes_per_token"] * 2 == auto[name]["sizing"]["kv_bytes_per_token"]


def test_docs_catalog_lists_the_allowed_values():
    lines = (ROOT / "docs" / "catalog.md").read_text().splitlines()
    for field, values in (("dtype", _VALUES.DTYPES), ("quantization", _VALUES.QUANTIZATIONS), ("kv_cache_dtype", _VALUES.KV_CACHE_DTYPES)):
        row = next(line for line in lines if line.startswith("| `%s` |" % field))
        assert row.split("|")[3].strip() == ", ".join("`%s`" % v for v in values), field
