# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What model_storage's pre-download reads back from its markers and its download runs (stdlib only).

The download script writes one marker per model, <path>/.llmserve/models/<name>.json ({name, model, revision,
bytes}), after a complete download; the role slurps them (a loop over the wanted models) and runs the script once per
model still to download. These functions take those loop results as Ansible registers them.
"""

from __future__ import annotations

import base64
import json

DEFAULT_REVISION = "main"


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
