# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan report (playbooks/plan.yml) and the live check of the plan's KV cache against vLLM's.

Pure logic, stdlib only. plan_report() turns the plan fact (llmserve_plan) into one row per enabled model, the free
GPUs per node and the catalog's problems with their fixes, all as the plan says them (each setting carries its
source, each problem its entry, field and fix); plan_table() prints it. kv_check() compares the
KV cache tokens the plan predicted for a model with what vLLM allocated (vllm:cache_config_info on /metrics) and,
when they differ by more than the tolerance, gives the case data to add the deployment to the sizing cases.
"""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog
from ansible_collections.llmserve.k3s.plugins.module_utils._bundle import yaml_scalar
from ansible_collections.llmserve.k3s.plugins.module_utils._shared import GIB, KV_TOLERANCE, table as _table

# The settings the report says the origin of, in table order, with their column titles.
SETTINGS = (("max_model_len", "MAX_MODEL_LEN"), ("max_num_seqs", "MAX_NUM_SEQS"), ("tensor_parallel_size", "TP"),
            ("gpu_memory_utilization", "UTILIZATION"))
SOURCES = {
    "catalog": "the catalog entry",
    "default": "plan_model_defaults",
    "plan": "the plan (GPU sizing, size class, time-slicing)",
    "vllm": "unset: vLLM's own default",
}


def report_source(source):
    """The report's word for a setting's source in the plan (_resolve.SOURCES): catalog, default, vllm, else plan."""
    return source if source in ("catalog", "default", "vllm") else "plan"


def _gib(value):
    return None if value is None else round(float(value), 2)


def _row(model, gpu_names):
    sizing = model.get("sizing") or {}
    tp = int(model.get("tensor_parallel_size") or 1)
    placement = list(model.get("placement") or [])
    gpu = sizing.get("gpu") or {}
    sources = model.get("sources") or {}
    settings = dict((field, {"value": model.get(field), "source": report_source(sources.get(field))}) for field, dummy in SETTINGS)
    return {
        "name": model.get("name"),
        "nodes": placement,
        "replicas": len(placement),
        "gpus_per_replica": tp,
        "gpus": tp * len(placement),
        "gpu": gpu.get("name") or next((gpu_names.get(n) for n in placement if gpu_names.get(n)), None),
        "sized": bool(sizing),
        "weights_gib": _gib(model.get("weights_gib_per_gpu")),
        "activation_gib": _gib(sizing.get("activation_gib")),
        "non_torch_gib": _gib(sizing.get("non_torch_gib")),
        "kv_cache_gib": _gib(sizing.get("kv_cache_gib")),
        "kv_cache_tokens": sizing.get("kv_cache_tokens"),
        "kv_bytes_per_token": sizing.get("kv_bytes_per_token"),
        "max_concurrency": sizing.get("max_concurrency"),
        "fits": sizing.get("fits") if sizing else None,
        "settings": settings,
        "lora": _lora_row(model.get("lora")),
    }


def _lora_row(lora):
    """The LoRA part of a report row: None without adapters; gpu_gib is what the buffers take on each GPU (None when
    the model has no architecture preset to size them)."""
    if not lora:
        return None
    return {"adapters": [a["name"] for a in lora["adapters"]], "max_lora_rank": lora["max_lora_rank"],
            "max_loras": lora["max_loras"], "max_cpu_loras": lora["max_cpu_loras"], "gpu_gib": lora.get("gpu_gib")}


def plan_report(plan):
    """The report of a plan fact (llmserve_plan): each setting's source and each problem are the plan's own."""
    plan = plan or {}
    gpu_names = dict((n.get("name"), n.get("gpu_name")) for n in plan.get("nodes") or [])
    rows = [_row(model, gpu_names) for model in plan.get("models") or []]
    nodes = []
    for node in plan.get("nodes") or []:
        total = int(node.get("gpu_count") or 0)
        # With a catalog error no placement is made: every GPU counts as free.
        free = int(node.get("gpus_free", total)) if plan.get("gpus_used") or not plan.get("problems") else total
        nodes.append({"name": node.get("name"), "gpu": node.get("gpu_name") or None, "gpus": total,
                      "gpus_used": total - free, "gpus_free": free})
    problems = [dict(p, subject=_catalog.subject(p)) for p in plan.get("problems") or []]
    return {"ok": not problems, "models": rows, "nodes": nodes, "gpus_total": plan.get("gpus_total", 0),
            "gpus_used": plan.get("gpus_used", 0), "disabled": list(plan.get("disabled") or []), "problems": problems}


def _cell(value, fmt="%s"):
    return "-" if value is None or value == "" else fmt % value


TABLE_HEADER = ("MODEL", "NODES", "GPUS", "GPU", "WEIGHTS", "ACTIVATION", "NON-TORCH", "KV_GIB", "KV_TOKENS",
                "FULL_LENGTH", "FITS") + tuple(title for dummy, title in SETTINGS)


def model_cells(row):
    """The table cells of one report row (what plan_table prints, in TABLE_HEADER order)."""
    fits = {True: "yes", False: "NO", None: "-"}[row["fits"]]
    nodes = []
    for node in row["nodes"]:
        if node not in nodes:
            nodes.append(node)
    placed = ",".join(n + ("(x%d)" % row["nodes"].count(n) if row["nodes"].count(n) > 1 else "") for n in nodes)
    cells = [row["name"], placed or "-", "%dx%d" % (row["replicas"], row["gpus_per_replica"]), _cell(row["gpu"]),
             _cell(row["weights_gib"], "%.2f"), _cell(row["activation_gib"], "%.2f"), _cell(row["non_torch_gib"], "%.2f"),
             _cell(row["kv_cache_gib"], "%.2f"), _cell(row["kv_cache_tokens"]), _cell(row["max_concurrency"]), fits]
    for field, dummy in SETTINGS:
        setting = row["settings"][field]
        cells.append("%s/%s" % (_cell(setting["value"]), setting["source"]))
    return cells


def plan_table(report):
    """Readable lines of a plan report: the models, the GPUs per node, then the problems with their fixes."""
    models = report.get("models") or []
    lines = ["Plan: %d enabled model(s), %s of %s GPUs used%s" % (
        len(models), report.get("gpus_used", 0), report.get("gpus_total", 0),
        "; disabled: " + ", ".join(report["disabled"]) if report.get("disabled") else "")]
    lines += _table([TABLE_HEADER] + [model_cells(row) for row in models])
    lines.append("  GiB per GPU; GPUS = replicas x GPUs each; KV_TOKENS = tokens the KV cache of a replica holds;")
    lines.append("  FULL_LENGTH = requests of max_model_len tokens at once; settings are value/source:")
    lines.append("  " + "; ".join("%s = %s" % kv for kv in SOURCES.items()))
    for row in models:
        lora = row.get("lora")
        if lora:
            lines.append("LoRA %s: %s; max_lora_rank %d, max_loras %d, max_cpu_loras %d: %s GiB per GPU for the adapters' buffers "
                         "(taken from the KV cache)" % (row["name"], ", ".join(lora["adapters"]), lora["max_lora_rank"],
                                                        lora["max_loras"], lora["max_cpu_loras"], _cell(lora["gpu_gib"], "%.3f")))
    lines.append("GPUs free per node: " + (", ".join(
        "%s %d of %d%s" % (n["name"], n["gpus_free"], n["gpus"], " (%s)" % n["gpu"] if n["gpu"] else "")
        for n in report.get("nodes") or []) or "no nodes"))
    problems = report.get("problems") or []
    if problems:
        lines.append("The catalog does not fit (%d problem(s)):" % len(problems))
        for problem in problems:
            lines.append("  %s: %s" % (problem["subject"], problem["problem"]))
            lines.append("    fix: %s" % (problem["fix"] or "see the message above"))
    else:
        lines.append("The catalog fits.")
    return lines


def cache_case(model, actual, source=None, vllm_version=None):
    """The entry of tests/unit/fixtures/vllm_startup_cases.yaml for a deployment whose KV cache the plan got wrong.

    What /metrics cannot tell (weights, activation peak, non-torch memory) is left for the pod's startup log.
    """
    sizing = model.get("sizing") or {}
    gpu = sizing.get("gpu") or {}
    tp = model.get("tensor_parallel_size") or 1
    observed = {"kv_cache_tokens": actual.get("kv_cache_tokens"), "fits": True}
    if actual.get("kv_cache_memory_bytes"):
        observed["kv_cache_gib"] = round(float(actual["kv_cache_memory_bytes"]) / GIB, 2)
    case = {
        "id": "%s-%s-tp%s" % (model.get("architecture") or model.get("name"), str(gpu.get("name") or "gpu").lower().replace(" ", "-"), tp),
        "source": source or "llmserve.k3s live check of %s" % model.get("name"),
        "note": "weights_gib (Model loading took), activation_gib and non_torch_gib (Memory profiling / Available KV cache "
                "memory) and the total GPU memory: from the pod's startup log",
        "kind": "full",
        "engine": "v1",
        "vllm_version": str(vllm_version) if vllm_version else None,
        # Not used for fitting until the constants are refitted on it (see tests/unit/test_sizing_accuracy.py).
        "split": "holdout",
        "model": model.get("architecture") or model.get("model"),
        "gpu": gpu.get("name"),
        "logged_total_gpu_memory_gib": gpu.get("memory_gib"),
        "tensor_parallel_size": tp,
        "dtype": model.get("dtype"),
        "gpu_memory_utilization": actual.get("gpu_memory_utilization", model.get("gpu_memory_utilization")),
        "max_model_len": model.get("max_model_len"),
    }
    # Given only where the command line set them, as in the case file.
    for field in ("max_num_seqs", "max_num_batched_tokens"):
        if model.get(field) is not None:
            case[field] = model[field]
    case["observed"] = observed
    if model.get("quantization"):
        case["quantization"] = model["quantization"]
    if model.get("kv_cache_dtype") not in (None, "auto"):
        case["kv_cache_dtype"] = model["kv_cache_dtype"]
    return case


def kv_check(model, actual, tolerance=KV_TOLERANCE, source=None, vllm_version=None):
    """Predicted vs actual KV cache tokens of one deployed model.

    model: an item of llmserve_plan.models; actual: vllm_health's kv_cache ({num_gpu_blocks, block_size,
    kv_cache_tokens, ...}). status: ok, off (|difference| > tolerance: case holds the case data), no_prediction
    (a model without an architecture preset), no_metrics (vLLM did not export cache_config_info).
    """
    sizing = (model or {}).get("sizing") or {}
    predicted = sizing.get("kv_cache_tokens")
    actual = actual or {}
    tokens = actual.get("kv_cache_tokens")
    out = {"model": (model or {}).get("name"), "predicted_tokens": predicted, "actual_tokens": tokens,
           "num_gpu_blocks": actual.get("num_gpu_blocks"), "block_size": actual.get("block_size"),
           "difference_tokens": None, "difference_pct": None, "status": None, "case": None}
    if not tokens:
        out["status"] = "no_metrics"
    elif not predicted:
        out["status"] = "no_prediction"
    else:
        out["difference_tokens"] = int(predicted) - int(tokens)
        out["difference_pct"] = round(100.0 * (float(predicted) - tokens) / tokens, 1)
        out["status"] = "off" if abs(out["difference_pct"]) > 100.0 * tolerance else "ok"
        if out["status"] == "off":
            out["case"] = cache_case(model, actual, source, vllm_version)
    return out


def kv_table(checks, tolerance=KV_TOLERANCE):
    """Lines: one row per check (predicted, actual, difference), then the case data of each one that is off."""
    rows = [("MODEL", "WHERE", "PREDICTED_TOKENS", "ACTUAL_TOKENS", "BLOCKS", "DIFFERENCE", "STATUS")]
    for check in checks or []:
        blocks = "%sx%s" % (check["num_gpu_blocks"], check["block_size"]) if check.get("num_gpu_blocks") else "-"
        diff = "-" if check.get("difference_pct") is None else "%+d (%+.1f%%)" % (check["difference_tokens"], check["difference_pct"])
        rows.append((check.get("model"), check.get("where") or "-", _cell(check.get("predicted_tokens")),
                     _cell(check.get("actual_tokens")), blocks, diff, check.get("status")))
    lines = ["KV cache, planned vs allocated by vLLM (vllm:cache_config_info num_gpu_blocks x block_size):"]
    lines += _table(rows) if len(rows) > 1 else ["  no endpoint exported vllm:cache_config_info (/metrics not read or not routed)"]
    for check in checks or []:
        if check.get("status") != "off":
            continue
        lines.append("%s: the plan is off by %+.1f%% (more than %d%%): add this deployment to "
                     "tests/unit/fixtures/vllm_startup_cases.yaml (see docs/sizing.md):"
                     % (check["model"], check["difference_pct"], round(tolerance * 100)))
        lines.extend("  " + line for line in _yaml_lines(check["case"]))
    return lines


def _yaml_lines(case):
    """A case as the YAML list item the case file holds (flat keys; observed as a flow mapping)."""
    lines = []
    for i, (key, value) in enumerate(case.items()):
        if isinstance(value, dict):
            text = "{%s}" % ", ".join("%s: %s" % (k, yaml_scalar(v)) for k, v in value.items())
        else:
            text = yaml_scalar(value)
        lines.append(("- " if i == 0 else "  ") + "%s: %s" % (key, text))
    return lines
