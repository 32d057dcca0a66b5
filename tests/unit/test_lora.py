"""LoRA adapters: catalog checks, vLLM's LoRA settings and arguments, the GPU memory of their buffers, and what a re-run
loads, unloads or restarts."""

from __future__ import annotations

import json

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _lora, _plan
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS

DEFAULTS = {"dtype": "bfloat16", "gpu_memory_utilization": 0.9, "enable_prefix_caching": True, "max_model_len": None,
            "max_num_seqs": None, "max_num_batched_tokens": None, "kv_cache_dtype": "auto"}
CLASSES = {"small": {"gpus": 1, "replicas": 1}, "medium": {"gpus": 1, "replicas": 1}, "large": {"gpus": 2, "replicas": 1}}
NODES = [{"name": "gpu1", "gpu_count": 4, "gpu_memory_gib": 80, "gpu_name": "NVIDIA H100 80GB HBM3"}]
BASE = {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"}


def plan(models, local_cache=None, predownload=True):
    return _plan.plan_catalog(models, NODES, DEFAULTS, CLASSES, predownload=predownload, local_cache=local_cache)


def entry(*adapters, **fields):
    return dict(BASE, adapters=list(adapters), **fields)


def adapter(name, source=None, **fields):
    return dict(name=name, source=source or "org/" + name, **fields)


@pytest.mark.parametrize("catalog, message", [
    ([entry(adapter("llama"))], "llmserve_models[0] (llama).adapters[0].name: 'llama' clashes with llmserve_models[0].name"),
    ([entry(adapter("a")), dict(BASE, name="other", adapters=[adapter("a")])],
     "llmserve_models[1] (other).adapters[0].name: 'a' clashes with llmserve_models[0].adapters[0].name"),
    ([entry(adapter("x")), dict(BASE, name="x")], "(llama).adapters[0].name: 'x' clashes with llmserve_models[1].name"),
    ([entry(adapter("Bad_Name"))], "(llama).adapters[0].name: 'Bad_Name' is not a DNS-1123 label"),
    ([entry(adapter("a", rank=1024))], "(llama).adapters[0].rank: 1024 is not a rank vLLM accepts (a whole number from 1 to 512"),
    ([entry(adapter("a", rank=0))], "(llama).adapters[0].rank: 0 is not a rank"),
    ([entry(adapter("a", source="/etc/lora"))], "(llama).adapters[0].source: '/etc/lora' is not a folder under the model cache"),
    ([entry(adapter("a", source="../lora"))], "(llama).adapters[0].source: '../lora' is not a folder under the model cache"),
    ([entry(adapter("a", source="adapters/x/y", revision="main"))], "(llama).adapters[0].revision: set for a folder source"),
    ([entry(dict(name="a"))], "(llama).adapters[0].source: missing"),
    ([entry(dict(adapter("a"), alpha=16))], "(llama).adapters[0].alpha: unknown field"),
    ([entry(adapter("a"), architecture="falcon-7b", model="tiiuae/falcon-7b-instruct")],
     "(llama).adapters: architecture falcon-7b (vLLM's FalconForCausalLM) has no LoRA support in vLLM 0.32"),
    ([entry(adapter("a"), extra_args=["--runner", "pooling"])], "(llama).adapters: the model runs as a pooling model"),
    ([entry(adapter("a"), max_loras=0)], "(llama).max_loras: 0 is not a positive integer"),
    ([dict(BASE, adapters="org/a")], "(llama).adapters: 'org/a' is not a list"),
    ([entry(adapter("a"), adapter("b"), max_cpu_loras=1)], "(llama).max_cpu_loras: 2 adapters but 1 slots"),
    ([entry(adapter("a"), extra_args=["--max_lora_rank=64"])], "--max_lora_rank (vLLM reads it as --max-lora-rank) is set by the role"),
])
def test_bad_adapters_are_refused_naming_the_field(catalog, message):
    errors = plan(catalog)["errors"]
    assert any(message in e for e in errors), errors
    assert all("Fix: " in e for e in errors)


def test_lora_settings_and_arguments():
    planned = plan([entry(adapter("a"), adapter("b", source="/var/lib/llm-models/adapters/b", rank=64),
                          adapter("c", source="./lora/c", rank=20))])
    assert planned["errors"] == []
    model = planned["models"][0]
    lora = model["lora"]
    assert [a["folder"] for a in lora["adapters"]] == ["adapters/a", "adapters/b", "lora/c"]
    assert [a["download"] for a in lora["adapters"]] == [True, False, False]
    assert (lora["max_lora_rank"], lora["max_loras"], lora["max_cpu_loras"]) == (64, 3, 4)
    args = _catalog.vllm_args(model)
    start = args.index("--enable-lora")
    assert args[start:] == ["--enable-lora", "--max-lora-rank", "64", "--max-loras", "3", "--max-cpu-loras", "4", "--lora-modules",
                            "$(LLMSERVE_LORA_0)", "$(LLMSERVE_LORA_1)", "$(LLMSERVE_LORA_2)", "$(LLMSERVE_LORA_3)"]
    slots = _lora.slot_values(model, "/models")
    assert json.loads(slots["LLMSERVE_LORA_1"]) == {"name": "b", "path": "/models/adapters/b", "base_model_name": "llama"}
    assert slots["LLMSERVE_LORA_3"] == ""
    expanded = _lora.expand(args, slots)
    assert expanded[-4:] == [slots["LLMSERVE_LORA_%d" % i] for i in range(4)]


def test_without_predownload_vllm_fetches_a_hub_adapter_by_its_id():
    model = plan([entry(adapter("a"), adapter("b", source="./adapters/b"))], predownload=False)["models"][0]
    slots = _lora.slot_values(model, "/models")
    assert json.loads(slots["LLMSERVE_LORA_0"])["path"] == "org/a"
    assert json.loads(slots["LLMSERVE_LORA_1"])["path"] == "/models/adapters/b"


def test_rank_is_read_from_the_adapter_on_disk(tmp_path):
    folder = tmp_path / "adapters" / "a"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 100, "target_modules": ["q_proj"]}))
    lora = plan([entry(adapter("a", rank=8), adapter("b"))], local_cache=str(tmp_path))["models"][0]["lora"]
    assert [(a["rank"], a["rank_from"]) for a in lora["adapters"]] == [(100, "adapter_config.json"), (16, "default")]
    assert lora["max_lora_rank"] == 128  # rounded up to what vLLM accepts


def test_an_adapter_on_disk_above_the_largest_rank_is_refused(tmp_path):
    folder = tmp_path / "adapters" / "a"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    errors = plan([entry(adapter("a"))], local_cache=str(tmp_path))["errors"]
    assert any("adapters[0].rank: the adapter's rank 1024 (adapter_config.json) is above what vLLM accepts (512)" in e for e in errors)


@pytest.mark.parametrize("rank, allowed", [(1, 1), (2, 8), (8, 8), (9, 16), (300, 320), (512, 512), (513, None)])
def test_rank_rounds_up_to_what_vllm_accepts(rank, allowed):
    assert _lora.round_rank(rank) == allowed


@pytest.mark.parametrize("count, slots", [(1, 4), (3, 4), (4, 8), (7, 8), (8, 12)])
def test_default_slots_leave_room_for_one_more(count, slots):
    assert _lora.default_max_cpu_loras(count) == slots


def test_no_adapters_no_lora():
    model = plan([BASE])["models"][0]
    assert model["lora"] == {}
    assert "--enable-lora" not in _catalog.vllm_args(model)


def test_lora_memory_by_hand():
    # Llama-3.1-8B at rank 16, 4 slots, bf16: per layer q (4096+4096), k and v (4096+1024 each), o (4096+4096),
    # gate and up (4096+14336 each), down (14336+4096): 81920 x 16 x 2 bytes x 4 slots x 32 layers.
    arch = PRESETS["llama-3.1-8b"]
    assert _lora.lora_bytes(arch, 16, 4, 2) == 81920 * 16 * 2 * 4 * 32
    # Tensor parallelism splits B of column-parallel layers and A of row-parallel ones.
    assert _lora.lora_bytes(arch, 16, 4, 2, tp=2) < _lora.lora_bytes(arch, 16, 4, 2)


def test_lora_memory_is_taken_from_the_kv_cache():
    without = plan([BASE])["models"][0]["sizing"]
    with_lora = plan([entry(adapter("a", rank=64), max_loras=4)])["models"][0]
    gib = with_lora["lora"]["gpu_gib"]
    assert gib == round(_lora.lora_bytes(PRESETS["llama-3.1-8b"], 64, 4, 2) / 1024.0 ** 3, 3)
    assert with_lora["sizing"]["lora_gib"] == pytest.approx(gib, abs=1e-3)
    assert with_lora["sizing"]["kv_cache_gib"] == pytest.approx(without["kv_cache_gib"] - gib, abs=0.011)


def test_running_adapters_from_vllm_models_list():
    body = json.dumps({"object": "list", "data": [
        {"id": "llama", "root": "/models/x", "parent": None},
        {"id": "a", "root": "/models/adapters/a", "parent": "llama"},
        {"id": "b", "root": "/models/adapters/b", "parent": "llama"}]})
    assert _lora.running_adapters(body, "llama") == {"a": "/models/adapters/a", "b": "/models/adapters/b"}
    assert _lora.running_adapters("not json", "llama") == {}


@pytest.mark.parametrize("running, wanted, load, unload", [
    ({}, {"a": "/m/a"}, [("a", "/m/a")], []),
    ({"a": "/m/a", "b": "/m/b"}, {"a": "/m/a"}, [], ["b"]),
    ({"a": "/m/a"}, {"a": "/m/a2"}, [("a", "/m/a2")], ["a"]),
    ({"a": "/m/a"}, {"a": "/m/a"}, [], []),
])
def test_reconcile(running, wanted, load, unload):
    assert _lora.reconcile(running, wanted) == {"load": load, "unload": unload}


def _args(**lora):
    model = plan([entry(*[adapter(n) for n in lora.pop("names")], **lora)])["models"][0]
    return _catalog.vllm_args(model)


def test_an_added_adapter_within_the_slots_needs_no_restart():
    assert _args(names=["a"], max_loras=2) == _args(names=["a", "b"], max_loras=2)
    assert _lora.restart_reasons(_args(names=["a"], max_loras=2), _args(names=["a", "b"], max_loras=2)) == []


def test_changes_that_need_a_restart_say_why():
    assert _lora.restart_reasons(_args(names=["a"], max_loras=2), _args(names=list("abcd"), max_loras=2)) == [
        "more adapters than the running slots: --max-cpu-loras 4 -> 8"]
    reasons = _lora.restart_reasons(["--enable-lora", "--max-lora-rank", "16"], ["--enable-lora", "--max-lora-rank", "64"])
    assert reasons == ["an adapter's rank is above the running maximum: --max-lora-rank 16 -> 64"]
    assert _lora.restart_reasons(["m"], ["m", "--enable-lora"]) == ["LoRA is turned on (--enable-lora)"]


def test_health_checks_every_adapter_at_its_models_endpoints():
    from ansible_collections.llmserve.k3s.plugins.filter import health

    model = plan([entry(adapter("a"))])["models"][0]
    targets = health.health_targets([model], ["service"], cluster_ips={"llama": "10.43.0.9"})
    assert targets == [{"model": "llama", "endpoint": "service", "url": "http://10.43.0.9:8000"},
                       {"model": "a", "endpoint": "service", "url": "http://10.43.0.9:8000", "adapter_of": "llama"}]
