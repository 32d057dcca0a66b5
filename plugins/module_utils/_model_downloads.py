# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What model_storage's pre-download wants (from the checked plan, never the raw catalog) and reads back from its
markers and its download runs (stdlib only).

The download script writes one marker per model, <path>/.llmserve/models/<name>.json ({name, model, revision,
bytes}), after a complete download; the role slurps them (a loop over the wanted models) and runs the script once per
model still to download. These functions take those loop results as Ansible registers them.
"""

from __future__ import annotations

import base64
import json
import posixpath

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora

DEFAULT_REVISION = "main"


def wanted(models):
    """The download items of the planned models (llmserve_plan.models: enabled and checked), the models first, then
    their Hugging Face adapters: {name, model, revision} (a model's snapshot stays in the hub cache), and for an adapter
    local_dir too (relative to the model cache: adapters/<name>, where the pods read it)."""
    items = [{"name": m["name"], "model": m["model"], "revision": m.get("revision") or DEFAULT_REVISION} for m in models or []]
    for planned in models or []:
        for adapter in (planned.get("lora") or {}).get("adapters", []):
            if adapter["download"]:
                items.append({"name": adapter["name"], "model": adapter["source"],
                              "revision": adapter.get("revision") or DEFAULT_REVISION,
                              "local_dir": posixpath.join(_lora.HF_ADAPTER_DIR, adapter["name"])})
    return items


def _marker(result):
    """The marker a slurp result holds, or None when it read nothing (no marker yet)."""
    if "content" not in result:
        return None
    return json.loads(base64.b64decode(result["content"]).decode("utf-8"))


def pending(marker_results):
    """The wanted models (the loop's items) whose marker is missing or names another model or revision."""
    out = []
    for result in marker_results or []:
        item = result["item"]
        marker = _marker(result) or {}
        if marker.get("model") != item["model"] or marker.get("revision") != item.get("revision", DEFAULT_REVISION):
            out.append(item)
    return out


def failures(download_results):
    """"<name>: <why>" of each download that failed: a run that exited non-zero (its last line on stderr, which never
    holds the token), then an item with no exit status that was not skipped (the task itself failed, e.g. become)."""
    ran = [r for r in download_results or [] if "rc" in r]
    failed = [r for r in ran if r["rc"] != 0]
    failed += [r for r in download_results or [] if "rc" not in r and "skipped" not in r]
    out = []
    for result in failed:
        last = "".join(str(line) for line in (result.get("stderr_lines") or [])[-1:])
        why = last or "download failed (%s)" % (result["rc"] if "rc" in result else result.get("msg", "no result"))
        out.append("%s: %s" % (result["item"]["name"], why))
    return out


def measured_sizes(marker_results):
    """{model name: bytes} of every marker read (llmserve_model_sizes: the sizing uses the measured weights)."""
    markers = [_marker(r) for r in marker_results or []]
    return dict((m["name"], m["bytes"]) for m in markers if m is not None)
