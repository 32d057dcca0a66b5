"""The sizing model against vLLM's own startup figures (tests/unit/fixtures/vllm_startup_cases.yaml, with sources).

The accuracy targets are asserted OUT OF SAMPLE. The calibrated constants of _sizing.py (non-torch memory, the
activation factor, the sampler warm-up copies, the MXFP4 bytes, the A100-80GB CUDA memory) were fitted on the cases
marked `split: fit` only; the cases marked `split: holdout` were not looked at while fitting and are the ones scored.
The split is fixed: within each source the cases alternate, in file order, between fit and holdout, so every log
series (vLLM 0.6 V0 on an H100 and an RTX 3090, 0.10.1.1 V1 on A100s, the 0.11 H100 sweep, the 0.19 H100 sweep at TP
1/2/4, the 0.15-0.18 release sweep of Qwen3-14B) is both fitted and scored;
a case that was needed to find a rule (the RTX 4060 AWQ case for the 16-bit embeddings of a 4-bit checkpoint,
gpt-oss-20b for MXFP4, Mistral-Small-3.2 for the profile of a multimodal model, Qwen3-32B at TP 2 for the NVLink
buffers) is in fit, and single-log sources (an L40S at TP 2, two RTX 4090s at TP 2, an A10 at 128k) are held back.
The two vLLM 0.17+ rules (the Triton sampler's smaller warm-up peak, the all-reduce fusion workspace of H100/H200 with
TP) were fitted on the fit cases of those sweeps.
Cases marked `excluded` (tensor parallelism across nodes, which the collection never plans) are not scored.

Predictions are made from the architecture facts (the model's config.json, weights estimated), with the vLLM
release that logged the case, as a user sizing a model without a measured checkpoint size would.
No GPU is available where these tests run; the figures are what vLLM printed on the reporters' GPUs.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

import sizing_cases as sc
from ansible_collections.llmserve.k3s.plugins.module_utils import _plan, _shared, _sizing

CASES = sc.load_cases()
FULL = sc.scored(CASES)
FIT = sc.scored(CASES, "fit")
HOLDOUT = sc.scored(CASES, "holdout")
FORMULA = [c for c in CASES if c["kind"] == "formula"]
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_data_covers_versions_gpus_tp_quantizations_fits_and_failures():
    full = [c for c in CASES if c["kind"] == "full"]
    assert len(full) >= 40 and len(HOLDOUT) >= 20 and len(FORMULA) >= 6
    assert {c["split"] for c in full} == {"fit", "holdout"}
    assert len({c["vllm_version"] for c in full}) >= 6 and {c["engine"] for c in full} == {"v0", "v1"}
    assert {"H100", "A100-80GB", "L40S", "A10", "RTX 3090", "RTX 4090", "RTX 4060"} <= {c["gpu"] for c in full}
    assert {1, 2, 4} <= {c["tensor_parallel_size"] for c in full}
    assert {None, "awq", "gptq", "w8a8", "fp8", "mxfp4"} <= {c.get("quantization") for c in full}
    assert any(not c["observed"]["fits"] for c in HOLDOUT) and any(c["observed"]["fits"] for c in HOLDOUT)
    assert all(c["source"].startswith("https://") for c in CASES)


@pytest.mark.parametrize("case", HOLDOUT, ids=[c["id"] for c in HOLDOUT])
def test_fit_verdict_is_right_out_of_sample(case):
    result = sc.predict(case)
    assert sc.verdict_ok(result, case), (result["fits"], result["edge"], result["reasons"])


@pytest.mark.parametrize("case", FIT, ids=[c["id"] for c in FIT])
def test_fit_verdict_is_right_in_sample(case):
    assert sc.verdict_ok(sc.predict(case), case)


def test_kv_cache_within_target_on_95_percent_of_the_held_back_cases():
    logged = [c for c in HOLDOUT if sc.kv_observed(c) is not None]
    good = [c["id"] for c in logged if sc.kv_ok(sc.predict(c)["kv_cache_gib"], sc.kv_observed(c))]
    assert len(logged) >= 20
    assert len(good) >= 0.95 * len(logged), sorted(set(c["id"] for c in logged) - set(good))


def test_a_prediction_at_the_edge_says_it_does_not_fit_and_why():
    edge = [(c, sc.predict(c)) for c in FULL if c["observed"]["fits"]]
    edge = [(c, r) for c, r in edge if r["edge"]]
    assert edge, "the cases include a startup at the edge that vLLM made (Qwen3-32B at 16k on one H100)"
    for case, result in edge:
        assert result["fits"] is False
        assert any("tolerance" in reason and "does not fit" in reason for reason in result["reasons"]), case["id"]


def test_4_bit_weights_keep_embeddings_and_lm_head_in_16_bit():
    """Qwen2.5-7B AWQ on an 8 GB RTX 4060: from the architecture facts the weights are what vLLM logged (5.20 GiB),
    not params_b x 4.5 bits (3.99 GiB), and the verdict is "does not fit" as vLLM's was."""
    case = next(c for c in CASES if c["id"] == "qwen25-7b-awq-rtx4060-8gb")
    result = sc.predict(case)
    assert result["weights_gib"] == pytest.approx(5.20, abs=0.1)
    assert result["fits"] is False and result["kv_cache_gib"] < 0
    tied = dict(sc.architecture(case), tie_word_embeddings=True)
    assert _sizing.weights_per_gpu_gib(tied, "float16", "awq", 1) < result["weights_gib"] - 0.4


@pytest.mark.parametrize("case", [c for c in FULL if "kv_cache_tokens" in c["observed"]],
                         ids=[c["id"] for c in FULL if "kv_cache_tokens" in c["observed"]])
def test_tokens_in_the_logged_kv_cache_match(case):
    """vLLM's token count is the logged KV GiB over the bytes a token takes on a GPU (rounded to whole blocks)."""
    per_token = _sizing.kv_bytes_per_token(sc.architecture(case), case["tensor_parallel_size"], "auto", case["dtype"])
    tokens = case["observed"]["kv_cache_gib"] * _sizing.GIB / per_token
    assert tokens == pytest.approx(case["observed"]["kv_cache_tokens"], rel=0.003)


@pytest.mark.parametrize("version, engine, batched, cudagraphs", [
    ("0.6.4", "v0", 20000, 0.0), ("0.7.2", "v0", 20000, 0.0), ("0.11.0", "v1", 2048, 0.0), ("0.21.0", "v1", 2048, 0.45),
    ("0.32.0", "v1", 2048, 0.45)])
def test_the_release_decides_engine_profile_batch_and_cuda_graph_estimate(version, engine, batched, cudagraphs):
    result = _sizing.size(model_preset="llama-3.1-8b", gpu_name="RTX 4090", max_model_len=20000, vllm_version=version)
    assert result["vllm"]["engine"] == engine and result["cudagraph_gib"] == cudagraphs
    assert result["max_num_batched_tokens"] == batched
    off = _sizing.size(model_preset="llama-3.1-8b", gpu_name="RTX 4090", max_model_len=20000, vllm_version=version,
                       cudagraph_estimate=False)
    assert off["kv_cache_gib"] == pytest.approx(result["kv_cache_gib"] + cudagraphs, abs=0.011)


def test_v0_turns_chunked_prefill_on_above_32k():
    for version, batched in (("0.6.4", 512), ("0.7.2", 2048)):
        assert _sizing.size(model_preset="llama-3.1-8b", gpu_name="RTX 3090", max_model_len=35000,
                            vllm_version=version)["max_num_batched_tokens"] == batched


def test_the_default_release_is_the_one_the_collection_deploys():
    """The release is decided once (_shared.VLLM_VERSION): the images take the plan's tag, the sizing models it."""
    defaults = yaml.safe_load((ROOT / "roles" / "vllm_models" / "defaults" / "main.yml").read_text())
    for accelerator in ("nvidia", "amd"):
        assert defaults["vllm_models_accelerator_profiles"][accelerator]["tag"] == "{{ llmserve_plan.vllm_image_tag }}"
    ingress = yaml.safe_load((ROOT / "roles" / "ingress" / "defaults" / "main.yml").read_text())
    assert ingress["ingress_frontdoor_image_tag"] == "{{ llmserve_plan.vllm_image_tag }}"
    assert _plan.build_plan([], [], {}, {})["vllm_image_tag"] == "v" + _shared.VLLM_VERSION
    assert _sizing.size(model_preset="llama-3.1-8b", gpu_name="L40")["vllm"]["version"] == _shared.VLLM_VERSION


@pytest.mark.parametrize("case", FORMULA, ids=[c["id"] for c in FORMULA])
def test_bytes_per_token_match_vllm(case):
    """Tokens in the logged KV cache, memory max_model_len needs, largest length: vLLM's figures from its page sizes.

    The tolerance covers the rounding of the logged GiB (two decimals) and, with tensor parallelism, vLLM taking
    the token count from its smallest worker.
    """
    got, want = sc.formula(case), case["observed"]
    tol = 0.02 if case["tensor_parallel_size"] > 1 else 0.002
    if "kv_cache_tokens" in want:
        assert abs(got["kv_cache_tokens"] - want["kv_cache_tokens"]) <= tol * want["kv_cache_tokens"] + 16
    if "needed_kv_gib" in want:
        assert round(got["needed_kv_gib"], 2) == pytest.approx(want["needed_kv_gib"], abs=0.01)
    if "largest_max_model_len" in want:
        assert abs(got["largest_max_model_len"] - want["largest_max_model_len"]) <= 0.002 * want["largest_max_model_len"] + 16
    if "max_concurrency" in want:
        assert got["max_concurrency"] == pytest.approx(want["max_concurrency"], abs=0.015)
    assert got["fits"] is want["fits"]
