# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model catalog: its fields, the validation stage of the plan, and the vLLM arguments of a planned model.

Pure logic, stdlib only. The plan is made in stages that each return new data (_plan.plan_catalog runs them):
validate (here) -> resolve (_resolve.py) -> place (_placement.py) -> size (_model_sizing.py) -> arguments
(vllm_args, here, at render time). Every problem is structured, {index, name, field, problem, fix}, and worded as
a message (message()) that names the catalog field, the bad value and the fix; the caller fails on any of them
before anything changes.
"""

from __future__ import annotations

import difflib
import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora, _shared, _values
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS

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


def is_enabled(entry):
    """The one rule: a catalog entry is enabled unless it says enabled: false."""
    return isinstance(entry, dict) and entry.get("enabled", True) is not False


def _closest(word, choices):
    """The known name a typo most likely meant, or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def problem(index, name, field, text, fix):
    """One catalog problem. index and name: the entry's (None for the catalog as a whole); field: the entry's field."""
    return {"index": index, "name": name, "field": field, "problem": text, "fix": fix}


def subject(item):
    """What a problem is about, as its message names it: llmserve_models[3] (name).field, or llmserve_models."""
    if item["index"] is None:
        return "llmserve_models" + ("." + item["field"] if item["field"] else "")
    return "llmserve_models[%d]%s%s" % (item["index"], " (%s)" % item["name"] if item["name"] else "",
                                        "." + item["field"] if item["field"] else "")


def message(item):
    """The problem as one line: "llmserve_models[3] (name).field: problem. Fix: fix" (llmserve_plan.errors)."""
    if item["index"] is None:
        return "%s %s. Fix: %s" % (subject(item), item["problem"], item["fix"])
    # An entry that is not a mapping has no field: its message keeps the '.' before the colon, as it always did.
    return "%s%s: %s. Fix: %s" % (subject(item), "" if item["field"] else ".", item["problem"], item["fix"])


class Problems(list):
    """The problems a stage finds, in the order it finds them."""

    def add(self, index, name, field, text, fix):
        self.append(problem(index, name, field, text, fix))


def weights_gib(params_b, dtype, quantization):
    return round(params_b * 1e9 * _values.bytes_per_param(dtype, quantization) / GIB, 2)


def _validate_entry(index, entry, problems, cache=_lora.MODEL_CACHE):
    """Checks of the raw entry, added to problems. False when it cannot be resolved (the problems say why)."""
    if not isinstance(entry, dict):
        problems.add(index, None, None, "entry is %r, not a mapping" % (entry,), "write each model as a mapping with at least name and model")
        return False
    name = entry.get("name")
    name = name if isinstance(name, str) and name else None
    for key in sorted(entry, key=str):
        if key not in FIELDS:
            hint = _closest(key, FIELDS)
            problems.add(index, name, key, "unknown field", ("did you mean %s? " % hint if hint else "") + "known fields: " + ", ".join(sorted(FIELDS)))
    if name is None:
        problems.add(index, None, "name", "missing (%r)" % (entry.get("name"),), "give every model a DNS-1123 name such as llama-3.1-8b")
        return False
    if len(name) > MAX_NAME_LEN or not DNS1123_SUBDOMAIN.match(name):
        problems.add(index, name, "name", "%r is not a DNS-1123 name of at most %d characters" % (name, MAX_NAME_LEN),
                     "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit")
    if not isinstance(entry.get("model"), str) or not entry.get("model"):
        problems.add(index, name, "model", "missing model id", "set model to a Hugging Face id such as meta-llama/Llama-3.1-8B-Instruct")
    # The checks above leave the entry plannable (so every problem is reported at once); the ones below do not.
    before = len(problems)
    for field in ("revision", "architecture", "size_class", "quantization", "dtype", "kv_cache_dtype"):
        if entry.get(field) is not None and not isinstance(entry[field], str):
            problems.add(index, name, field, "%r is not a string" % (entry[field],), "quote the value, or leave it unset")
    arch = entry.get("architecture")
    if isinstance(arch, str) and arch not in PRESETS:
        problems.add(index, name, "architecture", "unknown preset %r" % (arch,), "use one of %s, or set params_b" % ", ".join(sorted(PRESETS)))
    if arch is None and entry.get("params_b") is None and entry.get("size_class") is None:
        problems.add(index, name, "architecture", "neither architecture, params_b nor size_class is set",
                     "set architecture to a preset (%s) or params_b to the parameter count in billions" % ", ".join(sorted(PRESETS)))
    params = entry.get("params_b")
    if params is not None and (isinstance(params, bool) or not isinstance(params, (int, float)) or params <= 0):
        problems.add(index, name, "params_b", "%r is not a positive number" % (params,), "give the parameter count in billions, e.g. 8.03")
    if entry.get("role") is not None and entry.get("role") not in ("serve", "guard"):
        problems.add(index, name, "role", "%r is not a role" % (entry["role"],), "use serve (the default) or guard")
    for field in BOOL_FIELDS:
        if field in entry and entry[field] is not None and not isinstance(entry[field], bool):
            problems.add(index, name, field, "%r is not a boolean" % (entry[field],), "write true or false (unquoted)")
    auto = entry.get("autoscaling")
    if auto is not None:
        if not isinstance(auto, dict):
            problems.add(index, name, "autoscaling", "%r is not a mapping" % (auto,), "write autoscaling: {enabled: true, min_replicas: 1, max_replicas: 4}")
        else:
            for key in sorted(auto, key=str):
                if key not in AUTOSCALING_FIELDS:
                    hint = _closest(key, AUTOSCALING_FIELDS)
                    problems.add(index, name, "autoscaling.%s" % key, "unknown field",
                                 ("did you mean %s? " % hint if hint else "") + "known fields: " + ", ".join(AUTOSCALING_FIELDS))
            if "enabled" in auto and not isinstance(auto["enabled"], bool):
                problems.add(index, name, "autoscaling.enabled", "%r is not a boolean" % (auto["enabled"],), "write true or false (unquoted)")
    resources = entry.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            problems.add(index, name, "resources", "%r is not a mapping" % (resources,),
                         "write resources: {requests: {cpu: '8', memory: 32Gi}, limits: {memory: 64Gi}}")
        else:
            for part in sorted(resources, key=str):
                if part not in RESOURCE_FIELDS or not isinstance(resources[part], dict):
                    problems.add(index, name, "resources.%s" % part, "unknown part or not a mapping", "use requests: {cpu, memory} and limits: {memory}")
                    continue
                for key, value in sorted(resources[part].items(), key=lambda kv: str(kv[0])):
                    if key not in RESOURCE_FIELDS[part]:
                        problems.add(index, name, "resources.%s.%s" % (part, key), "unknown resource",
                                     "set only %s here (GPUs come from tensor_parallel_size)" % ", ".join(RESOURCE_FIELDS[part]))
                    elif isinstance(value, bool) or not QUANTITY.match(str(value)):
                        problems.add(index, name, "resources.%s.%s" % (part, key), "%r is not a Kubernetes quantity" % (value,),
                                     "write e.g. '8' or 500m for cpu, 32Gi for memory")
    selector = entry.get("node_selector")
    if selector is not None and (not isinstance(selector, dict)
                                 or not all(isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in selector.items())):
        problems.add(index, name, "node_selector", "%r is not a mapping of label names to values" % (selector,),
                     "write node_selector: {llmserve.io/gpu-product: NVIDIA-L40} (quote values such as 'true')")
    policy = entry.get("router_policy")
    if policy is not None and policy not in ROUTER_POLICIES:
        hint = _closest(policy, ROUTER_POLICIES) if isinstance(policy, str) else None
        problems.add(index, name, "router_policy", "%r is not a vllm-router policy" % (policy,),
                     ("did you mean %s? " % hint if hint else "") + "use one of " + ", ".join(ROUTER_POLICIES))
    elif policy not in (None, "consistent_hash") and entry.get("session_affinity") is True:
        problems.add(index, name, "router_policy", "%r cannot keep a client on one replica (session_affinity is true)" % (policy,),
                     "use router_policy consistent_hash (the default with session_affinity), or set session_affinity false")
    size = entry.get("storage_size")
    if size is not None and not (isinstance(size, str) and QUANTITY.match(size)):
        problems.add(index, name, "storage_size", "%r is not a Kubernetes quantity" % (size,), "write e.g. 100Gi")
    _lora.check_entry(entry, lambda field, problem, fix: problems.add(index, name, field, problem, fix), cache)
    return len(problems) == before


def _check_fields(index, name, spec, classes, problems):
    if spec["dtype"] not in DTYPES:
        problems.add(index, name, "dtype", "unknown dtype %r" % (spec["dtype"],), "use one of " + ", ".join(DTYPES))
    quant = spec["quantization"]
    if quant is not None and quant not in QUANTIZATIONS:
        problems.add(index, name, "quantization", "unknown quantization %r" % (quant,), "use one of %s, or leave it unset" % ", ".join(QUANTIZATIONS))
    if spec["kv_cache_dtype"] not in KV_CACHE_DTYPES:
        problems.add(index, name, "kv_cache_dtype", "unknown value %r" % (spec["kv_cache_dtype"],), "use one of " + ", ".join(KV_CACHE_DTYPES))
    if spec["size_class"] not in classes:
        problems.add(index, name, "size_class", "unknown class %r" % (spec["size_class"],), "use one of " + ", ".join(sorted(classes)))
    for field in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        value = spec[field]
        if value is not None and (not _values.is_int(value) or value < 1):
            problems.add(index, name, field, "%r is not a positive integer" % (value,), "set a whole number of at least 1, or leave it unset")
    gmu = spec["gpu_memory_utilization"]
    if isinstance(gmu, bool) or not isinstance(gmu, (int, float)) or not 0 < gmu <= 1:
        problems.add(index, name, "gpu_memory_utilization", "%r is not in (0, 1]" % (gmu,), "use a share such as 0.9")
    tp = spec["tensor_parallel_size"]
    if not _values.is_int(tp) or tp < 1:
        problems.add(index, name, "tensor_parallel_size", "%r is not a positive integer" % (tp,), "set the GPUs per replica, 1 or more")
    if not _values.is_int(spec["replicas"]) or spec["replicas"] < 0:
        problems.add(index, name, "replicas", "%r is negative or not an integer" % (spec["replicas"],), "set 0 or more replicas")
    auto = spec["autoscaling"]
    if auto["enabled"]:
        lo, hi = auto["min_replicas"], auto["max_replicas"]
        if not (_values.is_int(lo) and _values.is_int(hi) and 1 <= lo <= hi):
            problems.add(index, name, "autoscaling", "min_replicas %r / max_replicas %r: need 1 <= min_replicas <= max_replicas" % (lo, hi),
                         "set autoscaling.min_replicas and autoscaling.max_replicas accordingly")
    if not isinstance(spec["extra_args"], list) or not all(isinstance(a, str) for a in spec["extra_args"]):
        problems.add(index, name, "extra_args", "%r is not a list of strings" % (spec["extra_args"],), "write extra_args: ['--flag', 'value']")
    else:
        for arg in spec["extra_args"]:
            flags = managed_flags(arg)
            if not flags:
                continue
            given = arg.split("=", 1)[0]
            if flags != [given]:
                given += " (vLLM reads it as %s)" % flags[0] if len(flags) == 1 else " (an abbreviation of %s)" % ", ".join(flags)
            what = "makes vLLM read more flags from a file, unchecked" if flags == ["--config"] else "is set by the role"
            fixes = []
            for flag in flags:
                if MANAGED_FLAGS[flag] not in fixes:
                    fixes.append(MANAGED_FLAGS[flag])
            problems.add(index, name, "extra_args", "%s %s" % (given, what), "; or ".join(fixes))
    if not isinstance(spec["extra_env"], dict):
        problems.add(index, name, "extra_env", "%r is not a mapping" % (spec["extra_env"],), "write extra_env: {NAME: value}")
    else:
        for key in sorted(k for k in spec["extra_env"] if k in MANAGED_ENV):
            problems.add(index, name, "extra_env.%s" % key, "is set by the role", MANAGED_ENV[key])


def validate(models, cache=_lora.MODEL_CACHE):
    """Stage 1: checks of the raw catalog (llmserve_models); nothing is changed.

    Returns {entries: [(index, entry)] that can be resolved, problems: each entry's own, in catalog order,
    adapter_problems: the check across entries of the adapters' names, reported after every entry's own}.
    """
    if not isinstance(models, list):
        kind = "a mapping" if isinstance(models, dict) else "a string" if isinstance(models, str) else type(models).__name__
        return {"entries": [], "adapter_problems": [],
                "problems": [problem(None, None, None, "is %s, not a list" % kind,
                                     "write the catalog as a list of mappings, one per model (- name: ...)")]}
    problems, entries, seen = Problems(), [], {}
    for index, entry in enumerate(models):
        valid = _validate_entry(index, entry, problems, cache)
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            continue
        for other, other_index in seen.items():
            if other == name or k8s_name(other) == k8s_name(name):
                problems.add(index, name, "name", "%r clashes with llmserve_models[%d] (%s)" % (name, other_index, other),
                             "give every model a unique name (names that differ only by '.' and '-' clash)")
        seen.setdefault(name, index)
        if valid:
            entries.append((index, entry))
    adapter_problems = Problems()
    _lora.check_names(models, adapter_problems.add)
    return {"entries": entries, "problems": list(problems), "adapter_problems": list(adapter_problems)}


def check_resolved(model, classes):
    """The checks of a resolved model's settings (its entry's values or the defaults, the size class, LoRA slots)."""
    problems = Problems()
    index, name = model["index"], model["name"]
    _check_fields(index, name, model, classes, problems)
    _lora.check_plan(model["lora"], lambda field, text, fix: problems.add(index, name, field, text, fix))
    return list(problems)


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
