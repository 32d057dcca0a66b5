# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LoRA adapters of a catalog entry: checks, vLLM's LoRA settings and arguments, their GPU memory, and what a re-run
loads, unloads or restarts (stdlib only).

How an adapter reaches vLLM without a restart: the Deployment's arguments name one `--lora-modules` slot per
`--max-cpu-loras` (`$(LLMSERVE_LORA_<i>)`, which Kubernetes expands from the container's environment), and each
slot's value comes from the model's ConfigMap `<k8s name>-lora` (an adapter's JSON, or "" for a free slot, which vLLM
skips). Adding or removing an adapter changes the ConfigMap only: running pods keep running and get it through
`/v1/load_lora_adapter`; a pod started later reads it from its environment. A change of the LoRA flags themselves
(a larger rank, more adapters than slots) changes the arguments, and the pods roll.
"""

from __future__ import annotations

import json
import os
import posixpath
import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _values

# vLLM 0.32, vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]; max_lora_rank defaults to 16.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_RANK = 16
MAX_LORAS_DEFAULT = 4
MODEL_CACHE = "/var/lib/llm-models"
ADAPTER_FIELDS = ("name", "source", "revision", "rank")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SLOT_ENV = "LLMSERVE_LORA_%d"
# Where a Hugging Face adapter is downloaded, under the model cache (model_storage): one folder per adapter name.
HF_ADAPTER_DIR = "adapters"

# The vLLM model class of each architecture preset (its Hugging Face config's `architectures`), and the classes of
# vLLM 0.32 that implement SupportsLoRA (vllm/model_executor/models/<file>.py: `class X(..., SupportsLoRA, ...)`;
# MistralForCausalLM and Phi3ForCausalLM inherit it from LlamaForCausalLM, DeepseekV3ForCausalLM from DeepseekV2).
# FalconForCausalLM (falcon.py: `class FalconForCausalLM(nn.Module, SupportsPP)`) does not: vLLM refuses
# --enable-lora for it at start-up.
PRESET_CLASSES = {
    "llama-3.1-8b": "LlamaForCausalLM", "llama-3-8b": "LlamaForCausalLM", "llama-3.1-70b": "LlamaForCausalLM",
    "llama-3.3-70b": "LlamaForCausalLM", "mixtral-8x7b": "MixtralForCausalLM", "mistral-7b": "MistralForCausalLM",
    "deepseek-coder-v2-lite": "DeepseekV2ForCausalLM", "deepseek-v2-lite": "DeepseekV2ForCausalLM",
    "qwen2.5-7b": "Qwen2ForCausalLM", "qwen2.5-14b": "Qwen2ForCausalLM", "qwen2.5-32b": "Qwen2ForCausalLM",
    "qwen2.5-72b": "Qwen2ForCausalLM", "deepseek-r1-distill-qwen-14b": "Qwen2ForCausalLM",
    "qwen3-0.6b": "Qwen3ForCausalLM", "qwen3-32b": "Qwen3ForCausalLM", "qwen3-14b": "Qwen3ForCausalLM",
    "qwen3-8b": "Qwen3ForCausalLM", "qwen3-30b-a3b": "Qwen3MoeForCausalLM", "qwen3-235b-a22b": "Qwen3MoeForCausalLM",
    "phi-3-mini": "Phi3ForCausalLM", "phi-4": "Phi3ForCausalLM", "gemma-2-9b": "Gemma2ForCausalLM",
    "gemma-2-27b": "Gemma2ForCausalLM", "mistral-small-3.2-24b": "Mistral3ForConditionalGeneration",
    "deepseek-r1": "DeepseekV3ForCausalLM", "gpt-oss-20b": "GptOssForCausalLM", "gpt-oss-120b": "GptOssForCausalLM",
    "falcon-7b": "FalconForCausalLM",
}
LORA_CLASSES = frozenset((
    "LlamaForCausalLM", "MixtralForCausalLM", "MistralForCausalLM", "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM",
    "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM",
    "Mistral3ForConditionalGeneration", "GptOssForCausalLM"))
# vLLM runs a pooling model (embeddings, scores) without a sampler: the catalog's adapters are for generation.
POOLING_FLAGS = ("--runner", "--convert", "--task")


def is_dns_label(name):
    """A Kubernetes name of one DNS-1123 label: lower-case letters, digits and '-', at most 63 characters."""
    return isinstance(name, str) and len(name) <= 63 and DNS1123_LABEL.match(name) is not None


def round_rank(rank):
    """The smallest rank vLLM accepts for --max-lora-rank at or above rank (None above the largest)."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    return None


def cache_relative(source, cache=MODEL_CACHE):
    """The folder of a local source relative to the model cache, or None for a Hugging Face repository.

    A source starting with '/' or './' is a folder: it must lie under the cache (checked by check_entry)."""
    if source.startswith("/"):
        rel = posixpath.relpath(posixpath.normpath(source), cache)
        return rel
    if HF_REPO.match(source) and not source.startswith("./"):
        return None
    return posixpath.normpath(source)


def adapter_folder(adapter, cache=MODEL_CACHE):
    """The adapter's folder relative to the model cache: its own folder, or where model_storage downloads it."""
    rel = cache_relative(adapter["source"], cache)
    return rel if rel is not None else posixpath.join(HF_ADAPTER_DIR, adapter["name"])


def _pooling(extra_args):
    for index, arg in enumerate(extra_args or []):
        if not isinstance(arg, str):
            continue
        flag, dummy, value = arg.partition("=")
        if flag.replace("_", "-") in POOLING_FLAGS:
            value = value or (extra_args[index + 1] if index + 1 < len(extra_args) else "")
            if str(value) in ("pooling", "embed", "embedding", "classify", "score", "reward"):
                return "%s %s" % (flag, value)
    return None


def check_entry(entry, report, cache=MODEL_CACHE):
    """Checks of one catalog entry's adapters, max_loras and max_cpu_loras. report(field, problem, fix)."""
    adapters = entry.get("adapters")
    for field in ("max_loras", "max_cpu_loras"):
        value = entry.get(field)
        if value is not None and (not _values.is_int(value) or value < 1):
            report(field, "%r is not a positive integer" % (value,), "set a whole number of at least 1, or leave it unset")
    if adapters is None:
        return
    if not isinstance(adapters, list):
        report("adapters", "%r is not a list" % (adapters,), "write adapters: [{name: my-adapter, source: org/my-lora}]")
        return
    arch = entry.get("architecture")
    cls = PRESET_CLASSES.get(arch) if isinstance(arch, str) else None
    if adapters and cls and cls not in LORA_CLASSES:
        report("adapters", "architecture %s (vLLM's %s) has no LoRA support in vLLM 0.32 (it does not implement SupportsLoRA)"
               % (arch, cls), "serve the fine-tuned model as a model of its own (merge the adapter into the weights), or remove adapters")
    pooling = _pooling(entry.get("extra_args") if isinstance(entry.get("extra_args"), list) else [])
    if adapters and pooling:
        report("adapters", "the model runs as a pooling model (extra_args %s): adapters are served for generation" % pooling,
               "remove adapters, or serve the model for generation")
    for i, adapter in enumerate(adapters):
        where = "adapters[%d]" % i
        if not isinstance(adapter, dict):
            report(where, "%r is not a mapping" % (adapter,), "write {name: my-adapter, source: org/my-lora}")
            continue
        for key in sorted(adapter, key=str):
            if key not in ADAPTER_FIELDS:
                report("%s.%s" % (where, key), "unknown field", "known fields: " + ", ".join(ADAPTER_FIELDS))
        name = adapter.get("name")
        if not is_dns_label(name):
            report(where + ".name", "%r is not a DNS-1123 label" % (name,),
                   "use lower-case letters, digits and '-' (at most 63), starting and ending with a letter or digit")
        source = adapter.get("source")
        if not isinstance(source, str) or not source:
            report(where + ".source", "missing (%r)" % (source,),
                   "set source to a Hugging Face repository (org/name) or a folder under %s" % cache)
        else:
            rel = cache_relative(source, cache)
            if rel is not None and (rel == "." or rel == ".." or rel.startswith("../")):
                report(where + ".source", "%r is not a folder under the model cache %s" % (source, cache),
                       "copy the adapter under %s (e.g. %s/adapters/<name>) and name that folder" % (cache, cache))
            if rel is not None and adapter.get("revision") is not None:
                report(where + ".revision", "set for a folder source %r" % (source,), "leave revision out: it pins a Hugging Face repository")
        if adapter.get("revision") is not None and not isinstance(adapter["revision"], str):
            report(where + ".revision", "%r is not a string" % (adapter["revision"],), "quote the branch, tag or commit")
        rank = adapter.get("rank")
        if rank is not None and (not _values.is_int(rank) or rank < 1 or rank > LORA_RANKS[-1]):
            report(where + ".rank", "%r is not a rank vLLM accepts (a whole number from 1 to %d, --max-lora-rank)" % (rank, LORA_RANKS[-1]),
                   "give the adapter's r from its adapter_config.json, at most %d" % LORA_RANKS[-1])


def check_names(entries, report):
    """Adapter names are model names to clients: unique across every model and adapter name. report(index, model, field, ...)."""
    owner = {}
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            owner.setdefault(entry["name"], ("llmserve_models[%d].name" % index))
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("adapters"), list):
            continue
        for i, adapter in enumerate(entry["adapters"]):
            name = adapter.get("name") if isinstance(adapter, dict) else None
            if not isinstance(name, str):
                continue
            here = "llmserve_models[%d].adapters[%d].name" % (index, i)
            if name in owner:
                report(index, entry.get("name"), "adapters[%d].name" % i, "%r clashes with %s" % (name, owner[name]),
                       "give the adapter a name no model or other adapter has (clients send it as model)")
            else:
                owner[name] = here


def read_rank(folder):
    """r of the adapter_config.json in folder (on this machine), or None when it is not there or not readable."""
    try:
        with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as handle:
            rank = json.load(handle).get("r")
    except (OSError, ValueError, AttributeError):
        return None
    return rank if _values.is_int(rank) and rank > 0 else None


def default_max_cpu_loras(count):
    """Adapters vLLM keeps loaded (--max-cpu-loras), when the catalog does not say: the number of adapters rounded up
    to a multiple of 4, with room for one more, so an adapter added later is loaded into the running pods."""
    return 4 * (count // 4 + 1)


def plan(entry, cache=MODEL_CACHE, local_cache=None, predownload=True):
    """The LoRA part of a model's plan: {} without adapters, else {adapters, max_lora_rank, max_loras, max_cpu_loras}.

    local_cache: where the model cache is on this machine (the controller), to read each adapter's rank from its
    adapter_config.json at render time; an adapter not there takes the catalog's rank, else 16. predownload: a Hugging
    Face adapter is in the cache (model_storage downloads it to adapters/<name>); else vLLM fetches it by its id."""
    adapters = entry.get("adapters") or []
    if not adapters:
        return {}
    out = []
    for adapter in adapters:
        download = cache_relative(adapter["source"], cache) is None
        folder = adapter_folder(adapter, cache) if predownload or not download else None
        found = read_rank(os.path.join(local_cache, folder)) if local_cache and folder else None
        rank = found or adapter.get("rank") or DEFAULT_RANK
        out.append({"name": adapter["name"], "source": adapter["source"], "revision": adapter.get("revision"),
                    "folder": folder, "rank": rank, "rank_from": "adapter_config.json" if found else
                    "catalog" if adapter.get("rank") else "default",
                    "download": download})
    max_cpu = entry.get("max_cpu_loras") or default_max_cpu_loras(len(out))
    max_loras = entry.get("max_loras") or min(len(out), MAX_LORAS_DEFAULT, max_cpu)
    return {"adapters": out, "max_lora_rank": round_rank(max(a["rank"] for a in out)) or LORA_RANKS[-1],
            "max_loras": max_loras, "max_cpu_loras": max(max_cpu, max_loras)}


def check_plan(lora, report):
    """Checks of the resolved LoRA settings (ranks read from disk, slots)."""
    if not lora:
        return
    for i, adapter in enumerate(lora["adapters"]):
        if round_rank(adapter["rank"]) is None:
            report("adapters[%d].rank" % i, "the adapter's rank %d (%s) is above what vLLM accepts (%d)"
                   % (adapter["rank"], adapter["rank_from"], LORA_RANKS[-1]), "use an adapter of rank %d or less" % LORA_RANKS[-1])
    if len(lora["adapters"]) > lora["max_cpu_loras"]:
        report("max_cpu_loras", "%d adapters but %d slots" % (len(lora["adapters"]), lora["max_cpu_loras"]),
               "set max_cpu_loras to %d or more, or leave it unset" % len(lora["adapters"]))


def pod_path(adapter, mount):
    """Where the pod reads the adapter: its folder under the cache mount, or (not pre-downloaded) its Hugging Face id,
    which vLLM downloads into HF_HOME on the cache."""
    return posixpath.join(mount, adapter["folder"]) if adapter["folder"] else adapter["source"]


def module_json(adapter, base, mount):
    """vLLM's --lora-modules JSON of one adapter (LoRAModulePath: name, path, base_model_name), path in the pod."""
    return json.dumps({"name": adapter["name"], "path": pod_path(adapter, mount), "base_model_name": base},
                      sort_keys=True, separators=(",", ":"))


def slot_values(planned, mount):
    """{LLMSERVE_LORA_<i>: JSON or ""} for every slot of the model (the ConfigMap's data)."""
    lora = planned.get("lora") or {}
    if not lora:
        return {}
    values = [module_json(a, planned["name"], mount) for a in lora["adapters"]]
    values += [""] * (lora["max_cpu_loras"] - len(values))
    return dict((SLOT_ENV % i, value) for i, value in enumerate(values))


def args(planned):
    """vLLM's LoRA arguments of a planned model: [] without adapters."""
    lora = planned.get("lora") or {}
    if not lora:
        return []
    return (["--enable-lora", "--max-lora-rank", str(lora["max_lora_rank"]), "--max-loras", str(lora["max_loras"]),
             "--max-cpu-loras", str(lora["max_cpu_loras"]), "--lora-modules"]
            + ["$(%s)" % (SLOT_ENV % i) for i in range(lora["max_cpu_loras"])])


def expand(arguments, env):
    """The arguments as Kubernetes passes them: $(VAR) replaced by the container's variable (left as is when unset)."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in arguments]


# The GPU memory vLLM reserves for LoRA: every LoRA-capable linear layer gets stacked A and B buffers of max_loras
# slots at max_lora_rank (vllm/lora/layers/base_linear.py, create_lora_weights: lora_a_stacked
# (max_loras, 1, max_lora_rank, input_size), lora_b_stacked (max_loras, 1, output_size, max_lora_rank), one pair per
# slice of a merged layer: q, k, v of qkv_proj and gate, up of gate_up_proj), in the LoRA dtype (the model's).
# Column-parallel layers shard B's output over the GPUs of tensor parallelism, row-parallel ones A's input.
def lora_bytes(arch, rank, max_loras, dtype_bytes, tp=1):
    """Bytes of LoRA buffers on one GPU for an architecture preset (a dict of _presets.PRESETS)."""
    hidden = arch["hidden_size"]
    q_out = arch["num_attention_heads"] * arch["head_dim"]
    kv_out = arch["num_kv_heads"] * arch["head_dim"]
    inter = arch["intermediate_size"]
    experts = arch.get("num_experts") or 1
    # (input, output, column parallel) of each target module of one layer
    modules = [(hidden, q_out, True), (hidden, kv_out, True), (hidden, kv_out, True), (q_out, hidden, False)]
    modules += [(hidden, inter, True), (hidden, inter, True), (inter, hidden, False)] * experts
    per_layer = 0
    for size_in, size_out, column in modules:
        per_layer += rank * (size_in + size_out / float(tp)) if column else rank * (size_in / float(tp) + size_out)
    return int(per_layer * arch["num_layers"] * max_loras * dtype_bytes)


def running_adapters(models_body, base):
    """{adapter name: path} that a vLLM's /v1/models lists with parent base (vLLM lists adapters with `parent` and
    `root`, the adapter's path)."""
    try:
        data = json.loads(models_body).get("data") or []
    except (ValueError, AttributeError):
        return {}
    return dict((m.get("id"), m.get("root")) for m in data if isinstance(m, dict) and m.get("parent") == base and m.get("id") != base)


def _flag(arguments, name):
    for index, arg in enumerate(arguments or []):
        if arg == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def restart_reasons(running_args, new_args):
    """Why the pods must restart for the new arguments (a list of reasons; [] when the adapters load at runtime)."""
    running_args, new_args = list(running_args or []), list(new_args or [])
    if running_args == new_args:
        return []
    reasons = []
    if "--enable-lora" not in running_args and "--enable-lora" in new_args:
        reasons.append("LoRA is turned on (--enable-lora)")
    elif "--enable-lora" in running_args and "--enable-lora" not in new_args:
        reasons.append("LoRA is turned off (no adapters left)")
    for flag, why in (("--max-lora-rank", "an adapter's rank is above the running maximum"),
                      ("--max-cpu-loras", "more adapters than the running slots"),
                      ("--max-loras", "the adapters' GPU slots change")):
        old, new = _flag(running_args, flag), _flag(new_args, flag)
        if old != new and old is not None and new is not None:
            reasons.append("%s: %s %s -> %s" % (why, flag, old, new))
    if not reasons:
        reasons.append("the model's other arguments changed")
    return reasons


def reconcile(running, wanted):
    """What to do in one running replica: running {name: path} (from /v1/models), wanted {name: path in the pod}.

    Returns {load: [(name, path)], unload: [name]}: an adapter whose path changed is unloaded and loaded again."""
    unload = sorted(n for n in running if n not in wanted or (running[n] and running[n] != wanted[n]))
    load = sorted((n, p) for n, p in wanted.items() if n not in running or n in unload)
    return {"load": load, "unload": unload}


def sync_replica(fetch, url, base, wanted, api_key=None, check_mode=False, timeout=60.0):
    """Load and unload adapters in one running vLLM (its /v1/load_lora_adapter and /v1/unload_lora_adapter, which
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True switches on). fetch: _health.http_fetch's signature; wanted {name: path}.

    Returns {url, loaded, unloaded, failed: [(name, status, body)]}; in check mode nothing is sent but the list."""
    headers = {"Authorization": "Bearer " + api_key} if api_key else {}
    url = url.rstrip("/")
    answer = fetch(url + "/v1/models", headers=headers, timeout=timeout)
    out = {"url": url, "loaded": [], "unloaded": [], "failed": []}
    if answer.status != 200:
        out["failed"].append(("/v1/models", answer.status or answer.kind, (answer.body or answer.error)[:300]))
        return out
    actions = reconcile(running_adapters(answer.body, base), wanted)
    for name in actions["unload"]:
        reply = None if check_mode else fetch(url + "/v1/unload_lora_adapter", method="POST", headers=headers,
                                              body={"lora_name": name}, timeout=timeout)
        if reply is None or reply.status == 200:
            out["unloaded"].append(name)
        else:
            out["failed"].append((name, reply.status or reply.kind, (reply.body or reply.error)[:300]))
    for name, path in actions["load"]:
        reply = None if check_mode else fetch(url + "/v1/load_lora_adapter", method="POST", headers=headers,
                                              body={"lora_name": name, "lora_path": path}, timeout=timeout)
        if reply is None or reply.status == 200:
            out["loaded"].append(name)
        else:
            out["failed"].append((name, reply.status or reply.kind, (reply.body or reply.error)[:300]))
    return out


def wanted_paths(planned, mount):
    """{adapter name: path in the pod} of a planned model."""
    return dict((a["name"], pod_path(a, mount)) for a in (planned.get("lora") or {}).get("adapters", []))
