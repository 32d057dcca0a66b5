# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan fact (llmserve_plan): the catalog plan plus every name the roles derive from it, made once a run.

Pure logic, stdlib only. plan_catalog() runs the plan's stages, each returning new data: validate (_catalog) ->
resolve (_resolve) -> place (_placement) -> size (_model_sizing) -> time-slicing (_placement); the vLLM arguments
(_catalog.vllm_args) are made from a planned model at render time. Every role, template and filter reads what it
needs about the models from here; none decides again whether a model is enabled, what its claim or Secrets are
called, or how many GPUs there are.
"""

from __future__ import annotations

import json
import os

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _lora, _model_sizing, _placement, _resolve, _shared

# One internal key per cluster (keys vllm-api-key, signing-key): created by the apply step when absent, never in the
# bundle. Every vLLM pod reads vllm-api-key as VLLM_API_KEY, in every auth mode; only the front door holds it too.
INTERNAL_SECRET = "llmserve-internal"
# The gateway's identities (hashes of the API keys, names, groups), applied by the ingress role, mounted in the front door.
IDENTITIES_SECRET = "llmserve-gateway-identities"

# What build_plan takes besides the catalog and the nodes, with the values used when one is missing.
SETTINGS = {
    "namespace": "llm-serving",
    "predownload": False,
    "storage_mode": "hostpath",
    "cache_claim": "llm-models",
    "auth_mode": "api-key",
    "hf_token_secret": "hf-token",
    "ingress_host": "llm.university.local",
    "default_model": "",
    # The model cache on the hosts (adapters' folders are named under it) and, when this machine is a host, where
    # adapter_config.json files are read at render time.
    "model_cache_path": "/var/lib/llm-models",
    # The fit on the nodes (placement and sizing too): True; "declared": only when a node declares GPUs (the check
    # before the host play, when the inventory is all that is known); False: the entries alone.
    "fit": True,
    # The bundle's folder (llmserve_render_dir) and whether the run applies it to the cluster (llmserve_apply).
    "render_dir": "",
    "apply": True,
    # The accelerator profile (llmserve_accelerator): nvidia, amd or intel-gaudi.
    "accelerator": "nvidia",
}


STORAGE_MODES = ("hostpath", "local-path", "longhorn")
FIT_CHOICES = ("true", "false", "declared")


def setting_problems(storage_mode, fit, removed_set=(), removed=None):
    """The problems of the plan role's own settings, checked before the catalog is planned: the storage mode, how the
    fit is checked, and role settings that copied a value the plan now decides (removed_set: the ones the run sets;
    removed: each one's place in the plan). [] when all is well."""
    problems = []
    if storage_mode not in STORAGE_MODES:
        problems.append("llmserve_storage_mode (plan_storage_mode) is %s: unknown storage mode. Fix: use hostpath (one "
                        "shared host folder), local-path (one PVC per model) or longhorn (one RWX PVC)."
                        % json.dumps(storage_mode))
    if str(fit).lower() not in FIT_CHOICES:
        problems.append("plan_fit is %s. Fix: use true (the fit on the nodes' GPUs), declared (only when the inventory "
                        "declares GPUs) or false (the entries alone)." % json.dumps(fit))
    if removed_set:
        problems.append("".join("%s is no longer a setting: the plan decides it once (%s) for every role. "
                                % (name, (removed or {}).get(name, "llmserve_plan")) for name in removed_set)
                        + "Fix: remove it from the inventory and the command line.")
    return problems


def measured_weights(nodes, hostvars_sizes):
    """{model name: GiB} from the sizes model_storage measured on the hosts (llmserve_model_sizes, bytes per name).

    hostvars_sizes: {host: {model name: bytes}}; a model measured on several hosts takes the largest figure.
    """
    out = {}
    for host in nodes or []:
        for name, size in ((hostvars_sizes or {}).get(host) or {}).items():
            try:
                gib = round(float(size) / _shared.GIB, 2)
            except (TypeError, ValueError):
                continue
            if gib > 0:
                out[name] = max(out.get(name, 0), gib)
    return out


def _derive(model, settings):
    """The planned model with the names a role needs (a new dict)."""
    name = model["name"]
    local_path = settings["storage_mode"] == "local-path"
    return dict(
        model,
        selector=dict(_shared.POD_LABELS["vllm"], **{"llmserve.io/model": name}),
        claim_name=settings["cache_claim"] + ("-" + name.replace(".", "-") if local_path else ""),
        # Pre-downloaded models start offline (HF_HUB_OFFLINE=1) and need no token.
        offline=bool(settings["predownload"]),
        needs_token=bool(model.get("gated")) and not settings["predownload"],
        hf_token_secret=settings["hf_token_secret"],
        path=_shared.model_path(name),
    )


def _entry_order(checked, resolved):
    """Each entry's problems together (its raw fields, then its resolved settings), entries in catalog order; the
    catalog's own first, the check of the adapters' names across entries last."""
    by_entry = sorted(checked["problems"] + resolved["problems"], key=lambda p: -1 if p["index"] is None else p["index"])
    return by_entry + checked["adapter_problems"]


def plan_catalog(models, nodes, defaults, classes, predownload=False, measured=None, cache=_lora.MODEL_CACHE, local_cache=None,
                 fit=True):
    """Validate, resolve, place and size the catalog. Returns {models (all, enabled or not), enabled, problems
    ({index, name, field, problem, fix}), errors (the problems as messages), gpus_total, gpus_used, nodes (with gpus_free)}.

    Placement waits for a catalog without problems, the sizing and time-slicing for one that fits its nodes.
    measured: {model name: weights GiB} measured on the hosts; they replace the estimate from params_b.
    cache: the model cache's path on the hosts; local_cache: the same cache where this process can read it (adapters'
    adapter_config.json), or None. fit: False checks the entries alone (no fit on the nodes, no placement, no sizing):
    the check before the host play, when the inventory declares no GPU and the hosts have not been asked yet.
    """
    checked = _catalog.validate(models, cache)
    if not isinstance(models, list):
        return {"models": [], "problems": checked["problems"], "errors": [_catalog.message(p) for p in checked["problems"]]}
    resolved = _resolve.resolve(checked["entries"], defaults, classes, predownload, measured, cache, local_cache)
    planned, problems, free = resolved["models"], _entry_order(checked, resolved), {}
    if not problems and fit:
        problems = _placement.check_fit(planned, nodes)
    if not problems and fit:
        placed = _placement.place(planned, nodes)
        sized = _model_sizing.size(placed["models"], nodes, predownload)
        sliced = _placement.share_sliced_gpus(sized["models"], nodes)
        planned, free = sliced["models"], placed["free"]
        problems = placed["problems"] + sized["problems"] + sliced["problems"]
    total = sum(int(n.get("gpu_count") or 0) for n in nodes)
    return {
        "models": planned,
        "enabled": [m["name"] for m in planned if m["enabled"]],
        "problems": problems,
        "errors": [_catalog.message(p) for p in problems],
        "gpus_total": total,
        "gpus_used": total - sum(free.values()) if free else 0,
        "nodes": [dict(n, gpus_free=free.get(n["name"], 0)) for n in nodes],
    }


def build_plan(models, nodes, defaults, classes, settings=None, measured=None):
    """The plan fact. models: llmserve_models; nodes: gpu_nodes(); settings: see SETTINGS; measured: {name: GiB}."""
    settings = dict(SETTINGS, **{k: v for k, v in (settings or {}).items() if v is not None})
    cache = settings["model_cache_path"]
    fit = settings["fit"]
    if fit == "declared":
        fit = any(int(n.get("gpu_count") or 0) > 0 for n in nodes or [])
    base = plan_catalog(models, nodes, defaults, classes, settings["predownload"], measured or {}, cache,
                        cache if os.path.isdir(cache) else None, fit=bool(fit))
    catalog = [_derive(m, settings) for m in base["models"]]
    enabled = [m for m in catalog if m["enabled"]]
    names = [m["name"] for m in enabled]
    return {
        "errors": base["errors"],
        "problems": base["problems"],
        "catalog": catalog,
        "models": enabled,
        "enabled": names,
        "disabled": [m["name"] for m in catalog if not m["enabled"]],
        "nodes": base.get("nodes", []),
        "gpu_nodes": [n["name"] for n in base.get("nodes", []) if int(n.get("gpu_count") or 0) > 0],
        "gpus_total": base.get("gpus_total", 0),
        "gpus_used": base.get("gpus_used", 0),
        "namespace": settings["namespace"],
        "predownload": bool(settings["predownload"]),
        # Whether the fit on the nodes was checked (placement and sizing made): false before the host play when the
        # inventory declares no GPU.
        "fitted": bool(fit),
        "storage": {"mode": settings["storage_mode"], "claim": settings["cache_claim"],
                    "claims": sorted({m["claim_name"] for m in enabled} or {settings["cache_claim"]})},
        "auth": {"mode": settings["auth_mode"], "internal_secret": INTERNAL_SECRET, "identities_secret": IDENTITIES_SECRET,
                 "hf_token_secret": settings["hf_token_secret"]},
        "ingress": {"host": settings["ingress_host"], "default_model": settings["default_model"],
                    "paths": dict((m["name"], m["path"]) for m in enabled)},
        "measured_weights_gib": dict(measured or {}),
        # Every adapter name a client may send, with its base model (the front door routes it there).
        "adapters": dict((a["name"], m["name"]) for m in enabled for a in (m.get("lora") or {}).get("adapters", [])),
        "render_dir": settings["render_dir"],
        "apply": bool(settings["apply"]),
        # What every template and task reads instead of writing it again (decided in _shared).
        "labels": {"managed_by": {_shared.MANAGED_BY_LABEL: _shared.MANAGED_BY}, "part_of": {_shared.PART_OF_LABEL: _shared.PART_OF},
                   "common": dict(_shared.LABELS),
                   "managed_by_selector": "%s=%s" % (_shared.MANAGED_BY_LABEL, _shared.MANAGED_BY)},
        "ports": dict(_shared.PORTS),
        "pods": dict((kind, dict(labels)) for kind, labels in _shared.POD_LABELS.items()),
        "gpu": {"accelerator": settings["accelerator"], "resource": _shared.GPU_RESOURCES.get(settings["accelerator"], _shared.GPU_RESOURCES["nvidia"]),
                "node_labels": {_shared.GPU_NODE_LABEL: "true"}, "node_selector": _shared.GPU_NODE_LABEL + "=true"},
        "vllm_image_tag": "v" + _shared.VLLM_VERSION,
        "kv_tolerance": _shared.KV_TOLERANCE,
    }
