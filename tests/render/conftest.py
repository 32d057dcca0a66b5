"""Bundles rendered once per test session by the real render playbook.

`renders` runs each distinct (inventory, extra vars, tags, environment) once per session and shares the result
across test files; renders asked for ahead (`prefetch`) run in the background, LLMSERVE_RENDER_JOBS at a time
(default: the CPU count), while tests go on. Tests must not change a shared folder: copy it first.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading

import pytest

from k8s_schema import load_bundle
from playbook import render

from catalogs import CUSTOM_GPUS, CUSTOM_MODELS

CUSTOM = {"llmserve_models": CUSTOM_MODELS, "llmserve_gpu_count": CUSTOM_GPUS, "llmserve_storage_mode": "local-path"}
# The catalogs most test files read: started as soon as the session starts.
SESSION_CATALOGS = {"workstation": ("inventories/workstation", None), "multinode": ("inventories/multinode", None),
                    "custom": ("inventories/workstation", CUSTOM)}


class Renders:
    """One render per distinct request per session; results are (folder, CompletedProcess)."""

    def __init__(self, tmp_path_factory, jobs):
        self._factory = tmp_path_factory
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="render")
        self._lock = threading.Lock()
        self._futures = {}

    def prefetch(self, inventory="inventories/workstation", extra_vars=None, tags=None, env=None, label="render"):
        """Start the render in the background (once); returns its future."""
        key = json.dumps([inventory, extra_vars or {}, tags, env or {}], sort_keys=True)
        with self._lock:
            if key not in self._futures:
                dest = self._factory.mktemp(label)
                self._futures[key] = self._pool.submit(
                    lambda: (dest, render(dest, inventory, extra_vars=extra_vars, tags=tags, env=env)))
            return self._futures[key]

    def run(self, *args, **kwargs):
        """(folder, CompletedProcess) of the render, waiting for it; any return code."""
        return self.prefetch(*args, **kwargs).result()

    def bundle(self, *args, **kwargs):
        """(folder, {path: object}, ansible output) of a render that must succeed."""
        dest, result = self.run(*args, **kwargs)
        assert result.returncode == 0, result.stdout[-5000:]
        return dest, load_bundle(dest), result.stdout

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


def pytest_collection_modifyitems(config, items):
    """Note which session catalogs the selected tests use, so a single test file does not render them all."""
    config.llmserve_catalogs = {name for item in items for name in getattr(item, "fixturenames", ()) if name in SESSION_CATALOGS}


@pytest.fixture(scope="session")
def renders(tmp_path_factory, request):
    jobs = int(os.environ.get("LLMSERVE_RENDER_JOBS") or os.cpu_count() or 2)
    pool = Renders(tmp_path_factory, jobs)
    for label in sorted(getattr(request.config, "llmserve_catalogs", SESSION_CATALOGS)):
        pool.prefetch(*SESSION_CATALOGS[label], label=label)
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def _start_session_catalogs(renders):
    """Requesting `renders` at session start begins the catalogs the selected tests use, in the background."""
    return renders


@pytest.fixture(scope="session")
def workstation(renders):
    """(folder, {path: object}, ansible output) of inventories/workstation (storage mode hostpath)."""
    return renders.bundle(*SESSION_CATALOGS["workstation"], label="workstation")


@pytest.fixture(scope="session")
def multinode(renders):
    """(folder, {path: object}, ansible output) of inventories/multinode (storage mode longhorn)."""
    return renders.bundle(*SESSION_CATALOGS["multinode"], label="multinode")


@pytest.fixture(scope="session")
def custom(renders):
    """(folder, {path: object}, ansible output) of CUSTOM_MODELS on the workstation with 8 GPUs, storage mode local-path."""
    return renders.bundle(*SESSION_CATALOGS["custom"], label="custom")
