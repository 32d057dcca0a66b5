"""The plan's stages one by one (validate, resolve, place, size, time-slicing, arguments): each stage's input and output,
inputs left as they were, structured problems and the source of every setting. Real presets, the role's defaults."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _model_sizing, _placement, _plan, _resolve

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLE = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text(encoding="utf-8"))
DEFAULTS, CLASSES = ROLE["plan_model_defaults"], ROLE["plan_size_classes"]
L40 = {"name": "ws", "gpu_count": 4, "gpu_name": "NVIDIA L40", "gpu_slices": 1, "gpu_memory_gib": 44.99, "labels": {}}
LLAMA = {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"}
SMALL = {"name": "small", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5}


def unchanged(stage, *inputs):
    """The stage's output, after checking that it left every input as it was."""
    before = copy.deepcopy(inputs)
    out = stage(*inputs)
    assert inputs == before
    return out


def resolved(*entries, measured=None):
    checked = _catalog.validate(list(entries))
    assert checked["problems"] == [] and checked["adapter_problems"] == []
    out = _resolve.resolve(checked["entries"], DEFAULTS, CLASSES, measured=measured)
    assert out["problems"] == []
    return out["models"]


def placed(models, nodes=(L40,)):
    return _placement.place(models, list(nodes))


# validate

def test_validate_keeps_the_plannable_entries_and_says_what_is_wrong_with_the_others():
    catalog = [dict(LLAMA, bogus=1), "junk", {"model": "x/y"}, dict(SMALL, params_b="big"), dict(SMALL, name="llama")]
    out = unchanged(_catalog.validate, catalog)
    # An unknown field leaves the entry plannable (every problem is reported at once); a bad value does not.
    assert [index for index, dummy in out["entries"]] == [0, 4]
    assert out["entries"][0][1] is catalog[0]
    assert [(p["index"], p["name"], p["field"]) for p in out["problems"]] == [
        (0, "llama", "bogus"), (1, None, None), (2, None, "name"), (3, "small", "params_b"), (4, "llama", "name")]
    assert out["problems"][0] == {"index": 0, "name": "llama", "field": "bogus", "problem": "unknown field",
                                  "fix": "known fields: " + ", ".join(sorted(_catalog.FIELDS))}
    assert out["problems"][4]["problem"] == "'llama' clashes with llmserve_models[0] (llama)"
    assert out["adapter_problems"] == []


def test_a_catalog_that_is_not_a_list_is_one_problem_of_the_whole_catalog():
    out = _catalog.validate({"llama": LLAMA})
    assert out["entries"] == [] and out["adapter_problems"] == []
    assert out["problems"] == [{"index": None, "name": None, "field": None, "problem": "is a mapping, not a list",
                                "fix": "write the catalog as a list of mappings, one per model (- name: ...)"}]


def test_adapter_names_are_checked_across_entries_after_each_entrys_own():
    catalog = [dict(LLAMA, adapters=[{"name": "small", "source": "org/a"}]), SMALL]
    out = _catalog.validate(catalog)
    assert out["problems"] == [] and [i for i, dummy in out["entries"]] == [0, 1]
    assert out["adapter_problems"] == [{"index": 0, "name": "llama", "field": "adapters[0].name",
                                        "problem": "'small' clashes with llmserve_models[1].name",
                                        "fix": "give the adapter a name no model or other adapter has (clients send it as model)"}]


@pytest.mark.parametrize("item, text", [
    ({"index": 3, "name": "llama", "field": "dtype", "problem": "unknown dtype 'x'", "fix": "use one of a"},
     "llmserve_models[3] (llama).dtype: unknown dtype 'x'. Fix: use one of a"),
    ({"index": 2, "name": None, "field": "name", "problem": "missing (None)", "fix": "give it"},
     "llmserve_models[2].name: missing (None). Fix: give it"),
    ({"index": 1, "name": None, "field": None, "problem": "entry is 'junk', not a mapping", "fix": "write a mapping"},
     "llmserve_models[1].: entry is 'junk', not a mapping. Fix: write a mapping"),
    ({"index": None, "name": None, "field": None, "problem": "is a string, not a list", "fix": "write a list"},
     "llmserve_models is a string, not a list. Fix: write a list"),
])
def test_each_problem_is_worded_as_the_message_users_know(item, text):
    assert _catalog.message(item) == text


# resolve

def test_resolve_gives_every_setting_its_value_and_source():
    entry = dict(LLAMA, max_model_len=16384, tensor_parallel_size=2, resources={"limits": {"memory": "40Gi"}})
    checked = _catalog.validate([SMALL, entry, dict(SMALL, name="off", enabled=False)])
    out = unchanged(_resolve.resolve, checked["entries"], DEFAULTS, CLASSES)
    small, llama, off = out["models"]
    assert out["problems"] == [] and [m["index"] for m in out["models"]] == [0, 1, 2]
    assert (small["enabled"], llama["enabled"], off["enabled"]) == (True, True, False)
    assert llama["sources"]["max_model_len"] == "catalog" and llama["max_model_len"] == 16384
    assert llama["sources"]["gpu_memory_utilization"] == "default" and llama["gpu_memory_utilization"] == 0.9
    assert (llama["sources"]["tensor_parallel_size"], small["sources"]["tensor_parallel_size"]) == ("catalog", "size class")
    assert (small["sources"]["max_num_seqs"], small["max_num_seqs"]) == ("vllm", None)
    assert (llama["sources"]["params_b"], small["sources"]["params_b"]) == ("preset", "catalog")
    assert (small["size_class"], small["sources"]["size_class"]) == ("small", "params_b")
    assert llama["resources"]["limits"]["memory"] == "40Gi" and llama["sources"]["resources.limits.memory"] == "catalog"
    assert llama["resources"]["requests"]["memory"] == CLASSES["medium"]["memory"]
    assert llama["sources"]["resources.requests.memory"] == "size class"
    # Placement and sizing come later.
    assert llama["placement"] == [] and "sizing" not in llama


def test_weights_are_decided_once_measured_or_estimated():
    estimated, = resolved(SMALL)
    assert (estimated["weights_gib"], estimated["sources"]["weights_gib"]) == (_catalog.weights_gib(0.5, "bfloat16", None), "estimated")
    measured, = resolved(SMALL, measured={"small": 1.25})
    assert (measured["weights_gib"], measured["sources"]["weights_gib"], measured["weights_measured"]) == (1.25, "measured", True)
    assert measured["weights_gib_per_gpu"] == 1.25
    # Online quantization: the 16-bit checkpoint on disk is not what the GPU holds.
    fp8, = resolved(dict(SMALL, quantization="fp8"), measured={"small": 1.25})
    assert fp8["sources"]["weights_gib"] == "estimated" and "weights_measured" not in fp8
    two, = resolved(dict(SMALL, params_b=14.0, tensor_parallel_size=2))
    assert two["weights_gib_per_gpu"] == round(two["weights_gib"] / 2, 2)


def test_resolve_checks_the_resolved_settings():
    checked = _catalog.validate([dict(SMALL, dtype="float8", tensor_parallel_size=0)])
    out = _resolve.resolve(checked["entries"], DEFAULTS, CLASSES)
    assert [(p["index"], p["name"], p["field"]) for p in out["problems"]] == [(0, "small", "dtype"), (0, "small", "tensor_parallel_size")]
    assert out["problems"][0]["fix"] == "use one of " + ", ".join(_catalog.DTYPES)


# place

def test_place_puts_each_replica_on_one_node_and_leaves_the_models_it_is_given():
    models = resolved(dict(LLAMA, tensor_parallel_size=2), dict(SMALL, replicas=2), dict(SMALL, name="off", enabled=False))
    out = unchanged(_placement.place, models, [L40])
    assert out["problems"] == [] and out["free"] == {"ws": 0}
    assert [m["placement"] for m in out["models"]] == [["ws"], ["ws", "ws"], []]
    assert out["models"][2] is models[2]  # a disabled model is not placed


def test_a_replica_that_finds_no_gpu_is_a_problem_of_replicas():
    out = placed(resolved(dict(SMALL, replicas=5)))
    assert out["models"][0]["placement"] == ["ws"] * 4
    assert [(p["index"], p["name"], p["field"]) for p in out["problems"]] == [(0, "small", "replicas")]
    assert out["problems"][0]["problem"].startswith("replica 5 needs 1 GPU(s) on one node, but free GPUs per node are ws=0")


def test_hpa_maxima_are_capped_at_the_gpus_left():
    models = resolved(dict(SMALL, autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 10}))
    out = unchanged(_placement.place, models, [L40])
    auto = out["models"][0]["autoscaling"]
    assert (auto["max_replicas"], auto["max_replicas_requested"]) == (4, 10)
    assert models[0]["autoscaling"]["max_replicas"] == 10


def test_check_fit_names_the_tensor_parallel_size_a_node_cannot_hold():
    problems = _placement.check_fit(resolved(dict(SMALL, tensor_parallel_size=8)), [L40])
    assert [(p["field"], p["fix"]) for p in problems] == [
        ("tensor_parallel_size", "set tensor_parallel_size to 4 or less, change node_selector, or add GPUs (llmserve_gpu_count)")]


# size

def test_size_fills_the_unset_settings_from_the_sizing_and_says_so():
    models = placed(resolved(LLAMA, dict(LLAMA, name="set", max_num_seqs=64, resources={"requests": {"memory": "2Gi"}}), SMALL))["models"]
    out = unchanged(_model_sizing.size, models, [L40], False)
    llama, fixed, small = out["models"]
    assert out["problems"] == []
    assert llama["sizing"]["node"] == "ws" and llama["sizing"]["kv_cache_tokens"] > 0
    assert (llama["sources"]["max_model_len"], llama["sources"]["max_num_seqs"]) == ("sized", "sized")
    assert llama["max_model_len"] > 0 and llama["max_num_seqs"] > 0
    assert (llama["sources"]["weights_gib"], llama["weights_gib_per_gpu"]) == ("sized", llama["sizing"]["weights_gib"])
    assert (fixed["max_num_seqs"], fixed["sources"]["max_num_seqs"]) == (64, "catalog")
    # A memory request the catalog sets stays as it is; the size class's is raised to what the sizing needs.
    assert fixed["resources"]["requests"]["memory"] == "2Gi" and fixed["sources"]["resources.requests.memory"] == "catalog"
    assert llama["sources"]["resources.requests.memory"] in ("size class", "sized")
    assert small["sizing"] is None and small["sources"]["weights_gib"] == "estimated"  # no preset: not sized
    assert models[0]["sources"]["max_model_len"] == "vllm" and models[0]["max_model_len"] is None


def test_a_model_that_does_not_fit_is_a_problem_of_the_field_to_change():
    out = _model_sizing.size(placed(resolved(dict(LLAMA, max_model_len=131072, gpu_memory_utilization=0.5)))["models"], [L40])
    assert [(p["index"], p["name"], p["field"]) for p in out["problems"]] == [(0, "llama", "max_model_len")]
    assert out["problems"][0]["fix"].endswith("(gpu_sizing's estimate, see docs/sizing.md)")
    assert out["models"][0]["sizing"]["fits"] is False


def test_time_sliced_gpus_divide_the_utilization():
    node = dict(L40, gpu_count=8, gpu_slices=2, gpu_memory_gib=22.5)
    models = placed(resolved(dict(SMALL, gpu_memory_utilization=0.8), dict(SMALL, name="tp2", tensor_parallel_size=2)), [node])["models"]
    out = unchanged(_placement.share_sliced_gpus, models, [node])
    small, tp2 = out["models"]
    assert (small["gpu_slices"], small["gpu_memory_utilization"], small["sources"]["gpu_memory_utilization"]) == (2, 0.4, "time-slicing")
    assert models[0]["sources"]["gpu_memory_utilization"] == "catalog"
    assert [(p["index"], p["name"], p["field"]) for p in out["problems"]] == [(1, "tp2", "tensor_parallel_size")]


# arguments

def test_the_arguments_of_a_planned_model():
    model = _plan.plan_catalog([dict(LLAMA, max_model_len=8192, extra_args=["--seed", "1"])], [L40], DEFAULTS, CLASSES)["models"][0]
    args = unchanged(_catalog.vllm_args, model)
    assert args[:6] == ["meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "llama", "--host", "0.0.0.0", "--port"]
    assert args[args.index("--max-model-len") + 1] == "8192" and args[-2:] == ["--seed", "1"]


# the whole pipeline

def test_problems_come_entry_by_entry_then_across_entries():
    catalog = [dict(SMALL, bogus=1, dtype="float8"), dict(SMALL, name="other", bogus=2, adapters=[{"name": "small", "source": "org/a"}])]
    plan = unchanged(_plan.plan_catalog, catalog, [L40], DEFAULTS, CLASSES)
    assert [(p["index"], p["field"]) for p in plan["problems"]] == [(0, "bogus"), (0, "dtype"), (1, "bogus"), (1, "adapters[0].name")]
    assert plan["errors"] == [_catalog.message(p) for p in plan["problems"]]
    assert plan["errors"][1] == "llmserve_models[0] (small).dtype: unknown dtype 'float8'. Fix: use one of " + ", ".join(_catalog.DTYPES)
    # Nothing is placed or sized while the catalog has problems.
    assert plan["gpus_used"] == 0 and all(m["placement"] == [] and "sizing" not in m for m in plan["models"])


def test_the_plan_fact_carries_the_problems_and_the_messages():
    plan = _plan.build_plan([dict(SMALL, replicas=5)], [L40], DEFAULTS, CLASSES)
    assert [p["field"] for p in plan["problems"]] == ["replicas"] and plan["errors"] == [_catalog.message(plan["problems"][0])]
    assert _plan.build_plan([SMALL], [L40], DEFAULTS, CLASSES)["problems"] == []


def test_one_enabled_rule():
    entries = [{"name": "a"}, {"name": "b", "enabled": False}, {"name": "c", "enabled": True}, {"name": "d", "enabled": None}, "junk"]
    assert [_catalog.is_enabled(e) for e in entries] == [True, False, True, True, False]
    catalog = [dict(SMALL, name=e["name"], enabled=e.get("enabled")) for e in entries if isinstance(e, dict)]
    assert _plan.build_plan(catalog, [L40], DEFAULTS, CLASSES)["enabled"] == ["a", "c", "d"]
