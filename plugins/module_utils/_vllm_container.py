# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The containers of a model's workloads as the vllm_models template writes them: the vLLM server's arguments and
environment, and its vllm-router's arguments (stdlib only).

Every input is an item of llmserve_plan.models plus the role's settings; the template only writes the lists out.
"""

from __future__ import annotations

import math

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _lora, _tracing

# Where the model cache's Hugging Face home is, under the cache's mount point.
HF_HOME_DIR = "huggingface"
# The mounted Hugging Face token (Secret hf_token_secret, key token): a file, never the environment or the arguments.
HF_TOKEN_PATH = "/var/run/secrets/huggingface/token"
# The startup probe's period: it fails after the model's startup budget (weights load, CUDA graphs), not before.
STARTUP_PERIOD_S = 10


def _by_name(key):
    """Sort key of an environment name: case-insensitive, as Jinja's dictsort and sort (what the template used)."""
    return key.lower()


def server_args(model, port=8000, otlp_endpoint=""):
    """`vllm serve` arguments of a planned model, with --otlp-traces-endpoint where tracing is on."""
    args = list(_catalog.vllm_args(model, port))
    if otlp_endpoint:
        args += ["--otlp-traces-endpoint", otlp_endpoint]
    return args


def server_env(model, settings):
    """The vLLM container's env list of a planned model. settings: base_env (vllm_models_env), cache_mount,
    internal_secret (the Secret with key vllm-api-key), otlp_endpoint and tracing (llmserve_plan.tracing).

    Plain variables come first, sorted by name, their values as strings: the role's, the model's extra_env, HF_HOME,
    HF_HUB_OFFLINE for an offline model, the tracing variables where tracing is on. Then the references: the internal
    key (vLLM reads VLLM_API_KEY when --api-key is absent, so no key is in the arguments), the token file's path for a
    model that needs one, and for LoRA the runtime-update switch and one variable per --lora-modules slot, read from
    the model's ConfigMap <k8s name>-lora."""
    plain = dict(settings.get("base_env") or {})
    plain.update(model.get("extra_env") or {})
    plain["HF_HOME"] = "%s/%s" % (settings["cache_mount"], HF_HOME_DIR)
    if model.get("offline"):
        plain["HF_HUB_OFFLINE"] = "1"
    if settings.get("otlp_endpoint"):
        plain.update((e["name"], e["value"]) for e in _tracing.vllm_tracing_env(settings.get("tracing"), model["name"]))
    env = [{"name": key, "value": value if isinstance(value, str) else str(value)}
           for key, value in sorted(plain.items(), key=lambda kv: _by_name(kv[0]))]
    env.append({"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": settings["internal_secret"], "key": "vllm-api-key"}}})
    if model.get("needs_token"):
        env.append({"name": "HF_TOKEN_PATH", "value": HF_TOKEN_PATH})
    slots = _lora.slot_values(model, settings["cache_mount"])
    if slots:
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
        env += [{"name": key, "valueFrom": {"configMapKeyRef": {"name": model["k8s_name"] + "-lora", "key": key}}}
                for key in sorted(slots, key=_by_name)]
    return env


def router_args(model, settings):
    """The vllm-router's arguments of a model with a router. settings: port (the models' port, the router's too),
    namespace, metrics_port, extra_args (vllm_models_router_extra_args, appended as given).

    Regular mode with Kubernetes service discovery: the router finds the model's pods by its selector (key=value,
    sorted by key) in the namespace, on the models' port, and balances over them by its policy."""
    port = str(settings["port"])
    selector = ["%s=%s" % item for item in sorted(model["selector"].items(), key=lambda kv: _by_name(kv[0]))]
    return (["--host", "0.0.0.0", "--port", port, "--service-discovery", "--selector"] + selector
            + ["--service-discovery-port", port, "--service-discovery-namespace", settings["namespace"],
               "--policy", model["router_policy"],
               "--prometheus-host", "0.0.0.0", "--prometheus-port", str(settings["metrics_port"])]
            + list(settings.get("extra_args") or []))


def rollout_strategy(model):
    """The model Deployment's strategy. Several replicas on GPUs (or an HPA's): one replica at a time and never a
    surge pod, since a full GPU node has no GPU for an extra replica. Otherwise Recreate: the new pod needs the GPUs
    the old one holds."""
    autoscaled = bool((model.get("autoscaling") or {}).get("enabled"))
    if model["tensor_parallel_size"] > 0 and (model["base_replicas"] > 1 or autoscaled):
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "Recreate"}


def startup_failure_threshold(model, period_s=STARTUP_PERIOD_S):
    """The startup probe's failureThreshold: enough periods to cover the model's startup budget (rounded up)."""
    return int(math.ceil(model["startup_budget_s"] / float(period_s)))
