# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the plan report (playbooks/plan.yml) and the KV cache live check (health.yml, status.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _health, _report


def plan_report(plan):
    """The report of llmserve_plan: rows per enabled model, free GPUs per node, problems with their fixes."""
    if not isinstance(plan, dict) or "models" not in plan:
        raise AnsibleFilterError("plan_report expects the plan fact llmserve_plan (run the llmserve.k3s.plan role first)")
    return _report.plan_report(plan)


def plan_table(report):
    return _report.plan_table(report)


def kv_checks(results, plan_models, tolerance=_report.KV_TOLERANCE, versions=None):
    """One check per vllm_health result (health.yml's looped register) of a planned model.

    results: items with item.model / item.endpoint and the module's kv_cache; versions: {model: vLLM version}.
    """
    by_name = dict((m.get("name"), m) for m in plan_models or [] if isinstance(m, dict))
    checks = []
    for result in results or []:
        item = result.get("item") or {}
        model = by_name.get(item.get("model"))
        if model is None:
            continue
        check = _report.kv_check(model, result.get("kv_cache"), tolerance,
                                 source="llmserve.k3s live check of %s at %s" % (model["name"], result.get("url") or item.get("url")),
                                 vllm_version=(versions or {}).get(model["name"]))
        check["where"] = item.get("endpoint")
        checks.append(check)
    return checks


def pod_kv_checks(metrics, pods, plan_models, tolerance=_report.KV_TOLERANCE):
    """One check per model pod whose /metrics status.yml read: metrics {pod name: /metrics text}."""
    by_name = dict((m.get("name"), m) for m in plan_models or [] if isinstance(m, dict))
    checks = []
    for pod in pods or []:
        meta = pod.get("metadata") or {}
        model = by_name.get((meta.get("labels") or {}).get("llmserve.io/model"))
        text = (metrics or {}).get(meta.get("name"))
        if model is None or not isinstance(text, str):
            continue
        containers = ((pod.get("spec") or {}).get("containers") or []) + ((pod.get("status") or {}).get("containerStatuses") or [])
        images = [c["image"] for c in containers if c.get("name") == "vllm" and c.get("image")]
        version = images[0].rpartition(":")[2].lstrip("v") if images and ":" in images[0] else None
        check = _report.kv_check(model, _health.kv_cache_config(text), tolerance,
                                 source="llmserve.k3s live check of pod %s" % meta.get("name"), vllm_version=version)
        check["where"] = meta.get("name")
        checks.append(check)
    return checks


def kv_table(checks, tolerance=_report.KV_TOLERANCE):
    return _report.kv_table(checks, tolerance)


class FilterModule:
    def filters(self):
        return {"plan_report": plan_report, "plan_table": plan_table, "kv_checks": kv_checks,
                "pod_kv_checks": pod_kv_checks, "kv_table": kv_table}
