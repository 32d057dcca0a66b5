# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the model cache role downloads onto the hosts, from the checked plan (never the raw catalog).

Pure logic, stdlib only.
"""

from __future__ import annotations

import posixpath

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora


def downloads(models):
    """model_storage's download items of the planned models (llmserve_plan.models: enabled and checked), the models
    first, then their Hugging Face adapters: {name, model, revision} (a model's snapshot stays in the hub cache), and
    for an adapter local_dir too (relative to the model cache: adapters/<name>, where the pods read it)."""
    items = [{"name": m["name"], "model": m["model"], "revision": m.get("revision") or "main"} for m in models or []]
    for planned in models or []:
        for adapter in (planned.get("lora") or {}).get("adapters", []):
            if adapter["download"]:
                items.append({"name": adapter["name"], "model": adapter["source"], "revision": adapter.get("revision") or "main",
                              "local_dir": posixpath.join(_lora.HF_ADAPTER_DIR, adapter["name"])})
    return items
