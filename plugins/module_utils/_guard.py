# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guard policy (llmserve_guard): checked against the catalog, and turned into the front door's `guard` section.

Pure logic, stdlib only. A guard is a catalog model with `role: guard`, planned and deployed like any other; the
gateway asks it about prompts and answers of the models and groups the policy covers (roles/ingress/files/
llmserve_frontdoor.py, class Guard).
"""

from __future__ import annotations

import re

# Llama Guard 3's hazard categories (its model card; the MLCommons taxonomy).
CATEGORIES = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "S13", "S14")
CHECKS = ("prompt", "response")
FIELDS = {"enabled": False, "model": "", "models": [], "groups": [], "check": ["prompt"], "block": [], "on_error": "deny",
          "timeout_s": 10, "stream_check_chars": 400, "max_body_bytes": 1048576, "expose": False, "log_identity": False}
GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")


def _number(value, low):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= low


def policy_errors(policy, catalog):
    """Messages (each naming the field and the fix) for what is wrong in llmserve_guard; [] when it is fine or off.
    catalog: the plan's catalog (every entry, enabled or not, with its role)."""
    if policy in (None, {}):
        return []
    if not isinstance(policy, dict):
        return ["llmserve_guard is %r, not a mapping. Fix: {enabled: true, model: <a catalog model with role: guard>, ...} "
                "(docs/guard.md)" % (policy,)]
    errors = []
    unknown = sorted(set(policy) - set(FIELDS))
    if unknown:
        errors.append("llmserve_guard has unknown fields %s. Fix: use only %s." % (", ".join(unknown), ", ".join(sorted(FIELDS))))
    if not isinstance(policy.get("enabled", False), bool):
        errors.append("llmserve_guard.enabled is %r. Fix: true or false." % (policy.get("enabled"),))
    if not policy.get("enabled"):
        return errors
    by_name = {m.get("name"): m for m in catalog or []}
    guards = sorted(n for n, m in by_name.items() if m.get("role") == "guard")
    name = policy.get("model")
    if not name:
        errors.append("llmserve_guard names no guard model. Fix: set llmserve_guard.model to a catalog model with role: guard "
                      "(%s)." % (", ".join(guards) or "the catalog has none: add one, e.g. meta-llama/Llama-Guard-3-1B"))
    elif name not in by_name:
        errors.append("llmserve_guard.model %r is not in llmserve_models. Fix: name a catalog model with role: guard (%s)."
                      % (name, ", ".join(guards) or "none yet"))
    elif by_name[name].get("role") != "guard":
        errors.append("llmserve_guard.model %r has role %r. Fix: set role: guard on that catalog entry, or name one that has it."
                      % (name, by_name[name].get("role", "serve")))
    elif not by_name[name].get("enabled", True) or (by_name[name].get("replicas") == 0
                                                    and not (by_name[name].get("autoscaling") or {}).get("enabled")):
        errors.append("llmserve_guard.model %r is disabled (enabled: false or replicas: 0): nothing would answer the gateway. "
                      "Fix: enable it, or set llmserve_guard.enabled: false." % (name,))
    models = policy.get("models", [])
    if not isinstance(models, list):
        errors.append("llmserve_guard.models is %r. Fix: a list of catalog model names ([] = every model)." % (models,))
    else:
        for model in models:
            if model not in by_name or by_name[model].get("role") == "guard":
                errors.append("llmserve_guard.models names %r, which is not a model the gateway serves. Fix: use names of "
                              "llmserve_models without role: guard." % (model,))
    groups = policy.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and GROUP.match(g) for g in groups):
        errors.append("llmserve_guard.groups is %r. Fix: a list of group names ([] = everyone)." % (groups,))
    check = policy.get("check", ["prompt"])
    if not isinstance(check, list) or not check or any(c not in CHECKS for c in check):
        errors.append("llmserve_guard.check is %r. Fix: a non-empty list of prompt and/or response." % (check,))
    block = policy.get("block", [])
    bad = [c for c in block if c not in CATEGORIES] if isinstance(block, list) else [block]
    if bad:
        errors.append("llmserve_guard.block has unknown categories %s. Fix: use Llama Guard 3's S1 to S14 ([] = every "
                      "category blocks)." % ", ".join(map(repr, bad)))
    if policy.get("on_error", "deny") not in ("deny", "allow"):
        errors.append("llmserve_guard.on_error is %r. Fix: deny (503 while the guard cannot answer) or allow (serve, count "
                      "and alert)." % (policy.get("on_error"),))
    for field, low in (("timeout_s", 0.1), ("stream_check_chars", 1), ("max_body_bytes", 1024)):
        if field in policy and not _number(policy[field], low):
            errors.append("llmserve_guard.%s is %r. Fix: a number of at least %s." % (field, policy[field], low))
    for field in ("expose", "log_identity"):
        if field in policy and not isinstance(policy[field], bool):
            errors.append("llmserve_guard.%s is %r. Fix: true or false." % (field, policy[field]))
    return errors


def frontdoor_guard(policy):
    """The front door's `guard` section (None when the guard is off)."""
    if not isinstance(policy, dict) or not policy.get("enabled"):
        return None
    merged = dict(FIELDS, **policy)
    return {"model": merged["model"], "models": list(merged["models"]), "groups": list(merged["groups"]),
            "check": list(merged["check"]), "block": list(merged["block"]), "on_error": merged["on_error"],
            "timeout_s": merged["timeout_s"], "stream_check_chars": int(merged["stream_check_chars"]),
            "max_body_bytes": int(merged["max_body_bytes"]), "log_identity": bool(merged["log_identity"])}


def hidden(policy, name):
    """Whether the gateway keeps this model out of /v1/models and refuses it by name: the guard, unless exposed."""
    return bool(isinstance(policy, dict) and policy.get("enabled") and policy.get("model") == name
                and not policy.get("expose"))
