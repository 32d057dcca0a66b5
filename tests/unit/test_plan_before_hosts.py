"""What the model cache role wants to download: read from the checked plan, never the raw catalog; and the check before
the host play that makes that plan."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _model_downloads, _plan

DEFAULTS = {"dtype": "bfloat16", "kv_cache_dtype": "auto", "gpu_memory_utilization": 0.9, "enable_prefix_caching": True,
            "max_model_len": None, "max_num_seqs": None, "max_num_batched_tokens": None, "revision": None,
            "autoscaling_target_waiting": 5}
CLASSES = {c: {"cpu": "2", "memory": "8Gi", "memory_limit": "16Gi", "gpus": 1, "replicas": 1} for c in ("small", "medium", "large")}
NODES = [{"name": "ws", "gpu_count": 2, "gpu_name": "NVIDIA L40", "gpu_memory_gib": 44.99, "labels": {}}]
LLAMA = {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"}


def planned(models, **settings):
    plan = _plan.build_plan(models, NODES, DEFAULTS, CLASSES, dict({"predownload": True}, **settings))
    assert plan["errors"] == []
    return plan["models"]


def test_enabled_models_then_hub_adapters_with_their_revisions():
    models = planned([
        dict(LLAMA, revision="v3", adapters=[{"name": "sql", "source": "org/sql-lora", "revision": "r1"},
                                             {"name": "own", "source": "/var/lib/llm-models/loras/own"}]),
        dict(LLAMA, name="off", enabled=False, adapters=[{"name": "never", "source": "org/never"}]),
        dict(LLAMA, name="plain")])
    assert _model_downloads.wanted(models) == [
        {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "revision": "v3"},
        {"name": "plain", "model": "meta-llama/Llama-3.1-8B-Instruct", "revision": "main"},
        # Only the adapter from the Hub: the other is already a folder of the cache.
        {"name": "sql", "model": "org/sql-lora", "revision": "r1", "local_dir": "adapters/sql"}]


def test_nothing_to_download_from_an_empty_plan():
    assert _model_downloads.wanted([]) == [] and _model_downloads.wanted(None) == []


def test_the_check_before_the_host_play_plans_without_the_gpus():
    """plan_fit 'declared': with no GPU declared the entries are checked and the fit is left to the cluster play; with
    GPUs declared the fit is checked too."""
    too_big = dict(LLAMA, tensor_parallel_size=4)
    no_gpus = [dict(NODES[0], gpu_count=0)]
    unfitted = _plan.build_plan([too_big], no_gpus, DEFAULTS, CLASSES, {"fit": "declared"})
    assert unfitted["errors"] == [] and unfitted["fitted"] is False and unfitted["enabled"] == ["llama"]
    fitted = _plan.build_plan([too_big], NODES, DEFAULTS, CLASSES, {"fit": "declared"})
    assert fitted["fitted"] is True
    assert [e.split(":")[0] for e in fitted["errors"]] == ["llmserve_models[0] (llama).tensor_parallel_size"]
    # A bad field is refused whatever the GPUs.
    bad = _plan.build_plan([dict(LLAMA, dtype="float8")], no_gpus, DEFAULTS, CLASSES, {"fit": "declared"})
    assert [e.split(":")[0] for e in bad["errors"]] == ["llmserve_models[0] (llama).dtype"]
