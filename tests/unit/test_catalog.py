"""module_utils/_catalog: the catalog -> plan, from tables (the role's real defaults and size classes)."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _plan, _sizing

ROOT = pathlib.Path(__file__).resolve().parents[2]
with open(ROOT / "roles" / "plan" / "defaults" / "main.yml", encoding="utf-8") as _handle:
    _ROLE = yaml.safe_load(_handle)
DEFAULTS = _ROLE["plan_model_defaults"]
CLASSES = _ROLE["plan_size_classes"]
with open(ROOT / "inventories" / "workstation" / "group_vars" / "all" / "models.yml", encoding="utf-8") as _handle:
    WORKSTATION_CATALOG = yaml.safe_load(_handle)["llmserve_models"]
GIB = 1024 ** 3


def node(name, gpus, memory=44.99, **labels):
    return {"name": name, "gpu_count": gpus, "gpu_name": "NVIDIA L40", "gpu_memory_gib": memory,
            "labels": dict({"llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40"}, **labels)}


def model(name, **fields):
    return dict({"name": name, "model": "org/" + name, "params_b": 1.0}, **fields)


def plan(models, nodes=None, predownload=False):
    return _plan.plan_catalog(copy.deepcopy(models), nodes if nodes is not None else [node("ws", 4)], DEFAULTS, CLASSES, predownload)


def by_name(result):
    return {p["name"]: p for p in result["models"]}


# -- size classes, weights, startup budget ------------------------------------------------------------------

@pytest.mark.parametrize("params_b, expected", [
    (0.5, "small"), (2.99, "small"), (3.0, "medium"), (8.03, "medium"), (10.0, "medium"), (10.01, "large"), (70.6, "large"),
])
def test_size_class_boundaries(params_b, expected):
    assert _sizing.size_class(params_b) == expected


@pytest.mark.parametrize("params_b, cls", [(1.54, "small"), (8.03, "medium"), (15.71, "large")])
def test_size_class_sets_the_resources(params_b, cls):
    planned = plan([model("m", params_b=params_b)])["models"][0]
    assert planned["size_class"] == cls
    assert planned["resources"] == {"requests": {"cpu": str(CLASSES[cls]["cpu"]), "memory": CLASSES[cls]["memory"]},
                                    "limits": {"memory": CLASSES[cls]["memory_limit"]}}
    assert planned["tensor_parallel_size"] == CLASSES[cls]["gpus"]
    assert planned["replicas"] == CLASSES[cls]["replicas"]


def test_entry_overrides_the_size_class():
    planned = plan([model("m", params_b=1.0, size_class="large", resources={"requests": {"cpu": "3"}, "limits": {"memory": "20Gi"}})])
    entry = planned["models"][0]
    assert entry["size_class"] == "large"
    assert entry["resources"] == {"requests": {"cpu": "3", "memory": CLASSES["large"]["memory"]}, "limits": {"memory": "20Gi"}}


# Published safetensors sizes of the checkpoints (bytes of all weight files, from the Hugging Face repositories).
@pytest.mark.parametrize("params_b, dtype, quantization, published_gb", [
    (8.03, "bfloat16", None, 16.06),        # meta-llama/Llama-3.1-8B-Instruct
    (15.71, "bfloat16", None, 31.42),       # deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct
    (1.54, "bfloat16", None, 3.09),         # Qwen/Qwen2.5-1.5B-Instruct
    (46.70, "float16", "awq", 24.65),       # TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ
])
def test_weights_estimate_against_published_checkpoints(params_b, dtype, quantization, published_gb):
    estimate = _catalog.weights_gib(params_b, dtype, quantization)
    assert estimate == pytest.approx(published_gb * 1e9 / GIB, rel=0.10)


@pytest.mark.parametrize("dtype, quantization, bytes_per_param", [
    ("bfloat16", None, 2), ("float16", None, 2), ("float32", None, 4), ("auto", None, 2),
    ("float16", "awq", 0.5625), ("bfloat16", "gptq_marlin", 0.5625), ("bfloat16", "fp8", 1.0),
    ("bfloat16", "not-a-method", 2),  # the error is reported by the dtype/quantization check, not a crash here
])
def test_weights_bytes_per_parameter(dtype, quantization, bytes_per_param):
    assert _catalog.weights_gib(10.0, dtype, quantization) == round(10e9 * bytes_per_param / GIB, 2)


def test_startup_budget_grows_with_weights_and_download():
    budgets = [_sizing.startup_budget_s(w, download=False) for w in (1, 15, 30, 60)]
    assert budgets == sorted(budgets) and len(set(budgets)) == 4
    assert all(b % 30 == 0 and b >= 180 for b in budgets)
    assert _sizing.startup_budget_s(15, download=True) > _sizing.startup_budget_s(15, download=False)


def test_startup_budget_in_the_plan_follows_predownload():
    catalog = [model("m", architecture="llama-3.1-8b", params_b=None)]
    offline, online = plan(catalog, predownload=True)["models"][0], plan(catalog)["models"][0]
    assert offline["weights_gib"] == pytest.approx(16.06e9 / GIB, rel=0.01)  # the published checkpoint
    assert offline["startup_budget_s"] < online["startup_budget_s"]


def test_workstation_catalog_plan():
    result = plan(WORKSTATION_CATALOG)
    assert result["errors"] == []
    assert result["enabled"] == ["llama-3.1-8b", "mixtral-8x7b", "deepseek-coder-v2-lite"]
    assert (result["gpus_total"], result["gpus_used"]) == (4, 3)
    models = by_name(result)
    assert {n: (p["size_class"], p["tensor_parallel_size"], p["placement"]) for n, p in models.items()} == {
        "llama-3.1-8b": ("medium", 1, ["ws"]), "mixtral-8x7b": ("large", 1, ["ws"]),
        "deepseek-coder-v2-lite": ("large", 1, ["ws"]), "llama-3.1-8b-multi": ("medium", 1, [])}
    assert models["llama-3.1-8b"]["k8s_name"] == "vllm-llama-3-1-8b"
    assert models["llama-3.1-8b-multi"]["enabled"] is False


# -- placement -------------------------------------------------------------------------------------------------

def test_largest_replicas_are_placed_first_best_fit():
    nodes = [node("a", 4), node("b", 2)]
    result = plan([model("one", tensor_parallel_size=1), model("two", tensor_parallel_size=2, replicas=2)], nodes)
    assert result["errors"] == []
    placed = by_name(result)
    # tp=2 first: best fit is the node with the fewest free GPUs that still fits (b, then a); then tp=1 on a.
    assert placed["two"]["placement"] == ["b", "a"]
    assert placed["one"]["placement"] == ["a"]
    assert {n["name"]: n["gpus_free"] for n in result["nodes"]} == {"a": 1, "b": 0}


def test_fragmented_free_gpus_do_not_fit_a_tensor_parallel_replica():
    nodes = [node("a", 3), node("b", 3)]
    result = plan([model("a-pair", tensor_parallel_size=2, replicas=2), model("z-late", tensor_parallel_size=2)], nodes)
    assert len(result["errors"]) == 1
    assert result["errors"][0].startswith("llmserve_models[1] (z-late).replicas: replica 1 needs 2 GPU(s) on one node, "
                                          "but free GPUs per node are a=1, b=1 (the enabled catalog asks for 6 GPUs, the nodes have 6)")


def test_node_selector_limits_the_nodes():
    nodes = [node("a", 4), node("b", 4, **{"llmserve.io/gpu-product": "NVIDIA-H100"})]
    result = plan([model("h100", node_selector={"llmserve.io/gpu-product": "NVIDIA-H100"}, replicas=3)], nodes)
    assert result["errors"] == []
    assert by_name(result)["h100"]["placement"] == ["b", "b", "b"]
    result = plan([model("h100", node_selector={"llmserve.io/gpu-product": "NVIDIA-H100"}, replicas=5)], nodes)
    assert "(h100).replicas: replica 5 needs 1 GPU(s) on one node matching node_selector" in result["errors"][0]


def test_node_selector_matching_no_node():
    result = plan([model("m", node_selector={"disk": "nvme"})], [node("a", 4)])
    assert result["errors"] == ["llmserve_models[0] (m).tensor_parallel_size: 1 GPUs per replica, but the largest node matching "
                                "node_selector {'disk': 'nvme'} has 0 (a replica runs on one node). "
                                "Fix: add a GPU node (llmserve_gpu_count) or change node_selector"]


def test_disabled_and_stopped_models_take_no_gpus():
    result = plan([model("off", enabled=False, replicas=9), model("stopped", replicas=0), model("on", replicas=4)])
    assert result["errors"] == []
    assert result["enabled"] == ["stopped", "on"]
    assert by_name(result)["stopped"]["placement"] == []
    assert result["gpus_used"] == 4


def test_no_nodes():
    result = plan([model("m")], [])
    assert result["errors"] == ["llmserve_models[0] (m).tensor_parallel_size: 1 GPUs per replica, but the largest node has 0 "
                                "(a replica runs on one node). Fix: add a GPU node (llmserve_gpu_count) or change node_selector"]


# -- autoscaling ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus, tp, min_replicas, max_replicas, expected_max", [
    (10, 1, 2, 8, 8),     # enough room: the request stands
    (4, 1, 2, 8, 4),      # 2 GPUs left: min + 2
    (2, 1, 2, 8, 2),      # nothing left: max = min
    (7, 2, 1, 4, 3),      # 5 GPUs left on one node hold 2 more tp=2 replicas
])
def test_hpa_max_is_capped_at_free_gpus(gpus, tp, min_replicas, max_replicas, expected_max):
    auto = {"enabled": True, "min_replicas": min_replicas, "max_replicas": max_replicas}
    result = plan([model("m", tensor_parallel_size=tp, autoscaling=auto)], [node("a", gpus)])
    assert result["errors"] == []
    planned = result["models"][0]["autoscaling"]
    assert (planned["min_replicas"], planned["max_replicas"], planned["max_replicas_requested"]) == (min_replicas, expected_max, max_replicas)
    assert result["models"][0]["base_replicas"] == min_replicas


def test_hpa_cap_counts_whole_replicas_per_node():
    # 3 + 1 free GPUs: one more tp=2 replica (on the node with 3), not two.
    nodes = [node("a", 3), node("b", 3)]
    result = plan([model("m", tensor_parallel_size=2, autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 10}),
                   model("x", replicas=1)], nodes)
    assert result["errors"] == []
    assert result["models"][0]["autoscaling"]["max_replicas"] == 2


def test_autoscaling_defaults():
    result = plan([model("m", replicas=2, autoscaling={"enabled": True})], [node("a", 8)])
    auto = result["models"][0]["autoscaling"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_waiting"]) == (2, 2, DEFAULTS["autoscaling_target_waiting"])


# -- errors: every message names the entry, the field, the value and the fix ------------------------------------

ERRORS = [
    ([model("m"), model("m")], "llmserve_models[1] (m).name: 'm' clashes with llmserve_models[0] (m). Fix: give every model a unique name"),
    ([model("a.b"), model("a-b")], "llmserve_models[1] (a-b).name: 'a-b' clashes with llmserve_models[0] (a.b)"),
    ([model("Llama_3")], "llmserve_models[0] (Llama_3).name: 'Llama_3' is not a DNS-1123 name of at most 50 characters"),
    ([model("x" * 51)], "is not a DNS-1123 name of at most 50 characters"),
    ([{"model": "org/m", "params_b": 1}], "llmserve_models[0].name: missing (None). Fix: give every model a DNS-1123 name"),
    (["llama"], "llmserve_models[0].: entry is 'llama', not a mapping"),
    ([model("m", model=None)], "llmserve_models[0] (m).model: missing model id. Fix: set model to a Hugging Face id"),
    ([model("m", quantization="awq4")], "llmserve_models[0] (m).quantization: unknown quantization 'awq4'. Fix: use one of awq, awq_marlin"),
    ([model("m", dtype="fp16")], "llmserve_models[0] (m).dtype: unknown dtype 'fp16'. Fix: use one of auto, bfloat16, float16, float32"),
    ([model("m", dtype=["bfloat16"])], "llmserve_models[0] (m).dtype: ['bfloat16'] is not a string"),
    ([model("m", kv_cache_dtype="int4")], "llmserve_models[0] (m).kv_cache_dtype: unknown value 'int4'. Fix: use one of auto, fp8"),
    ([model("m", replicas=-1)], "llmserve_models[0] (m).replicas: -1 is negative or not an integer. Fix: set 0 or more replicas"),
    ([model("m", replicas="2")], "llmserve_models[0] (m).replicas: '2' is negative or not an integer"),
    ([model("m", tensor_parallel_size=0)], "llmserve_models[0] (m).tensor_parallel_size: 0 is not a positive integer"),
    ([model("m", tensor_parallel_size=8)], "llmserve_models[0] (m).tensor_parallel_size: 8 GPUs per replica, but the largest node has 4"),
    ([model("m", replicas=5)], "llmserve_models[0] (m).replicas: replica 5 needs 1 GPU(s) on one node, but free GPUs per node are ws=0"),
    ([model("m", params_b=70.0)], "llmserve_models[0] (m).tensor_parallel_size: the weights (130.4 GiB) over 1 GPU(s) need 130.4 GiB per GPU"),
    ([model("m", params_b="8B")], "llmserve_models[0] (m).params_b: '8B' is not a positive number"),
    ([model("m", params_b=None)], "llmserve_models[0] (m).architecture: neither architecture, params_b nor size_class is set"),
    ([model("m", architecture="llama-4")], "llmserve_models[0] (m).architecture: unknown preset 'llama-4'. Fix: use one of deepseek-coder-v2-lite"),
    ([model("m", size_class="huge")], "llmserve_models[0] (m).size_class: unknown class 'huge'. Fix: use one of large, medium, small"),
    ([model("m", max_model_len=0)], "llmserve_models[0] (m).max_model_len: 0 is not a positive integer"),
    ([model("m", max_num_seqs="many")], "llmserve_models[0] (m).max_num_seqs: 'many' is not a positive integer"),
    ([model("m", gpu_memory_utilization=1.5)], "llmserve_models[0] (m).gpu_memory_utilization: 1.5 is not in (0, 1]"),
    ([model("m", enabled="no")], "llmserve_models[0] (m).enabled: 'no' is not a boolean. Fix: write true or false (unquoted)"),
    ([model("m", gated="yes")], "llmserve_models[0] (m).gated: 'yes' is not a boolean"),
    ([model("m", max_model_length=4096)], "llmserve_models[0] (m).max_model_length: unknown field. Fix: did you mean max_model_len?"),
    ([model("m", replica=2)], "llmserve_models[0] (m).replica: unknown field. Fix: did you mean replicas?"),
    ([model("m", autoscaling={"enabled": True, "max_replica": 3})],
     "llmserve_models[0] (m).autoscaling.max_replica: unknown field. Fix: did you mean max_replicas?"),
    ([model("m", autoscaling=True)], "llmserve_models[0] (m).autoscaling: True is not a mapping"),
    ([model("m", autoscaling={"enabled": "yes"})], "llmserve_models[0] (m).autoscaling.enabled: 'yes' is not a boolean"),
    ([model("m", autoscaling={"enabled": True, "min_replicas": 3, "max_replicas": 2})],
     "llmserve_models[0] (m).autoscaling: min_replicas 3 / max_replicas 2: need 1 <= min_replicas <= max_replicas"),
    ([model("m", resources={"requests": {"gpu": 1}})], "llmserve_models[0] (m).resources.requests.gpu: unknown resource. Fix: set only cpu, memory here"),
    ([model("m", resources={"limits": {"memory": "lots"}})], "llmserve_models[0] (m).resources.limits.memory: 'lots' is not a Kubernetes quantity"),
    ([model("m", resources=["cpu"])], "llmserve_models[0] (m).resources: ['cpu'] is not a mapping"),
    ([model("m", node_selector=["gpu"])], "llmserve_models[0] (m).node_selector: ['gpu'] is not a mapping of label names to values"),
    ([model("m", node_selector={"llmserve.io/gpu": True})], "(m).node_selector: {'llmserve.io/gpu': True} is not a mapping"),
    ([model("m", storage_size=100)], "llmserve_models[0] (m).storage_size: 100 is not a Kubernetes quantity"),
    ([model("m", extra_args="--trust-remote-code")], "llmserve_models[0] (m).extra_args: '--trust-remote-code' is not a list of strings"),
    ([model("m", extra_args=["--max-model-len=4096"])],
     "llmserve_models[0] (m).extra_args: --max-model-len is set by the role. Fix: set the catalog field max_model_len instead"),
    ([model("m", extra_args=["--port", "9000"])], "llmserve_models[0] (m).extra_args: --port is set by the role. Fix: leave it out (the role sets it)"),
    # vLLM's parser reads '_' as '-' in a flag's name and --flag=value as --flag value: every spelling is refused.
    ([model("m", extra_args=["--served_model_name", "x"])],
     "llmserve_models[0] (m).extra_args: --served_model_name (vLLM reads it as --served-model-name) is set by the role. "
     "Fix: set the catalog field name instead"),
    ([model("m", extra_args=["--gpu_memory_utilization=0.99"])],
     "llmserve_models[0] (m).extra_args: --gpu_memory_utilization (vLLM reads it as --gpu-memory-utilization) is set by the role. "
     "Fix: set the catalog field gpu_memory_utilization instead"),
    ([model("m", extra_args=["--max_model_len", "999999"])],
     "llmserve_models[0] (m).extra_args: --max_model_len (vLLM reads it as --max-model-len) is set by the role. "
     "Fix: set the catalog field max_model_len instead"),
    ([model("m", extra_args=["--api-key", "weak"])],
     "llmserve_models[0] (m).extra_args: --api-key is set by the role. Fix: leave it out: vLLM answers only the gateway, with the "
     "cluster's internal key; client API keys are llmserve_api_keys, checked at the gateway"),
    ([model("m", extra_args=["--api_key=weak"])], "(m).extra_args: --api_key (vLLM reads it as --api-key) is set by the role"),
    ([model("m", extra_args=["-tp=2"])], "(m).extra_args: -tp is set by the role. Fix: set the catalog field tensor_parallel_size instead"),
    ([model("m", extra_args=["--no_enable_prefix_caching"])], "set the catalog field enable_prefix_caching instead"),
    ([model("m", extra_args=["--model", "org/other"])], "(m).extra_args: --model is set by the role. Fix: set the catalog field model instead"),
    ([model("m", extra_args=["--config", "/models/flags.yaml"])],
     "(m).extra_args: --config makes vLLM read more flags from a file, unchecked. Fix: write the flags themselves into extra_args, where they are checked"),
    # argparse takes abbreviations (vLLM leaves allow_abbrev on) and vLLM 0.32's alias of --gpu-memory-utilization.
    ([model("m", extra_args=["--gpu-mem", "0.5"])],
     "(m).extra_args: --gpu-mem (vLLM reads it as --gpu-memory-utilization) is set by the role. "
     "Fix: set the catalog field gpu_memory_utilization instead"),
    ([model("m", extra_args=["--api-k=weak"])], "(m).extra_args: --api-k (vLLM reads it as --api-key) is set by the role"),
    ([model("m", extra_args=["--served_model", "x"])], "(m).extra_args: --served_model (vLLM reads it as --served-model-name)"),
    ([model("m", extra_args=["--device_memory_utilization=0.5"])],
     "--device_memory_utilization (vLLM reads it as --device-memory-utilization) is set by the role"),
    ([model("m", extra_args=["-t", "2"])], "(m).extra_args: -t (vLLM reads it as -tp) is set by the role"),
    ([model("m", extra_args=["-qawq"])], "(m).extra_args: -qawq (vLLM reads it as -q) is set by the role. "
     "Fix: set the catalog field quantization instead"),
    ([model("m", extra_args=["--max-num", "4"])],
     "(m).extra_args: --max-num (an abbreviation of --max-num-batched-tokens, --max-num-seqs) is set by the role. "
     "Fix: set the catalog field max_num_batched_tokens instead; or set the catalog field max_num_seqs instead"),
    ([model("m", extra_env={"VLLM_API_KEY": "weak"})], "llmserve_models[0] (m).extra_env.VLLM_API_KEY: is set by the role. Fix: leave it out"),
    ([model("m", extra_env=["A=1"])], "llmserve_models[0] (m).extra_env: ['A=1'] is not a mapping"),
]


@pytest.mark.parametrize("arg, flag", [
    ("--max-model-len", "--max-model-len"), ("--max_model_len", "--max-model-len"), ("--max_model_len=4096", "--max-model-len"),
    ("--gpu_memory_utilization=0.99", "--gpu-memory-utilization"), ("--compilation_config.cudagraph_mode", "--compilation-config"),
    ("--hf-overrides={\"a_b\": 1}", "--hf-overrides"), ("-tp=2", "-tp"), ("-tp", "-tp"), ("-O3", "-O3"),
    ("4096", None), ("-1", None), ("-0.5", None), ("--", None), ("-", None), ("org/model", None),
])
def test_vllm_flag_reads_an_argument_as_vllm_does(arg, flag):
    assert _catalog.vllm_flag(arg) == flag


def test_flags_the_role_does_not_set_pass_in_any_spelling():
    args = ["--trust_remote_code", "--enforce-eager", "--max-logprobs=2", "--compilation-config.cudagraph_mode", "FULL",
            "--seed", "-1", "--served-model-name-suffix-is-not-a-flag-we-set"]
    assert plan([model("m", extra_args=args, extra_env={"VLLM_LOGGING_LEVEL": "DEBUG"})])["errors"] == []


@pytest.mark.parametrize("catalog, message", ERRORS, ids=[case[1][:60] for case in ERRORS])
def test_error_messages(catalog, message):
    errors = plan(catalog)["errors"]
    assert any(message in e for e in errors), errors
    assert all("Fix: " in e for e in errors), errors


def test_catalog_not_a_list():
    assert plan({"name": "m"})["errors"] == ["llmserve_models is a mapping, not a list. Fix: write the catalog as a list of mappings, "
                                             "one per model (- name: ...)"]


def test_every_problem_of_an_entry_is_reported_at_once():
    errors = plan([model("Bad_Name", dtype="fp16", replicas=-2, quantization="awq4")])["errors"]
    fields = [e.split(":", maxsplit=1)[0] for e in errors]
    assert fields == ["llmserve_models[0] (Bad_Name).%s" % f for f in ("name", "dtype", "quantization", "replicas")]


def test_valid_catalog_has_no_errors():
    catalog = [model("a", params_b=1.54, replicas=3, max_model_len=4096, enable_prefix_caching=False,
                     node_selector={"llmserve.io/gpu": "true"}, extra_env={"A": "1"}, extra_args=["--enforce-eager"],
                     kv_cache_dtype="fp8", revision="main", storage_size="50Gi", gated=True, session_affinity=True)]
    result = plan(catalog)
    assert result["errors"] == []
    entry = result["models"][0]
    assert (entry["gated"], entry["session_affinity"], entry["kv_cache_dtype"]) == (True, True, "fp8")


# -- vllm_args --------------------------------------------------------------------------------------------------

VLLM_ARGS = [
    ({"name": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b", "max_model_len": 32768, "max_num_seqs": 256},
     ["meta-llama/Llama-3.1-8B-Instruct", "--served-model-name", "llama-3.1-8b", "--host", "0.0.0.0", "--port", "8000",
      "--dtype", "bfloat16", "--max-model-len", "32768", "--max-num-seqs", "256", "--gpu-memory-utilization", "0.9",
      "--tensor-parallel-size", "1", "--enable-prefix-caching"]),
    # params_b instead of the preset: no sizing recommendation adds --max-model-len / --max-num-seqs here.
    ({"name": "mixtral-8x7b", "model": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "params_b": 46.7, "quantization": "awq",
      "dtype": "float16", "revision": "main", "kv_cache_dtype": "fp8", "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.85,
      "tensor_parallel_size": 2, "enable_prefix_caching": False, "extra_args": ["--trust-remote-code"]},
     ["TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "--served-model-name", "mixtral-8x7b", "--host", "0.0.0.0", "--port", "8000",
      "--revision", "main", "--dtype", "float16", "--quantization", "awq", "--kv-cache-dtype", "fp8",
      "--max-num-batched-tokens", "8192", "--gpu-memory-utilization", "0.85", "--tensor-parallel-size", "2",
      "--no-enable-prefix-caching", "--trust-remote-code"]),
]


@pytest.mark.parametrize("entry, expected", VLLM_ARGS, ids=["llama", "mixtral"])
def test_vllm_args(entry, expected):
    result = plan([entry], [node("a", 4)])
    assert result["errors"] == []
    assert _catalog.vllm_args(result["models"][0]) == expected


def test_vllm_args_port():
    planned = plan([model("m")])["models"][0]
    args = _catalog.vllm_args(planned, port=9000)
    assert args[args.index("--port") + 1] == "9000"


@pytest.mark.parametrize("name, expected", [("llama-3.1-8b", "vllm-llama-3-1-8b"), ("qwen", "vllm-qwen"), ("a.b.c", "vllm-a-b-c")])
def test_k8s_name(name, expected):
    assert _catalog.k8s_name(name) == expected


# -- the vllm-router of multi-replica models ----------------------------------------------------------------


def test_a_router_fronts_models_with_several_replicas_or_an_hpa():
    result = plan([model("one"), model("two", replicas=2), model("hpa", autoscaling={"enabled": True, "max_replicas": 3}),
                   model("sticky", replicas=2, session_affinity=True), model("rr", replicas=2, router_policy="round_robin")],
                  [node("ws", 16)])
    assert result["errors"] == []
    got = {n: (p["router_enabled"], p["router_policy"], p["backend_service"]) for n, p in by_name(result).items()}
    assert got == {"one": (False, "cache_aware", "vllm-one"), "two": (True, "cache_aware", "vllm-two-router"),
                   "hpa": (True, "cache_aware", "vllm-hpa-router"), "sticky": (True, "consistent_hash", "vllm-sticky-router"),
                   "rr": (True, "round_robin", "vllm-rr-router")}


@pytest.mark.parametrize("fields, expected", [
    ({"router_policy": "power_of_two"}, "(one).router_policy: 'power_of_two' is not a vllm-router policy. Fix: use one of "
                                        "cache_aware, consistent_hash, round_robin"),
    ({"router_policy": 3}, "(one).router_policy: 3 is not a vllm-router policy"),
    ({"router_policy": "cache_aware", "session_affinity": True}, "(one).router_policy: 'cache_aware' cannot keep a client on one replica"),
])
def test_router_policy_is_checked(fields, expected):
    errors = plan([model("one", replicas=2, **fields)])["errors"]
    assert len(errors) == 1 and expected in errors[0], errors
