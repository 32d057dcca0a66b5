# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the monitoring role's templates; thin wrappers over module_utils."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _prometheus_adapter


class FilterModule:
    def filters(self):
        return {"prometheus_adapter_values": _prometheus_adapter.adapter_values}
