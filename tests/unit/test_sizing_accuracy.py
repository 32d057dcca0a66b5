"""The sizing model against vLLM's own startup figures (tests/unit/fixtures/vllm_startup_cases.yaml, with sources).

A check on recorded data, not a timing: the targets of benchmarks/sizing_accuracy.py hold on every recorded case.
No GPU is available where these tests run; the figures are what vLLM printed on the reporters' GPUs.
"""

from __future__ import annotations

import pytest

import sizing_cases as sc

CASES = sc.load_cases()
FULL = [c for c in CASES if c["kind"] == "full"]
FORMULA = [c for c in CASES if c["kind"] == "formula"]


def test_the_data_covers_fits_and_failures():
    assert len(FULL) >= 7 and len(FORMULA) >= 6
    assert any(not c["observed"]["fits"] for c in FULL) and any(c["observed"]["fits"] for c in FULL)
    assert all(c["source"].startswith("https://github.com/") for c in CASES)


@pytest.mark.parametrize("case", FULL, ids=[c["id"] for c in FULL])
def test_fit_verdict_is_right(case):
    assert sc.predict(case)["fits"] is case["observed"]["fits"]


def test_kv_cache_within_target_on_90_percent():
    good = [c["id"] for c in FULL if sc.kv_ok(sc.predict(c)["kv_cache_gib"], c["observed"]["kv_cache_gib"])]
    assert len(good) >= 0.9 * len(FULL), good


@pytest.mark.parametrize("case", [c for c in FULL if "kv_cache_tokens" in c["observed"]],
                         ids=[c["id"] for c in FULL if "kv_cache_tokens" in c["observed"]])
def test_tokens_within_5_percent(case):
    got, want = sc.predict(case)["kv_cache_tokens"], case["observed"]["kv_cache_tokens"]
    assert abs(got - want) <= 0.05 * want


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
