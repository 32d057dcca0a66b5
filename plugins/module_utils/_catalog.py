# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model catalog -> a validated deployment plan (defaults, size class, resources, GPU placement).

Pure logic, stdlib only. Every problem is reported as a message that names the catalog field, the bad value
and the fix; the caller fails on any of them before anything changes.
"""

from __future__ import annotations

import difflib
import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora, _shared, _sizing, _values
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS
from ansible_collections.llmserve.k3s.plugins.module_utils._sizing import size_class, startup_budget_s  # noqa: F401  (part of this module's interface)

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_NAME_LEN = 50  # the name is prefixed with "vllm-" for object names, which must stay DNS labels
DTYPES = _values.DTYPES
KV_CACHE_DTYPES = _values.KV_CACHE_DTYPES
QUANTIZATIONS = _values.QUANTIZATIONS
GIB = _shared.GIB

# The catalog's fields: (default, meaning). The one description of them: docs/catalog.md's table is generated from
# this (`make docs`) and a test keeps the two equal; {dtypes}, {quantizations} and {kv_cache_dtypes} are the allowed values.
FIELDS = {
    "name": ("required", "DNS-1123 (lower case, digits, `-`, `.`), at most 50 characters; unique, also after `.` -> `-`. "
             "The served model name, the Ansible tag and `/models/<name>/v1` on the ingress"),
    "model": ("required", "Hugging Face model id (or a path under the model cache)"),
    "enabled": ("`true`", "`false` keeps the entry but deploys nothing, and removes what was deployed"),
    "revision": ("unset", "branch, tag or commit to pin (`--revision`)"),
    "architecture": ("—", "a preset of `plugins/module_utils/_presets.py` (parameters, layers, heads...): sizes the model in full"),
    "params_b": ("from the preset", "parameters in billions, for a model without a preset"),
    "size_class": ("from `params_b`", "`small`, `medium` or `large`, to override the derived class"),
    "gated": ("`false`", "mounts the `hf-token` Secret (`HF_TOKEN_PATH`), unless the models are pre-downloaded"),
    "dtype": ("`bfloat16`", "{dtypes}"),
    "quantization": ("unset", "{quantizations}"),
    "kv_cache_dtype": ("`auto`", "{kv_cache_dtypes}"),
    "max_model_len": ("sizing's recommendation (preset), else vLLM's", "context length vLLM allocates for"),
    "max_num_seqs": ("sizing's recommendation (preset), else vLLM's", "concurrent sequences"),
    "max_num_batched_tokens": ("vLLM's", "tokens per scheduler step"),
    "gpu_memory_utilization": ("`0.9`", "share of each GPU vLLM may use, in (0, 1]"),
    "enable_prefix_caching": ("`true`", "automatic prefix caching"),
    "tensor_parallel_size": ("size class (`gpus`)", "GPUs per replica, all on one node; the pod's `nvidia.com/gpu`"),
    "replicas": ("size class", "replicas; `0` stops the model and frees its GPUs"),
    "autoscaling": ("`{enabled: false}`", "`{enabled, min_replicas, max_replicas, target_waiting}`: an HPA on `vllm_num_requests_waiting`"),
    "session_affinity": ("`false`", "keep a client on one replica: its vllm-router hashes the client address (`router_policy` "
                         "`consistent_hash`)"),
    "router_policy": ("`cache_aware`", "`cache_aware`, `consistent_hash` or `round_robin`: how the vllm-router of a model with several "
                      "replicas picks one"),
    "extra_args": ("`[]`", "more vLLM arguments. A flag the collection sets is refused in any spelling vLLM reads (`_` for `-`, "
                   "`--flag=value`, an abbreviation), with the field to set instead; so are `--api-key` (client keys are "
                   "`llmserve_api_keys`, checked at the gateway) and `--config`"),
    "extra_env": ("`{}`", "more environment variables"),
    "resources": ("size class / sizing", "`{requests: {cpu, memory}, limits: {memory}}`"),
    "node_selector": ("`{}`", "node labels the replicas must run on, added to `llmserve.io/gpu: \"true\"`"),
    "role": ("`serve`", "`serve`, or `guard`: a classifier the gateway asks about prompts and answers (`llmserve_guard`, "
                        "docs/guard.md), planned and deployed like any model, kept out of `/v1/models` unless the policy exposes it"),
    "storage_size": ("`100Gi`", "the model's PVC in storage mode `local-path`"),
    "adapters": ("`[]`", "LoRA adapters served on this model, each `{name, source, revision, rank}`: `name` DNS-1123, unique across "
                 "every model and adapter name (clients send it as `model`); `source` a Hugging Face repository (pinned by "
                 "`revision`, downloaded into the model cache) or a folder under the model cache (`/var/lib/llm-models/...` or "
                 "relative to it); `rank` the adapter's `r` when its `adapter_config.json` is not on disk at render time (else "
                 "16), at most 512. Added or removed ones are loaded or unloaded by `--tags <model>` without a restart"),
    "max_loras": ("min(adapters, 4)", "adapters in one batch on the GPU (`--max-loras`): the LoRA buffers' slots"),
    "max_cpu_loras": ("adapters rounded up to a multiple of 4, plus room for one", "adapters vLLM keeps loaded "
                      "(`--max-cpu-loras`): more adapters than this restarts the pods"),
}
AUTOSCALING_FIELDS = ("enabled", "min_replicas", "max_replicas", "target_waiting")
RESOURCE_FIELDS = {"requests": ("cpu", "memory"), "limits": ("memory",)}
BOOL_FIELDS = ("enabled", "gated", "enable_prefix_caching", "session_affinity")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
# vllm-router policies a catalog entry may choose (--policy); cache_aware sends shared prefixes to the same replica.
ROUTER_POLICIES = ("cache_aware", "consistent_hash", "round_robin")


# vLLM flags the collection sets itself (vllm_args and the model template), with every name vLLM 0.32's parser has for
# them, and the fix for an extra_args entry that sets one again: vLLM takes the last value, so the entry would override
# the plan (or the key).
_ROLE_SETS = "leave it out (the role sets it)"


def _field(name):
    return "set the catalog field %s instead" % name


MANAGED_FLAGS = {
    "--model": _field("model"), "--served-model-name": _field("name"), "--host": _ROLE_SETS, "--port": _ROLE_SETS,
    "--revision": _field("revision"), "--dtype": _field("dtype"), "--quantization": _field("quantization"), "-q": _field("quantization"),
    "--kv-cache-dtype": _field("kv_cache_dtype"), "--max-model-len": _field("max_model_len"), "--max-num-seqs": _field("max_num_seqs"),
    "--max-num-batched-tokens": _field("max_num_batched_tokens"), "--gpu-memory-utilization": _field("gpu_memory_utilization"),
    "--device-memory-utilization": _field("gpu_memory_utilization"),
    "--tensor-parallel-size": _field("tensor_parallel_size"), "-tp": _field("tensor_parallel_size"),
    "--enable-prefix-caching": _field("enable_prefix_caching"), "--no-enable-prefix-caching": _field("enable_prefix_caching"),
    "--api-key": "leave it out: vLLM answers only the gateway, with the cluster's internal key; client API keys are "
                 "llmserve_api_keys, checked at the gateway",
    "--otlp-traces-endpoint": "set llmserve_tracing (docs/tracing.md) instead, for every model",
    "--enable-lora": _field("adapters"), "--no-enable-lora": _field("adapters"), "--lora-modules": _field("adapters"), "--max-lora-rank": _field("adapters"),
    "--max-loras": _field("max_loras"), "--max-cpu-loras": _field("max_cpu_loras"),
    # A YAML file of flags that no check reads: it sets what the command line leaves out, --api-key among them.
    "--config": "write the flags themselves into extra_args, where they are checked",
}
# Environment variables vLLM reads in place of a managed flag (VLLM_API_KEY is --api-key: the internal key).
MANAGED_ENV = {"VLLM_API_KEY": MANAGED_FLAGS["--api-key"]}
_NEGATIVE_NUMBER = re.compile(r"^-[0-9.]")


def vllm_flag(arg):
    """The option an extra_args entry names, as vLLM's parser reads it; None for a value.

    vLLM's FlexibleArgumentParser turns '_' into '-' in a long option's name (up to a '.', which starts a JSON
    sub-key: --compilation-config.level), and argparse reads --flag=value as --flag value (-tp=2 as -tp 2).
    """
    if not isinstance(arg, str) or not arg.startswith("-") or arg in ("-", "--") or _NEGATIVE_NUMBER.match(arg):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].split(".", 1)[0].replace("_", "-")
    return name


def managed_flags(arg):
    """The managed flags an extra_args entry sets, as vLLM's parser reads it; [] for any other entry.

    Besides vllm_flag's spellings, argparse (allow_abbrev, on in vLLM) takes a long option's unique abbreviation
    (--gpu-mem is --gpu-memory-utilization), a prefix of a single-dash option (-t is -tp) and a value stuck to a
    two-character one (-qawq is -q awq). An abbreviation of several managed flags is refused too: vLLM refuses it as
    ambiguous at start-up. No option of vLLM 0.32 is itself a prefix of a managed one, so nothing valid is refused.
    """
    flag = vllm_flag(arg)
    if flag is None:
        return []
    if flag in MANAGED_FLAGS:
        return [flag]
    if flag.startswith("--"):
        return sorted(m for m in MANAGED_FLAGS if m.startswith("--") and m.startswith(flag) and len(flag) > 2)
    return sorted(m for m in MANAGED_FLAGS if not m.startswith("--") and (m.startswith(flag) or (len(m) == 2 and flag.startswith(m))))


def fields_markdown():
    """The Markdown table of the catalog's fields (docs/catalog.md holds it between its fields markers)."""
    values = {"{dtypes}": DTYPES, "{quantizations}": QUANTIZATIONS, "{kv_cache_dtypes}": KV_CACHE_DTYPES}
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for name, (default, meaning) in FIELDS.items():
        for marker, allowed in values.items():
            meaning = meaning.replace(marker, ", ".join("`%s`" % v for v in allowed))
        rows.append("| `%s` | %s | %s |" % (name, default, meaning))
    return "\n".join(rows) + "\n"


def k8s_name(name):
    """Object name of a model: Service names must be DNS-1035 labels (no dots, a letter first)."""
    return "vllm-" + name.replace(".", "-")


def serving(entry, replicas, autoscaling):
    """How the front door reaches a model: several replicas (or an HPA) get one vllm-router in front of them."""
    router = bool(autoscaling) or (_is_int(replicas) and replicas > 1)
    name = k8s_name(entry["name"])
    return {"k8s_name": name, "session_affinity": entry.get("session_affinity") is True, "router_enabled": router,
            "router_policy": entry.get("router_policy") or ("consistent_hash" if entry.get("session_affinity") is True else "cache_aware"),
            "router_name": name + "-router", "backend_service": name + "-router" if router else name}


def _closest(word, choices):
    """The known name a typo most likely meant, or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Errors(list):
    def field(self, index, name, field, problem, fix):
        who = "llmserve_models[%d]" % index + (" (%s)" % name if name else "")
        self.append("%s.%s: %s. Fix: %s" % (who, field, problem, fix))


def weights_gib(params_b, dtype, quantization):
    return round(params_b * 1e9 * _values.bytes_per_param(dtype, quantization) / GIB, 2)


def _validate_entry(index, entry, errors, cache=_lora.MODEL_CACHE):
    """Checks of the raw entry. False when it cannot be resolved (the errors say why)."""
    if not isinstance(entry, dict):
        errors.field(index, None, "", "entry is %r, not a mapping" % (entry,), "write each model as a mapping with at least name and model")
        return False
    name = entry.get("name")
    name = name if isinstance(name, str) and name else None
    for key in sorted(entry, key=str):
        if key not in FIELDS:
            hint = _closest(key, FIELDS)
            errors.field(index, name, key, "unknown field", ("did you mean %s? " % hint if hint else "") + "known fields: " + ", ".join(sorted(FIELDS)))
    if name is None:
        errors.field(index, None, "name", "missing (%r)" % (entry.get("name"),), "give every model a DNS-1123 name such as llama-3.1-8b")
        return False
    if len(name) > MAX_NAME_LEN or not DNS1123_SUBDOMAIN.match(name):
        errors.field(index, name, "name", "%r is not a DNS-1123 name of at most %d characters" % (name, MAX_NAME_LEN),
                     "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit")
    if not isinstance(entry.get("model"), str) or not entry.get("model"):
        errors.field(index, name, "model", "missing model id", "set model to a Hugging Face id such as meta-llama/Llama-3.1-8B-Instruct")
    # The checks above leave the entry plannable (so every problem is reported at once); the ones below do not.
    before = len(errors)
    for field in ("revision", "architecture", "size_class", "quantization", "dtype", "kv_cache_dtype"):
        if entry.get(field) is not None and not isinstance(entry[field], str):
            errors.field(index, name, field, "%r is not a string" % (entry[field],), "quote the value, or leave it unset")
    arch = entry.get("architecture")
    if isinstance(arch, str) and arch not in PRESETS:
        errors.field(index, name, "architecture", "unknown preset %r" % (arch,), "use one of %s, or set params_b" % ", ".join(sorted(PRESETS)))
    if arch is None and entry.get("params_b") is None and entry.get("size_class") is None:
        errors.field(index, name, "architecture", "neither architecture, params_b nor size_class is set",
                     "set architecture to a preset (%s) or params_b to the parameter count in billions" % ", ".join(sorted(PRESETS)))
    params = entry.get("params_b")
    if params is not None and (isinstance(params, bool) or not isinstance(params, (int, float)) or params <= 0):
        errors.field(index, name, "params_b", "%r is not a positive number" % (params,), "give the parameter count in billions, e.g. 8.03")
    if entry.get("role") is not None and entry.get("role") not in ("serve", "guard"):
        errors.field(index, name, "role", "%r is not a role" % (entry["role"],), "use serve (the default) or guard")
    for field in BOOL_FIELDS:
        if field in entry and entry[field] is not None and not isinstance(entry[field], bool):
            errors.field(index, name, field, "%r is not a boolean" % (entry[field],), "write true or false (unquoted)")
    auto = entry.get("autoscaling")
    if auto is not None:
        if not isinstance(auto, dict):
            errors.field(index, name, "autoscaling", "%r is not a mapping" % (auto,), "write autoscaling: {enabled: true, min_replicas: 1, max_replicas: 4}")
        else:
            for key in sorted(auto, key=str):
                if key not in AUTOSCALING_FIELDS:
                    hint = _closest(key, AUTOSCALING_FIELDS)
                    errors.field(index, name, "autoscaling.%s" % key, "unknown field",
                                 ("did you mean %s? " % hint if hint else "") + "known fields: " + ", ".join(AUTOSCALING_FIELDS))
            if "enabled" in auto and not isinstance(auto["enabled"], bool):
                errors.field(index, name, "autoscaling.enabled", "%r is not a boolean" % (auto["enabled"],), "write true or false (unquoted)")
    resources = entry.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            errors.field(index, name, "resources", "%r is not a mapping" % (resources,),
                         "write resources: {requests: {cpu: '8', memory: 32Gi}, limits: {memory: 64Gi}}")
        else:
            for part in sorted(resources, key=str):
                if part not in RESOURCE_FIELDS or not isinstance(resources[part], dict):
                    errors.field(index, name, "resources.%s" % part, "unknown part or not a mapping", "use requests: {cpu, memory} and limits: {memory}")
                    continue
                for key, value in sorted(resources[part].items(), key=lambda kv: str(kv[0])):
                    if key not in RESOURCE_FIELDS[part]:
                        errors.field(index, name, "resources.%s.%s" % (part, key), "unknown resource",
                                     "set only %s here (GPUs come from tensor_parallel_size)" % ", ".join(RESOURCE_FIELDS[part]))
                    elif isinstance(value, bool) or not QUANTITY.match(str(value)):
                        errors.field(index, name, "resources.%s.%s" % (part, key), "%r is not a Kubernetes quantity" % (value,),
                                     "write e.g. '8' or 500m for cpu, 32Gi for memory")
    selector = entry.get("node_selector")
    if selector is not None and (not isinstance(selector, dict)
                                 or not all(isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in selector.items())):
        errors.field(index, name, "node_selector", "%r is not a mapping of label names to values" % (selector,),
                     "write node_selector: {llmserve.io/gpu-product: NVIDIA-L40} (quote values such as 'true')")
    policy = entry.get("router_policy")
    if policy is not None and policy not in ROUTER_POLICIES:
        hint = _closest(policy, ROUTER_POLICIES) if isinstance(policy, str) else None
        errors.field(index, name, "router_policy", "%r is not a vllm-router policy" % (policy,),
                     ("did you mean %s? " % hint if hint else "") + "use one of " + ", ".join(ROUTER_POLICIES))
    elif policy not in (None, "consistent_hash") and entry.get("session_affinity") is True:
        errors.field(index, name, "router_policy", "%r cannot keep a client on one replica (session_affinity is true)" % (policy,),
                     "use router_policy consistent_hash (the default with session_affinity), or set session_affinity false")
    size = entry.get("storage_size")
    if size is not None and not (isinstance(size, str) and QUANTITY.match(size)):
        errors.field(index, name, "storage_size", "%r is not a Kubernetes quantity" % (size,), "write e.g. 100Gi")
    _lora.check_entry(entry, lambda field, problem, fix: errors.field(index, name, field, problem, fix), cache)
    return len(errors) == before


def _check_fields(index, name, spec, classes, errors):
    if spec["dtype"] not in DTYPES:
        errors.field(index, name, "dtype", "unknown dtype %r" % (spec["dtype"],), "use one of " + ", ".join(DTYPES))
    quant = spec["quantization"]
    if quant is not None and quant not in QUANTIZATIONS:
        errors.field(index, name, "quantization", "unknown quantization %r" % (quant,), "use one of %s, or leave it unset" % ", ".join(QUANTIZATIONS))
    if spec["kv_cache_dtype"] not in KV_CACHE_DTYPES:
        errors.field(index, name, "kv_cache_dtype", "unknown value %r" % (spec["kv_cache_dtype"],), "use one of " + ", ".join(KV_CACHE_DTYPES))
    if spec["size_class"] not in classes:
        errors.field(index, name, "size_class", "unknown class %r" % (spec["size_class"],), "use one of " + ", ".join(sorted(classes)))
    for field in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        value = spec[field]
        if value is not None and (not _is_int(value) or value < 1):
            errors.field(index, name, field, "%r is not a positive integer" % (value,), "set a whole number of at least 1, or leave it unset")
    gmu = spec["gpu_memory_utilization"]
    if isinstance(gmu, bool) or not isinstance(gmu, (int, float)) or not 0 < gmu <= 1:
        errors.field(index, name, "gpu_memory_utilization", "%r is not in (0, 1]" % (gmu,), "use a share such as 0.9")
    tp = spec["tensor_parallel_size"]
    if not _is_int(tp) or tp < 1:
        errors.field(index, name, "tensor_parallel_size", "%r is not a positive integer" % (tp,), "set the GPUs per replica, 1 or more")
    if not _is_int(spec["replicas"]) or spec["replicas"] < 0:
        errors.field(index, name, "replicas", "%r is negative or not an integer" % (spec["replicas"],), "set 0 or more replicas")
    auto = spec["autoscaling"]
    if auto["enabled"]:
        lo, hi = auto["min_replicas"], auto["max_replicas"]
        if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi):
            errors.field(index, name, "autoscaling", "min_replicas %r / max_replicas %r: need 1 <= min_replicas <= max_replicas" % (lo, hi),
                         "set autoscaling.min_replicas and autoscaling.max_replicas accordingly")
    if not isinstance(spec["extra_args"], list) or not all(isinstance(a, str) for a in spec["extra_args"]):
        errors.field(index, name, "extra_args", "%r is not a list of strings" % (spec["extra_args"],), "write extra_args: ['--flag', 'value']")
    else:
        for arg in spec["extra_args"]:
            flags = managed_flags(arg)
            if not flags:
                continue
            given = arg.split("=", 1)[0]
            if flags != [given]:
                given += " (vLLM reads it as %s)" % flags[0] if len(flags) == 1 else " (an abbreviation of %s)" % ", ".join(flags)
            problem = "makes vLLM read more flags from a file, unchecked" if flags == ["--config"] else "is set by the role"
            fixes = []
            for flag in flags:
                if MANAGED_FLAGS[flag] not in fixes:
                    fixes.append(MANAGED_FLAGS[flag])
            errors.field(index, name, "extra_args", "%s %s" % (given, problem), "; or ".join(fixes))
    if not isinstance(spec["extra_env"], dict):
        errors.field(index, name, "extra_env", "%r is not a mapping" % (spec["extra_env"],), "write extra_env: {NAME: value}")
    else:
        for key in sorted(k for k in spec["extra_env"] if k in MANAGED_ENV):
            errors.field(index, name, "extra_env.%s" % key, "is set by the role", MANAGED_ENV[key])


def _resolve(entry, defaults, classes, predownload, cache=_lora.MODEL_CACHE, local_cache=None):
    spec = dict(defaults)
    spec.update({k: v for k, v in entry.items() if v is not None or k == "quantization"})
    arch = PRESETS.get(entry.get("architecture") or "", {})
    params_b = entry.get("params_b") if entry.get("params_b") is not None else arch.get("params_b")
    spec["params_b"] = params_b
    spec["size_class"] = entry.get("size_class") or (size_class(float(params_b)) if params_b is not None else "medium")
    cls = classes.get(spec["size_class"], {})
    spec["enabled"] = entry.get("enabled") is not False
    spec["k8s_name"] = k8s_name(entry["name"])
    spec.setdefault("quantization", None)
    spec["tensor_parallel_size"] = entry.get("tensor_parallel_size", cls.get("gpus", 1))
    spec["replicas"] = entry.get("replicas", cls.get("replicas", 1))
    auto = dict(enabled=False, min_replicas=None, max_replicas=None, target_waiting=defaults.get("autoscaling_target_waiting", 5))
    auto.update(entry.get("autoscaling") or {})
    if auto["enabled"]:
        auto["min_replicas"] = auto["min_replicas"] if auto["min_replicas"] is not None else spec["replicas"]
        auto["max_replicas"] = auto["max_replicas"] if auto["max_replicas"] is not None else auto["min_replicas"]
    spec["autoscaling"] = auto
    resources = {"requests": {"cpu": str(cls.get("cpu", "4")), "memory": cls.get("memory", "16Gi")},
                 "limits": {"memory": cls.get("memory_limit", "32Gi")}}
    for part in ("requests", "limits"):
        resources[part].update(((entry.get("resources") or {}).get(part) or {}))
    spec["resources"] = resources
    spec["extra_args"] = entry.get("extra_args", [])
    spec["extra_env"] = entry.get("extra_env", {})
    spec["node_selector"] = entry.get("node_selector", {})
    spec["gated"] = bool(entry.get("gated", False))
    spec["session_affinity"] = bool(entry.get("session_affinity", False))
    spec["role"] = entry.get("role") or "serve"
    if params_b is not None:
        spec["weights_gib"] = weights_gib(float(params_b), spec["dtype"], spec["quantization"])
    else:
        spec["weights_gib"] = None
    spec["startup_budget_s"] = startup_budget_s(spec["weights_gib"] or 16.0, not predownload)
    tp = spec["tensor_parallel_size"] if _is_int(spec["tensor_parallel_size"]) else 1
    spec["shm_size"] = _values.shm_size(tp)
    spec["base_replicas"] = auto["min_replicas"] if auto["enabled"] else spec["replicas"]
    spec.update(serving(entry, spec["replicas"], auto["enabled"]))
    spec["placement"] = []
    spec["lora"] = _lora.plan(entry, cache, local_cache, predownload)
    for field in ("adapters", "max_loras", "max_cpu_loras"):
        spec.pop(field, None)
    return spec


def _matches(selector, labels):
    return all(str(labels.get(k)) == str(v) for k, v in (selector or {}).items())


def _check_fit(plans, nodes, errors):
    """One replica must fit one node: its GPUs (tensor parallelism stays on a node) and, for a model without an
    architecture preset, its weights in their memory."""
    for plan in (p for p in plans if p["enabled"]):
        index, name, tp = plan["index"], plan["name"], plan["tensor_parallel_size"]
        matching = [n for n in nodes if _matches(plan["node_selector"], n.get("labels") or {})]
        largest = max([int(n.get("gpu_count") or 0) for n in matching] or [0])
        if tp > largest:
            errors.field(index, name, "tensor_parallel_size",
                         "%d GPUs per replica, but the largest node%s has %d (a replica runs on one node)"
                         % (tp, " matching node_selector %s" % plan["node_selector"] if plan["node_selector"] else "", largest),
                         "set tensor_parallel_size to %d or less, change node_selector, or add GPUs (llmserve_gpu_count)" % largest
                         if largest else "add a GPU node (llmserve_gpu_count) or change node_selector")
            continue
        # Models with an architecture preset are sized in full (weights, KV cache, activations) by _size.
        memory = [float(n["gpu_memory_gib"]) for n in matching
                  if n.get("gpu_memory_gib") and int(n.get("gpu_count") or 0) >= tp]
        if plan["weights_gib"] and memory and plan.get("architecture") not in PRESETS:
            usable = max(memory) * plan["gpu_memory_utilization"]
            if plan["weights_gib"] / tp > usable:
                errors.field(index, name, "tensor_parallel_size",
                             "the weights (%.1f GiB) over %d GPU(s) need %.1f GiB per GPU, more than the %.1f GiB usable "
                             "(%.2f GiB x gpu_memory_utilization %s)"
                             % (plan["weights_gib"], tp, plan["weights_gib"] / tp, usable, max(memory), plan["gpu_memory_utilization"]),
                             "raise tensor_parallel_size, or use a quantized build (quantization: awq, fp8, ...)")


def _place(plans, nodes, errors):
    """First-fit-decreasing of every replica's GPUs onto one node each; caps HPA maxima at what is left."""
    free = {n["name"]: int(n.get("gpu_count") or 0) for n in nodes}
    labels = {n["name"]: n.get("labels") or {} for n in nodes}
    todo = sorted((p for p in plans if p["enabled"]), key=lambda p: (-p["tensor_parallel_size"], p["name"]))
    for plan in todo:
        plan["placement"] = []
        tp = plan["tensor_parallel_size"]
        for replica in range(plan["base_replicas"]):
            fits = [n for n in free if free[n] >= tp and _matches(plan["node_selector"], labels[n])]
            if not fits:
                errors.field(
                    plan["index"], plan["name"], "replicas",
                    "replica %d needs %d GPU(s) on one node%s, but free GPUs per node are %s "
                    "(the enabled catalog asks for %d GPUs, the nodes have %d)"
                    % (replica + 1, tp, " matching node_selector %s" % plan["node_selector"] if plan["node_selector"] else "",
                       ", ".join("%s=%d" % kv for kv in sorted(free.items())) or "none (no nodes)",
                       sum(p["tensor_parallel_size"] * p["base_replicas"] for p in todo),
                       sum(int(n.get("gpu_count") or 0) for n in nodes)),
                    "lower replicas or tensor_parallel_size, disable a model (enabled: false), or add GPUs (llmserve_gpu_count)")
                break
            best = min(fits, key=lambda n: (free[n], n))
            free[best] -= tp
            plan["placement"].append(best)
    for plan in todo:
        auto = plan["autoscaling"]
        if auto["enabled"]:
            tp = plan["tensor_parallel_size"]
            room = sum(free[n] // tp for n in free if _matches(plan["node_selector"], labels[n]))
            auto["max_replicas_requested"] = auto["max_replicas"]
            auto["max_replicas"] = max(auto["min_replicas"], min(auto["max_replicas"], auto["min_replicas"] + room))
    return free


def _gpu_of(plan, nodes):
    """The GPU the model runs on: of the nodes it is placed on, else of the GPU nodes it may run on; the smallest."""
    by_name = {n["name"]: n for n in nodes}
    candidates = [by_name[n] for n in plan.get("placement") or [] if n in by_name]
    if not candidates:
        candidates = [n for n in nodes if int(n.get("gpu_count") or 0) and _matches(plan["node_selector"], n.get("labels") or {})]
    candidates = [n for n in candidates if n.get("gpu_memory_gib") or n.get("gpu_name")]
    if not candidates:
        return None
    node = min(candidates, key=lambda n: (float(n.get("gpu_memory_gib") or 0), n["name"]))
    return node


def _memory_gi(text):
    match = re.match(r"^(\d+(?:\.\d+)?)Gi$", str(text))
    return float(match.group(1)) if match else None


# Quantizations applied while vLLM loads a 16-bit checkpoint: the checkpoint's size on disk is not their weights.
_ONLINE_QUANT = ("fp8", "bitsandbytes", "experts_int8")


def _apply_measured(plan, measured):
    """Weights measured on the host (model_storage's llmserve_model_sizes) replace the estimate from params_b."""
    gib = (measured or {}).get(plan["name"])
    if gib and plan.get("quantization") not in _ONLINE_QUANT:
        plan["weights_gib"] = gib
        plan["weights_measured"] = True


def _size(plans, models, nodes, predownload, errors):
    """Size every enabled model with an architecture preset on the GPU of its nodes (gpu_sizing's model).

    Unset max_model_len / max_num_seqs get the recommended values; the startup budget, /dev/shm and the memory
    request (never below the size class) come from the sizing; a model that cannot fit is an error naming the field.
    """
    for plan in plans:
        plan["sizing"] = None
        if not plan["enabled"] or plan.get("architecture") not in PRESETS:
            continue
        node = _gpu_of(plan, nodes)
        if node is None:
            continue
        entry = models[plan["index"]]
        preset = {"model_preset": plan["architecture"]}
        if plan.get("weights_measured"):
            preset = {"model": dict(PRESETS[plan["architecture"]], weights_gib=plan["weights_gib"])}
        dtype = "bfloat16" if plan["dtype"] == "auto" else plan["dtype"]
        lora_gib = 0.0
        if plan["lora"]:
            lora = plan["lora"]
            lora_gib = _lora.lora_bytes(PRESETS[plan["architecture"]], lora["max_lora_rank"], lora["max_loras"],
                                        _values.DTYPE_BYTES.get(dtype, 2), plan["tensor_parallel_size"]) / float(GIB)
            lora["gpu_gib"] = round(lora_gib, 3)
        try:
            result = _sizing.size(
                dtype=dtype, lora_gib=lora_gib,
                quantization=plan["quantization"], kv_cache_dtype=plan["kv_cache_dtype"],
                gpu_memory_gib=node.get("gpu_memory_gib"), gpu_name=node.get("gpu_name") or None,
                tensor_parallel_size=plan["tensor_parallel_size"], gpu_memory_utilization=plan["gpu_memory_utilization"],
                max_model_len=plan["max_model_len"], max_num_seqs=plan["max_num_seqs"],
                max_num_batched_tokens=plan["max_num_batched_tokens"], download=not predownload, **preset)
        except _sizing.SizingError as exc:
            errors.field(plan["index"], plan["name"], "architecture", "cannot be sized on %s (%s)" % (node["name"], exc),
                         "correct the entry or the node's GPU facts (llmserve_gpu_name / llmserve_gpu_memory_gib)")
            continue
        rec = result["recommended"]
        gpu = "%s (%s GiB, node %s)" % (node.get("gpu_name") or "GPU", node.get("gpu_memory_gib"), node["name"])
        if not result["fits"]:
            field = "max_model_len" if result["kv_cache_gib"] > 0 else "tensor_parallel_size"
            errors.field(plan["index"], plan["name"], field,
                         "does not fit on %s with tensor_parallel_size %d: %s" % (gpu, plan["tensor_parallel_size"], "; ".join(result["reasons"])),
                         (", or ".join(result["suggestions"]) or "use a larger GPU") + " (gpu_sizing's estimate, see docs/sizing.md)")
        if plan["max_model_len"] is None and rec["max_model_len"]:
            plan["max_model_len"] = rec["max_model_len"]
        if plan["max_num_seqs"] is None:
            plan["max_num_seqs"] = rec["max_num_seqs"]
        plan["weights_gib"] = round(result["weights_gib"] * plan["tensor_parallel_size"], 2)
        plan["startup_budget_s"] = rec["startup_budget_s"]
        plan["shm_size"] = rec["shm_size"]
        wanted = (entry.get("resources") or {})
        for part, key, value in (("requests", "memory", rec["memory_request"]), ("limits", "memory", rec["memory_limit"])):
            if key in (wanted.get(part) or {}):
                continue
            current = _memory_gi(plan["resources"][part][key])
            if current is None or _memory_gi(value) > current:
                plan["resources"][part][key] = value
        kept = ("weights_gib", "activation_gib", "non_torch_gib", "lora_gib", "kv_cache_gib", "kv_bytes_per_token", "kv_cache_tokens",
                "max_concurrency", "fits", "gpu")
        plan["sizing"] = dict((k, result[k]) for k in kept)
        plan["sizing"]["node"] = node["name"]


def _share_sliced_gpus(plans, nodes, errors):
    """Models on time-sliced GPUs (N slices a GPU) take 1/N of the physical GPU.

    The nodes already show N times the GPUs with 1/N of the memory each, which placement and sizing used; vLLM's
    --gpu-memory-utilization is a share of the whole physical GPU, so it is divided by N. Tensor parallelism over
    slices could put two ranks on one physical GPU: that is an error.
    """
    slices_of = {n["name"]: int(n.get("gpu_slices") or 1) for n in nodes}
    for plan in plans:
        slices = max([slices_of.get(n, 1) for n in plan.get("placement") or []] or [1])
        plan["gpu_slices"] = slices
        if slices <= 1:
            continue
        if plan["tensor_parallel_size"] > 1:
            errors.field(plan["index"], plan["name"], "tensor_parallel_size",
                         "%d on time-sliced GPUs (llmserve_gpu_time_slicing_replicas %d): ranks could share one physical GPU"
                         % (plan["tensor_parallel_size"], slices),
                         "use tensor_parallel_size 1 on time-sliced nodes, or turn time-slicing off")
        plan["gpu_memory_utilization"] = round(plan["gpu_memory_utilization"] / slices, 4)


def plan_catalog(models, nodes, defaults, classes, predownload=False, measured=None, cache=_lora.MODEL_CACHE, local_cache=None):
    """Validate and resolve the catalog. Returns a dict with models (all, enabled or not), errors and GPU totals.

    measured: {model name: weights GiB} measured on the hosts; they replace the estimate from params_b.
    cache: the model cache's path on the hosts; local_cache: the same cache where this process can read it (adapters'
    adapter_config.json), or None.
    """
    errors = _Errors()
    if not isinstance(models, list):
        kind = "a mapping" if isinstance(models, dict) else "a string" if isinstance(models, str) else type(models).__name__
        return {"models": [], "errors": ["llmserve_models is %s, not a list. Fix: write the catalog as a list of mappings, "
                                         "one per model (- name: ...)" % kind]}
    plans, seen = [], {}
    for index, entry in enumerate(models):
        valid = _validate_entry(index, entry, errors, cache)
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            continue
        for other, other_index in seen.items():
            if other == name or k8s_name(other) == k8s_name(name):
                errors.field(index, name, "name", "%r clashes with llmserve_models[%d] (%s)" % (name, other_index, other),
                             "give every model a unique name (names that differ only by '.' and '-' clash)")
        seen.setdefault(name, index)
        if not valid:
            continue
        spec = _resolve(entry, defaults, classes, predownload, cache, local_cache)
        _check_fields(index, name, spec, classes, errors)
        _lora.check_plan(spec["lora"], lambda field, problem, fix, i=index, n=name: errors.field(i, n, field, problem, fix))
        spec["index"] = index
        _apply_measured(spec, measured)
        plans.append(spec)
    _lora.check_names(models, errors.field)
    if not errors:
        _check_fit(plans, nodes, errors)
    free = {}
    if not errors:
        free = _place(plans, nodes, errors)
        _size(plans, models, nodes, predownload, errors)
        _share_sliced_gpus(plans, nodes, errors)
    total = sum(int(n.get("gpu_count") or 0) for n in nodes)
    used = total - sum(free.values()) if free else 0
    return {
        "models": plans,
        "enabled": [p["name"] for p in plans if p["enabled"]],
        "errors": list(errors),
        "gpus_total": total,
        "gpus_used": used,
        "nodes": [dict(n, gpus_free=free.get(n["name"], 0)) for n in nodes],
    }


def vllm_args(plan, port=8000):
    """The vLLM server's arguments for one planned model (image entrypoint: `vllm serve`)."""
    args = [plan["model"], "--served-model-name", plan["name"], "--host", "0.0.0.0", "--port", str(port)]
    if plan.get("revision"):
        args += ["--revision", str(plan["revision"])]
    args += ["--dtype", plan["dtype"]]
    if plan.get("quantization"):
        args += ["--quantization", plan["quantization"]]
    if plan.get("kv_cache_dtype", "auto") != "auto":
        args += ["--kv-cache-dtype", plan["kv_cache_dtype"]]
    for field in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        if plan.get(field) is not None:
            args += ["--" + field.replace("_", "-"), str(plan[field])]
    args += ["--gpu-memory-utilization", str(plan["gpu_memory_utilization"])]
    args += ["--tensor-parallel-size", str(plan["tensor_parallel_size"])]
    args.append("--enable-prefix-caching" if plan.get("enable_prefix_caching", True) else "--no-enable-prefix-caching")
    return args + _lora.args(plan) + list(plan.get("extra_args") or [])
