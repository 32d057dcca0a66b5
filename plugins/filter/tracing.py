# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for distributed tracing (the plan's tracing entry, vLLM's flags and environment); thin wrappers over _tracing."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _tracing


def tracing_plan(tracing, legacy_endpoint="", monitoring_namespace="monitoring"):
    """{settings, errors} of llmserve_tracing (and llmserve_otlp_traces_endpoint)."""
    settings, errors = _tracing.tracing_plan(tracing, legacy_endpoint, monitoring_namespace)
    return {"settings": settings, "errors": errors}


class FilterModule:
    def filters(self):
        return {"tracing_plan": tracing_plan, "vllm_tracing_args": _tracing.vllm_tracing_args,
                "vllm_tracing_env": _tracing.vllm_tracing_env}
