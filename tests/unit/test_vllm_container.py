"""The vLLM server's arguments and environment and the vllm-router's arguments, as the vllm_models template writes them
(plugins/module_utils/_vllm_container.py, filters plugins/filter/vllm_container.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.filter import vllm_container
from ansible_collections.llmserve.k3s.plugins.module_utils import _plan, _tracing, _vllm_container

# A planned model as llmserve_plan.models holds it (the fields the containers read).
SOLO = {"name": "qwen-0.5b", "k8s_name": "vllm-qwen-0-5b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "dtype": "bfloat16",
        "max_model_len": 4096, "max_num_seqs": 8, "gpu_memory_utilization": 0.9, "tensor_parallel_size": 1,
        "enable_prefix_caching": True, "extra_env": {}, "extra_args": [], "offline": False, "needs_token": False,
        "selector": {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "qwen-0.5b"}}
SETTINGS = {"base_env": {}, "cache_mount": "/var/lib/llm-models", "internal_secret": "llmserve-internal",
            "otlp_endpoint": "", "tracing": _tracing.OFF}
TRACING = {"enabled": True, "protocol": "grpc", "url": "grpc://jaeger.monitoring:4317", "sample_rate": 0.25}
INTERNAL_KEY = {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llmserve-internal", "key": "vllm-api-key"}}}


def names(env):
    return [e["name"] for e in env]


def test_server_args_are_vllm_serve_s_and_name_the_model_once():
    args = _vllm_container.server_args(SOLO, 8000)
    assert args[:7] == ["Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen-0.5b", "--host", "0.0.0.0", "--port", "8000"]
    assert args[args.index("--max-model-len") + 1] == "4096" and "--otlp-traces-endpoint" not in args
    assert all(isinstance(a, str) for a in args) and "--api-key" not in args


def test_tracing_on_adds_the_endpoint_last():
    args = _vllm_container.server_args(SOLO, 8000, "grpc://jaeger.monitoring:4317")
    assert args[-2:] == ["--otlp-traces-endpoint", "grpc://jaeger.monitoring:4317"]
    assert args[:-2] == _vllm_container.server_args(SOLO, 8000)


def test_extra_args_follow_the_role_s_and_precede_the_tracing_endpoint():
    model = dict(SOLO, extra_args=["--enforce-eager"])
    assert _vllm_container.server_args(model, 8000, "http://o:4318/v1/traces")[-3:] == [
        "--enforce-eager", "--otlp-traces-endpoint", "http://o:4318/v1/traces"]


def test_env_of_a_plain_model_is_the_cache_and_the_internal_key_from_its_secret():
    assert _vllm_container.server_env(SOLO, SETTINGS) == [{"name": "HF_HOME", "value": "/var/lib/llm-models/huggingface"},
                                                          INTERNAL_KEY]


def test_env_merges_the_role_s_then_the_model_s_as_strings_sorted_by_name():
    settings = dict(SETTINGS, base_env={"VLLM_LOGGING_LEVEL": "INFO", "OMP_NUM_THREADS": 4, "HF_HOME": "/elsewhere"})
    model = dict(SOLO, extra_env={"VLLM_LOGGING_LEVEL": "DEBUG", "vllm_use_v1": True, "NCCL_P2P_DISABLE": 1})
    env = _vllm_container.server_env(model, settings)
    # Case-insensitive order; the model's value wins over the role's; HF_HOME is always the cache's.
    assert env[:-1] == [{"name": "HF_HOME", "value": "/var/lib/llm-models/huggingface"},
                        {"name": "NCCL_P2P_DISABLE", "value": "1"},
                        {"name": "OMP_NUM_THREADS", "value": "4"},
                        {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"},
                        {"name": "vllm_use_v1", "value": "True"}]
    assert env[-1] == INTERNAL_KEY


def test_an_offline_model_does_not_ask_the_hub():
    env = _vllm_container.server_env(dict(SOLO, offline=True), SETTINGS)
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in env


def test_a_gated_model_reads_its_token_from_the_mounted_file_never_the_environment():
    env = _vllm_container.server_env(dict(SOLO, needs_token=True), SETTINGS)
    assert env[-2:] == [INTERNAL_KEY, {"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"}]
    assert "HF_TOKEN" not in names(env)


def test_tracing_variables_only_with_an_endpoint():
    on = _vllm_container.server_env(SOLO, dict(SETTINGS, otlp_endpoint="grpc://jaeger.monitoring:4317", tracing=TRACING))
    assert on[:4] == [{"name": "HF_HOME", "value": "/var/lib/llm-models/huggingface"},
                      {"name": "OTEL_SERVICE_NAME", "value": "qwen-0.5b"},
                      {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
                      {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.25"}]
    # The endpoint is what turns them on (vllm_models_otlp_traces_endpoint), not the tracing settings alone.
    assert not any(n.startswith("OTEL_") for n in names(_vllm_container.server_env(SOLO, dict(SETTINGS, tracing=TRACING))))
    http = dict(TRACING, protocol="http")
    env = _vllm_container.server_env(SOLO, dict(SETTINGS, otlp_endpoint="http://o:4318/v1/traces", tracing=http))
    assert {"name": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "value": "http/protobuf"} in env


LORA_DEFAULTS = {"dtype": "bfloat16", "gpu_memory_utilization": 0.9, "enable_prefix_caching": True, "max_model_len": None,
                 "max_num_seqs": None, "max_num_batched_tokens": None, "kv_cache_dtype": "auto"}
LORA_CLASSES = {"small": {"gpus": 1, "replicas": 1}, "medium": {"gpus": 1, "replicas": 1}, "large": {"gpus": 2, "replicas": 1}}
LORA_NODES = [{"name": "gpu1", "gpu_count": 1, "gpu_memory_gib": 80, "gpu_name": "NVIDIA H100 80GB HBM3"}]


def lora_model(max_cpu_loras):
    plan = _plan.plan_catalog([{"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
                                "adapters": [{"name": "sql", "source": "org/sql"}], "max_cpu_loras": max_cpu_loras}],
                              LORA_NODES, LORA_DEFAULTS, LORA_CLASSES)
    assert plan["errors"] == []
    return plan["models"][0]


def test_lora_slots_come_from_the_model_s_configmap_after_the_runtime_switch():
    model = lora_model(2)
    env = _vllm_container.server_env(model, SETTINGS)
    assert env[-3:] == [
        {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"},
        {"name": "LLMSERVE_LORA_0", "valueFrom": {"configMapKeyRef": {"name": "vllm-llama-lora", "key": "LLMSERVE_LORA_0"}}},
        {"name": "LLMSERVE_LORA_1", "valueFrom": {"configMapKeyRef": {"name": "vllm-llama-lora", "key": "LLMSERVE_LORA_1"}}}]
    # Every $(LLMSERVE_LORA_<i>) of the arguments is a variable of the container (Kubernetes expands it from there).
    slots = [a for a in _vllm_container.server_args(model, 8000) if a.startswith("$(")]
    assert ["$(%s)" % n for n in names(env) if n.startswith("LLMSERVE_LORA_")] == slots


def test_lora_slots_are_in_name_order_as_the_template_sorted_them():
    env = _vllm_container.server_env(lora_model(12), SETTINGS)
    slots = [n for n in names(env) if n.startswith("LLMSERVE_LORA_")]
    assert slots[:4] == ["LLMSERVE_LORA_0", "LLMSERVE_LORA_1", "LLMSERVE_LORA_10", "LLMSERVE_LORA_11"] and len(slots) == 12


def test_no_adapters_no_lora_variables():
    assert not any("LORA" in n for n in names(_vllm_container.server_env(SOLO, SETTINGS)))


ROUTED = dict(SOLO, router_enabled=True, router_policy="cache_aware")
ROUTER = {"port": 8000, "namespace": "llm-serving", "metrics_port": 29000, "extra_args": []}


def test_router_discovers_the_model_s_pods_by_its_selector_in_its_namespace():
    assert _vllm_container.router_args(ROUTED, ROUTER) == [
        "--host", "0.0.0.0", "--port", "8000", "--service-discovery",
        "--selector", "app.kubernetes.io/name=vllm", "llmserve.io/model=qwen-0.5b",
        "--service-discovery-port", "8000", "--service-discovery-namespace", "llm-serving",
        "--policy", "cache_aware", "--prometheus-host", "0.0.0.0", "--prometheus-port", "29000"]


def test_router_selector_is_sorted_by_key_and_extra_args_come_last():
    model = dict(ROUTED, selector={"llmserve.io/model": "m", "App": "x"}, router_policy="round_robin")
    args = _vllm_container.router_args(model, dict(ROUTER, port="8001", extra_args=["--log-level", "debug"]))
    assert args[5:8] == ["--selector", "App=x", "llmserve.io/model=m"]
    assert args[args.index("--policy") + 1] == "round_robin" and args[-2:] == ["--log-level", "debug"]
    assert args[args.index("--service-discovery-port") + 1] == "8001"


@pytest.mark.parametrize("gpus, replicas, autoscaling, strategy", [
    (1, 1, False, {"type": "Recreate"}),
    (2, 1, False, {"type": "Recreate"}),
    (1, 2, False, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    (1, 1, True, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    # Scaled to zero by the catalog: nothing to roll, the next start takes the GPUs afresh.
    (1, 0, False, {"type": "Recreate"}),
    # No GPU (a CPU model): nothing held, several replicas still replace each other (Recreate, as before).
    (0, 3, False, {"type": "Recreate"}),
])
def test_a_replica_on_gpus_never_surges(gpus, replicas, autoscaling, strategy):
    model = dict(SOLO, tensor_parallel_size=gpus, base_replicas=replicas, autoscaling={"enabled": autoscaling})
    assert _vllm_container.rollout_strategy(model) == strategy


@pytest.mark.parametrize("budget, threshold", [(600, 60), (601, 61), (95.5, 10), (10, 1)])
def test_the_startup_probe_waits_the_whole_startup_budget(budget, threshold):
    assert _vllm_container.startup_failure_threshold(dict(SOLO, startup_budget_s=budget)) == threshold


def test_filters_refuse_what_is_not_a_planned_model():
    filters = vllm_container.FilterModule().filters()
    assert set(filters) == {"vllm_server_args", "vllm_server_env", "vllm_router_args", "vllm_rollout_strategy",
                            "vllm_startup_failure_threshold"}
    for name in filters:
        with pytest.raises(AnsibleFilterError, match="planned model"):
            filters[name]("qwen", *([] if name in ("vllm_rollout_strategy", "vllm_startup_failure_threshold")
                                    else [8000] if name == "vllm_server_args" else [{}]))
    assert filters["vllm_server_args"](SOLO, 8000) == _vllm_container.server_args(SOLO, 8000)
