"""The model_storage download script: sizes measured through the hub cache's symlinks, marker written last.

The Hugging Face Hub is not reachable here: snapshot_download is replaced by a stand-in that lays out a real
hub-cache folder (blobs + snapshot symlinks) the way huggingface_hub does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
import types

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "roles" / "model_storage" / "files" / "hf_snapshot.py"


@pytest.fixture()
def script():
    spec = importlib.util.spec_from_file_location("hf_snapshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_hub(calls, commit="5f1c0d2e"):
    def snapshot_download(repo_id, revision, cache_dir, token):
        calls.append({"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "token": token})
        repo = pathlib.Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        snap = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True)
        snap.mkdir(parents=True)
        for name, size in (("model.safetensors", 4096), ("config.json", 120), ("tokenizer.json", 900)):
            blob = repo / "blobs" / ("blob-" + name)
            blob.write_bytes(b"x" * size)
            os.symlink(os.path.relpath(blob, snap), snap / name)
        return str(snap)
    return types.SimpleNamespace(snapshot_download=snapshot_download)


def test_download_writes_marker_with_measured_bytes(script, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", _fake_hub(calls))
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    marker = tmp_path / "markers" / "tiny.json"
    marker.parent.mkdir()
    assert script.main(["--name", "tiny", "--model", "org/tiny", "--revision", "v1", "--cache-dir", str(tmp_path / "hub"),
                        "--marker", str(marker)]) == 0
    record = json.loads(marker.read_text())
    assert record["bytes"] == 4096 + 120 + 900 and record["files"] == 3
    assert (record["name"], record["model"], record["revision"], record["commit"]) == ("tiny", "org/tiny", "v1", "5f1c0d2e")
    assert calls == [{"repo_id": "org/tiny", "revision": "v1", "cache_dir": str(tmp_path / "hub"), "token": "hf_secret"}]
    assert oct(marker.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in marker.parent.iterdir() if p.name.startswith(".marker-")]


def test_failed_download_leaves_no_marker(script, tmp_path, monkeypatch):
    def boom(**_kwargs):
        raise OSError("Hub unreachable")
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=boom))
    marker = tmp_path / "tiny.json"
    with pytest.raises(OSError):
        script.main(["--name", "tiny", "--model", "org/tiny", "--cache-dir", str(tmp_path), "--marker", str(marker)])
    assert not marker.exists()
