"""The live check of the plan (playbooks/health.yml) against a real vLLM 0.32 on CPU.

On CPU vLLM's KV cache is VLLM_CPU_KVCACHE_SPACE GiB (1 in the harness), not a share of a GPU, so the plan for the
test is built by the planner for the tiny model and its sizing set as the CPU cache is sized: KV cache tokens =
1 GiB / the bytes a token takes in the tiny Llama's architecture (its config.json, gpu_sizing's formula). The
playbook reads num_gpu_blocks x block_size from the real /metrics; a plan made for 1.25 GiB is 25% off.
"""

from __future__ import annotations

import re
import urllib.request

from ansible_collections.llmserve.k3s.plugins.module_utils import _plan, _sizing
from playbook import run_playbook
from vllm_server import ensure_tiny_model

CPU_KV_GIB = 1.0  # VLLM_CPU_KVCACHE_SPACE of tests/lib/vllm_server.py


def _plan_for_cpu(kv_gib):
    """llmserve_plan of the tiny model as the planner makes it, with the sizing of a CPU cache of kv_gib GiB."""
    defaults = {"dtype": "bfloat16", "kv_cache_dtype": "auto", "gpu_memory_utilization": 0.9, "max_model_len": 256,
                "max_num_seqs": None, "max_num_batched_tokens": None, "revision": None, "enable_prefix_caching": True}
    classes = {"small": {"cpu": "2", "memory": "8Gi", "memory_limit": "16Gi", "gpus": 1, "replicas": 1}}
    node = {"name": "cpu", "gpu_count": 1, "gpu_name": "", "gpu_slices": 1, "gpu_memory_gib": None, "labels": {}}
    plan = _plan.build_plan([{"name": "tiny-llama", "model": str(ensure_tiny_model()), "params_b": 0.001}], [node], defaults,
                            classes)
    assert plan["errors"] == [], plan["errors"]
    arch = _sizing.load_config(str(ensure_tiny_model() / "config.json"))
    per_token = _sizing.kv_bytes_per_token(arch, 1, "auto", "bfloat16")
    plan["models"][0]["sizing"] = {"kv_cache_gib": kv_gib, "kv_bytes_per_token": per_token,
                                   "kv_cache_tokens": int(kv_gib * 1024 ** 3 // per_token), "fits": True,
                                   "gpu": {"name": "CPU", "memory_gib": None}, "node": "cpu"}
    return plan


def _allocated(server):
    """num_gpu_blocks and block_size as the real /metrics says them (read here without the collection's parser)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("vllm:cache_config_info{"))
    return int(re.search(r'num_gpu_blocks="(\d+)"', line).group(1)), int(re.search(r'block_size="(\d+)"', line).group(1))


def _health(server, plan):
    # No completion probe: the check reads /health, /v1/models and /metrics, which is all the live check needs.
    return run_playbook("health.yml", "inventories/workstation", extra_vars={
        "llmserve_plan": plan, "llmserve_health_urls": {"tiny-llama": {"service": server.url}},
        "llmserve_health_endpoints": ["service"], "llmserve_health_completion_probe": False})


def _row(output):
    return next(line.split() for line in output.splitlines() if line.split()[:2] == ["tiny-llama", "service"]
                and "x" in line.split()[4])


def test_the_plan_made_for_the_cpu_cache_matches_what_vllm_allocated(vllm_server):
    blocks, block_size = _allocated(vllm_server)
    plan = _plan_for_cpu(CPU_KV_GIB)
    predicted = plan["models"][0]["sizing"]["kv_cache_tokens"]
    result = _health(vllm_server, plan)
    assert result.returncode == 0, result.stdout[-4000:]
    row = _row(result.stdout)
    diff = predicted - blocks * block_size
    assert row[2:5] == [str(predicted), str(blocks * block_size), "%dx%d" % (blocks, block_size)], row
    assert row[5] == "%+d" % diff and row[-1] == "ok", row
    assert abs(diff) <= 0.10 * blocks * block_size
    assert "the plan is off" not in result.stdout


def test_a_planted_25_percent_difference_is_reported_with_the_case_data(vllm_server):
    blocks, block_size = _allocated(vllm_server)
    plan = _plan_for_cpu(CPU_KV_GIB * 1.25)
    result = _health(vllm_server, plan)
    out = result.stdout
    assert result.returncode == 0, out[-4000:]  # the live check reports, it does not fail the run
    row = _row(out)
    actual = blocks * block_size
    pct = 100.0 * (plan["models"][0]["sizing"]["kv_cache_tokens"] - actual) / actual
    assert abs(pct - 25.0) < 0.5 and row[-2] == "(%+.1f%%)" % pct and row[-1] == "off", row
    assert "tiny-llama: the plan is off by +%.1f%% (more than 10%%)" % pct in out
    # The case data: the vLLM version the server itself reports, its utilization and cache figures.
    assert "vllm_version: \"0.32.0\"" in out
    assert "observed: {kv_cache_tokens: %d, fits: true, kv_cache_gib: 1.0}" % actual in out
    assert "max_model_len: 256" in out and "dtype: bfloat16" in out and "gpu_memory_utilization: " in out
