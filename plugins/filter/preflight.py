# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the cluster roles' preflights: every problem of a role's settings at once; wrappers over _preflight."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _preflight


class FilterModule:
    def filters(self):
        return {"ingress_problems": _preflight.ingress_problems, "monitoring_problems": _preflight.monitoring_problems,
                "namespace_problems": _preflight.namespace_problems, "gpu_problems": _preflight.gpu_problems}
