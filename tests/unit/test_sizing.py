"""gpu_sizing's logic: page sizes, budget, verdicts, suggestions, recommendations and every bad input.

No GPU is available where these tests run: expectations come from vLLM's formulas (kv_cache_interface.py) and
from real startup logs (test_sizing_accuracy.py holds the comparison with those).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _sizing as s

L40 = dict(gpu_name="NVIDIA L40", gpu_memory_gib=44.99)


def test_gqa_page_size_and_tp_split():
    # Llama 3.1 8B: 32 layers x 2 (K and V) x 8 KV heads x 128 x 2 bytes
    arch = s.PRESETS["llama-3.1-8b"]
    assert s.kv_bytes_per_token(arch, 1, "auto", "bfloat16") == 131072
    assert s.kv_bytes_per_token(arch, 2, "auto", "bfloat16") == 65536
    assert s.kv_bytes_per_token(arch, 8, "auto", "bfloat16") == 16384
    assert s.kv_bytes_per_token(arch, 1, "fp8", "bfloat16") == 65536
    # More GPUs than KV heads: each GPU keeps one head (replicated), not a fraction
    qwen = s.PRESETS["qwen2.5-7b"]
    assert s.kv_bytes_per_token(qwen, 8, "auto", "bfloat16") == 28 * 2 * 1 * 128 * 2


def test_mla_keeps_one_latent_not_split_by_tp():
    arch = s.PRESETS["deepseek-coder-v2-lite"]
    assert s.kv_bytes_per_token(arch, 1, "auto", "bfloat16") == 27 * (512 + 64) * 2
    assert s.kv_bytes_per_token(arch, 2, "auto", "bfloat16") == 27 * (512 + 64) * 2


def test_the_workstation_catalog_fits_an_l40():
    for kw in (dict(model_preset="llama-3.1-8b", max_model_len=32768, max_num_seqs=256),
               dict(model_preset="mixtral-8x7b", quantization="awq", dtype="float16", max_model_len=16384),
               dict(model_preset="deepseek-coder-v2-lite", max_model_len=65536)):
        result = s.size(**dict(L40, **kw))
        assert result["fits"], (kw, result["reasons"])
        assert result["kv_cache_tokens"] >= kw["max_model_len"] and not result["reasons"]


def test_budget_adds_up():
    r = s.size(model_preset="llama-3.1-8b", max_model_len=8192, **L40)
    usable = r["gpu"]["cuda_memory_gib"] * 0.9
    assert r["kv_cache_gib"] == pytest.approx(usable - r["weights_gib"] - r["activation_gib"] - r["non_torch_gib"] - r["cudagraph_gib"], abs=0.02)
    assert r["kv_cache_tokens"] % 16 == 0
    assert r["kv_cache_tokens"] == pytest.approx(r["kv_cache_gib"] * s.GIB / 131072, rel=0.001, abs=16)
    assert r["max_concurrency"] == pytest.approx(r["kv_cache_tokens"] / 8192.0, abs=0.01)


def test_70b_on_one_l40_does_not_fit_and_says_what_would():
    r = s.size(model_preset="llama-3.1-70b", max_model_len=8192, **L40)
    assert r["fits"] is False and r["kv_cache_gib"] < 0
    assert "no memory is left for the KV cache" in r["reasons"][0]
    assert "set tensor_parallel_size to 4" in r["suggestions"]
    assert r["recommended"]["tensor_parallel_size"] == 4 and r["recommended"]["shm_size"] == "16Gi"


def test_too_long_context_suggests_the_largest_that_fits():
    r = s.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=131072)
    assert r["fits"] is False
    largest = [x for x in r["suggestions"] if x.startswith("set max_model_len to")]
    assert largest, r["suggestions"]
    length = int(largest[0].split()[3])
    assert s.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=length)["fits"] is True
    assert s.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=length + 1024)["fits"] is False
    fp8 = s.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=65536)
    assert fp8["fits"] is False and "use a FP8-quantized checkpoint (quantization: fp8)" in fp8["suggestions"]
    assert s.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=65536, quantization="fp8")["fits"] is True


def test_unset_lengths_get_recommended_values():
    r = s.size(model_preset="llama-3.1-8b", **L40)
    rec = r["recommended"]
    assert rec["max_model_len"] % 1024 == 0 and rec["max_model_len"] * 4 <= r["kv_cache_tokens"]
    assert 1 <= rec["max_num_seqs"] <= 256
    assert rec["startup_budget_s"] > s.size(model_preset="llama-3.1-8b", download=False, **L40)["recommended"]["startup_budget_s"]


def test_size_class_and_high_end_defaults():
    assert s.size(model_preset="phi-3-mini", **L40)["size_class"] == "medium"
    assert s.size(model_preset="qwen2.5-72b", tensor_parallel_size=4, **L40)["size_class"] == "large"
    assert s.size_class(1.5) == "small" and s.size_class(10) == "medium"
    h100 = s.size(model_preset="llama-3.1-8b", gpu_name="H100", max_model_len=8192)
    assert (h100["max_num_batched_tokens"], h100["max_num_seqs"]) == (8192, 1024)
    a100 = s.size(model_preset="llama-3.1-8b", gpu_name="A100-80GB", max_model_len=8192)
    assert (a100["max_num_batched_tokens"], a100["max_num_seqs"]) == (2048, 256)


def test_config_json(tmp_path):
    """A config.json as Hugging Face ships it (Llama 3.1 8B's fields) gives the same KV figures as the preset."""
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
              "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 32,
              "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from_file = s.size(config_path=str(path), max_model_len=8192, **L40)
    preset = s.size(model_preset="llama-3.1-8b", max_model_len=8192, **L40)
    assert from_file["kv_bytes_per_token"] == preset["kv_bytes_per_token"]
    assert from_file["weights_gib"] == pytest.approx(preset["weights_gib"], rel=0.02)


@pytest.mark.parametrize("kwargs, words", [
    (dict(model_preset="llama-9"), ["model_preset", "llama-3.1-8b"]),
    (dict(), ["exactly one of model"]),
    (dict(model_preset="llama-3.1-8b", model={"num_layers": 1}), ["exactly one of model"]),
    (dict(model={"num_layers": 32, "params_b": 8}), ["num_kv_heads", "head_dim"]),
    (dict(model={"num_layers": 32, "num_kv_heads": 8, "head_dim": 128}), ["params_b"]),
    (dict(model_preset="llama-3.1-8b", dtype="int4"), ["dtype", "bfloat16"]),
    (dict(model_preset="llama-3.1-8b", quantization="int3"), ["quantization", "awq"]),
    (dict(model_preset="llama-3.1-8b", kv_cache_dtype="fp4"), ["kv_cache_dtype", "fp8"]),
    (dict(model_preset="llama-3.1-8b", tensor_parallel_size=3), ["tensor_parallel_size 3", "1, 2, 4, 8"]),
    (dict(model_preset="llama-3.1-8b", tensor_parallel_size=0), ["tensor_parallel_size"]),
    (dict(model_preset="llama-3.1-8b", gpu_memory_utilization=1.5), ["gpu_memory_utilization"]),
    (dict(model_preset="llama-3.1-8b", gpu_memory_utilization=0.0), ["gpu_memory_utilization"]),
    (dict(model_preset="llama-3.1-8b", max_model_len=0), ["max_model_len"]),
    (dict(model_preset="llama-3.1-8b", max_num_seqs="many"), ["max_num_seqs"]),
])
def test_bad_input_names_the_argument_and_the_fix(kwargs, words):
    with pytest.raises(s.SizingError) as err:
        s.size(**dict(L40, **kwargs))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("gpu, words", [
    (dict(gpu_name="Voodoo 5"), ["gpu_name", "L40S", "gpu_memory_gib"]),
    (dict(), ["gpu_memory_gib", "gpu_name"]),
    (dict(gpu_memory_gib=0.1), ["gpu_memory_gib is 0.1"]),
])
def test_bad_gpu(gpu, words):
    with pytest.raises(s.SizingError) as err:
        s.size(model_preset="llama-3.1-8b", **gpu)
    for word in words:
        assert word in str(err.value)


def test_config_path_errors(tmp_path):
    with pytest.raises(s.SizingError, match="config_path"):
        s.size(config_path=str(tmp_path / "missing.json"), **L40)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 10}))
    with pytest.raises(s.SizingError, match="num_attention_heads"):
        s.size(config_path=str(bad), **L40)


def _ansible(args):
    ansible = pathlib.Path(sys.executable).parent / "ansible"
    out = subprocess.run([str(ansible), "localhost", "-m", "llmserve.k3s.gpu_sizing", "-a", args], capture_output=True,
                         text=True, timeout=120, check=False,
                         env=dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"))
    return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_through_ansible():
    """The module run by the real ansible: an answer, and a refusal that names the argument."""
    ok = _ansible("model_preset=deepseek-coder-v2-lite gpu_name=L40 max_model_len=65536")
    assert ok["fits"] is True and ok["changed"] is False and ok["kv_bytes_per_token"] == 27 * 576 * 2
    bad = _ansible("model_preset=deepseek-coder-v2-lite gpu_name=L40 tensor_parallel_size=3")
    assert bad["failed"] and "tensor_parallel_size 3" in bad["msg"]


def test_config_json_tie_word_embeddings_and_experts(tmp_path):
    """config_path reads vocab_size, hidden_size, tie_word_embeddings and the experts: a 4-bit checkpoint keeps the
    embeddings, an untied LM head and the MoE router in 16 bit (Qwen2.5-7B's fields; Mixtral's for the router)."""
    qwen = {"hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 32768, "num_attention_heads": 28,
            "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
    untied, tied = tmp_path / "untied.json", tmp_path / "tied.json"
    untied.write_text(json.dumps(qwen))
    tied.write_text(json.dumps(dict(qwen, tie_word_embeddings=True)))
    a = s.size(config_path=str(untied), quantization="awq", dtype="float16", max_model_len=4096, gpu_name="RTX 4060")
    b = s.size(config_path=str(tied), quantization="awq", dtype="float16", max_model_len=4096, gpu_name="RTX 4060")
    # the tied config has no LM head; the untied one keeps it in 16 bit (2 bytes a parameter, not 0.52)
    assert a["weights_gib"] - b["weights_gib"] == pytest.approx(152064 * 3584 * 2 / s.GIB, abs=0.02)
    assert a["weights_gib"] > 5.0 and a["fits"] is False
    mixtral = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
               "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2}
    path = tmp_path / "mixtral.json"
    path.write_text(json.dumps(mixtral))
    arch = s.load_config(str(path))
    assert arch["num_experts"] == 8 and arch["params_b"] == pytest.approx(46.7, abs=0.1)
    router_gib = 32 * 4096 * 8 * (2 - 0.52) / s.GIB
    flat = dict(arch, num_experts=1)
    assert s.weights_per_gpu_gib(arch, "bfloat16", "awq", 1) - s.weights_per_gpu_gib(flat, "bfloat16", "awq", 1) == \
        pytest.approx(router_gib, abs=0.001)


def test_kv_cache_dtypes_fp8_variants_halve_the_page():
    auto = s.size(model_preset="llama-3.1-8b", max_model_len=8192, **L40)
    for kvd in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert s.size(model_preset="llama-3.1-8b", max_model_len=8192, kv_cache_dtype=kvd, **L40)["kv_bytes_per_token"] == \
            auto["kv_bytes_per_token"] // 2


def test_module_documentation_lists_the_allowed_values():
    """gpu_sizing's DOCUMENTATION choices are the lists of _values (ansible-test compares them with the spec)."""
    import yaml
    from ansible_collections.llmserve.k3s.plugins.module_utils import _values
    from ansible_collections.llmserve.k3s.plugins.modules import gpu_sizing
    options = yaml.safe_load(gpu_sizing.DOCUMENTATION)["options"]
    assert options["dtype"]["choices"] == list(_values.DTYPES) == gpu_sizing.ARGUMENT_SPEC["dtype"]["choices"]
    assert options["quantization"]["choices"] == ["none"] + list(_values.QUANTIZATIONS)
    assert options["kv_cache_dtype"]["choices"] == list(_values.KV_CACHE_DTYPES)
    assert set(options) == set(gpu_sizing.ARGUMENT_SPEC)
