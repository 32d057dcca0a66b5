# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of model_storage's pre-download (what it wants from the plan, its markers and download runs); thin wrappers
over _model_downloads."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _model_downloads


class FilterModule:
    def filters(self):
        return {"model_downloads": _model_downloads.wanted, "model_downloads_pending": _model_downloads.pending,
                "model_download_failures": _model_downloads.failures, "model_sizes_measured": _model_downloads.measured_sizes}
