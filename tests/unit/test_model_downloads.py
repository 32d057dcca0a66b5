"""model_storage's pre-download: which models still need one, which downloads failed and why, the measured sizes
(plugins/module_utils/_model_downloads.py, from the loop results Ansible registers)."""

from __future__ import annotations

import base64
import json

from ansible_collections.llmserve.k3s.plugins.filter import storage
from ansible_collections.llmserve.k3s.plugins.module_utils import _model_downloads

QWEN = {"name": "qwen-0.5b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "main"}
LLAMA = {"name": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct"}
ADAPTER = {"name": "llama-3.1-8b-sql", "model": "org/sql-lora", "revision": "v2", "local_dir": "adapters/sql"}


def slurped(item, marker=None):
    """A slurp loop result: content (base64 of the marker's JSON) where the marker was read; failed_when: false."""
    if marker is None:
        return {"item": item, "failed": True, "msg": "file not found: %s.json" % item["name"]}
    return {"item": item, "content": base64.b64encode(json.dumps(marker).encode()).decode(), "encoding": "base64"}


def test_a_model_without_a_marker_is_downloaded():
    assert _model_downloads.pending([slurped(QWEN), slurped(LLAMA)]) == [QWEN, LLAMA]


def test_a_marker_of_the_same_model_and_revision_is_kept():
    results = [slurped(QWEN, {"name": "qwen-0.5b", "model": QWEN["model"], "revision": "main", "bytes": 988097824}),
               # No revision in the catalog is the Hub's main.
               slurped(LLAMA, {"name": "llama-3.1-8b", "model": LLAMA["model"], "revision": "main", "bytes": 16060522240})]
    assert _model_downloads.pending(results) == []


def test_another_model_or_revision_is_downloaded_again():
    results = [slurped(QWEN, {"model": "Qwen/Qwen2.5-1.5B-Instruct", "revision": "main"}),
               slurped(ADAPTER, {"model": "org/sql-lora", "revision": "v1"}),
               slurped(LLAMA, {"model": LLAMA["model"]})]
    assert _model_downloads.pending(results) == [QWEN, ADAPTER, LLAMA]


def test_nothing_wanted_nothing_pending():
    assert _model_downloads.pending([]) == [] and _model_downloads.pending(None) == []


def test_failures_name_the_model_and_the_script_s_last_line():
    results = [{"item": QWEN, "rc": 0, "stderr_lines": ["Fetching 10 files"]},
               {"item": LLAMA, "rc": 1, "stderr_lines": ["retrying", "Downloading meta-llama/Llama-3.1-8B-Instruct failed: 401"]},
               {"item": ADAPTER, "rc": 2, "stderr_lines": []}]
    assert _model_downloads.failures(results) == ["llama-3.1-8b: Downloading meta-llama/Llama-3.1-8B-Instruct failed: 401",
                                                  "llama-3.1-8b-sql: download failed (2)"]


def test_a_task_error_fails_and_a_skipped_item_does_not():
    results = [{"item": QWEN, "skipped": True, "skip_reason": "check mode"},
               {"item": LLAMA, "failed": True, "msg": "Failed to set permissions on the temporary files (become)"},
               {"item": ADAPTER, "failed": True}]
    assert _model_downloads.failures(results) == [
        "llama-3.1-8b: download failed (Failed to set permissions on the temporary files (become))",
        "llama-3.1-8b-sql: download failed (no result)"]
    assert _model_downloads.failures([]) == []


def test_measured_sizes_are_the_markers_bytes_by_name():
    results = [slurped(QWEN, {"name": "qwen-0.5b", "model": QWEN["model"], "revision": "main", "bytes": 988097824}),
               slurped(LLAMA),
               {"item": ADAPTER, "skipped": True},
               slurped(ADAPTER, {"name": "llama-3.1-8b-sql", "model": "org/sql-lora", "revision": "v2", "bytes": 4096})]
    assert _model_downloads.measured_sizes(results) == {"qwen-0.5b": 988097824, "llama-3.1-8b-sql": 4096}


def test_filters():
    assert storage.FilterModule().filters() == {"model_downloads": _model_downloads.wanted,
                                                "model_downloads_pending": _model_downloads.pending,
                                                "model_download_failures": _model_downloads.failures,
                                                "model_sizes_measured": _model_downloads.measured_sizes}
