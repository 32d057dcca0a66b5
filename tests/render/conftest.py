"""Bundles rendered once per test session by the real render playbook.

`renders` runs each distinct (inventory, extra vars, tags, environment) once per session and shares the result
across test files; renders asked for ahead (`prefetch`) run in the background, LLMSERVE_RENDER_JOBS at a time
(default: the CPU count, shared out among pytest-xdist workers), while tests go on. Each render goes into a
folder that does not exist before it (`<fresh folder>/bundle`), so a failed render can be seen to write nothing.
Under pytest-xdist (`make render-test` runs two workers) the first worker to ask for a render runs it and the
others wait for its result in the run's shared folder. Tests must not change a shared folder: copy it first.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import pathlib
import subprocess
import threading
import time

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

    def __init__(self, tmp_path_factory, jobs, shared=None):
        self._factory = tmp_path_factory
        self._shared = shared
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="render")
        self._lock = threading.Lock()
        self._futures = {}

    def prefetch(self, inventory="inventories/workstation", extra_vars=None, tags=None, env=None, label="render",
                 playbook="render.yml"):
        """Start the render in the background (once); returns its future. playbook: render.yml or plan.yml."""
        key = json.dumps([playbook, inventory, extra_vars or {}, tags, env or {}], sort_keys=True)
        with self._lock:
            if key not in self._futures:
                run = functools.partial(render, inventory=inventory, extra_vars=extra_vars, tags=tags, env=env,
                                        playbook=playbook)
                self._futures[key] = self._pool.submit(self._render, key, label, run)
            return self._futures[key]

    def _render(self, key, label, run):
        if self._shared is None:
            dest = self._factory.mktemp(label) / "bundle"
            return dest, run(dest)
        slot = self._shared / hashlib.sha256(key.encode()).hexdigest()[:20]
        try:
            slot.mkdir()  # the worker that creates the slot renders; the others read its result
        except FileExistsError:
            return slot  # not waited for here: this pool thread goes on with the next render
        dest = slot / label / "bundle"
        # Written whatever happens: the waiting workers get the error too, not a timeout.
        result = subprocess.CompletedProcess([], -1, stdout="the render in %s raised before it finished" % slot)
        try:
            result = run(dest)
        finally:
            (slot / "result.tmp").write_text(json.dumps({"dest": str(dest), "returncode": result.returncode, "stdout": result.stdout}))
            (slot / "result.tmp").rename(slot / "result.json")
        return dest, result

    def run(self, *args, **kwargs):
        """(folder, CompletedProcess) of the render, waiting for it; any return code."""
        done = self.prefetch(*args, **kwargs).result()
        return _shared_result(done) if isinstance(done, pathlib.Path) else done

    def bundle(self, *args, **kwargs):
        """(folder, {path: object}, ansible output) of a render that must succeed."""
        dest, result = self.run(*args, **kwargs)
        assert result.returncode == 0, result.stdout[-5000:]
        return dest, load_bundle(dest), result.stdout

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


def _shared_result(slot, timeout=1800):
    """(folder, CompletedProcess) of a render another worker runs, once it has written its result."""
    deadline = time.monotonic() + timeout
    while not (slot / "result.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no result in %s after %d s: the worker rendering it stopped" % (slot, timeout))
        time.sleep(0.2)
    data = json.loads((slot / "result.json").read_text())
    return pathlib.Path(data["dest"]), subprocess.CompletedProcess([], data["returncode"], stdout=data["stdout"])


def _shared_folder(tmp_path_factory):
    """The folder the pytest-xdist workers of this run share, or None without xdist."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return None
    folder = tmp_path_factory.getbasetemp().parent / ("renders-" + run[:16])
    folder.mkdir(exist_ok=True)
    return folder


def pytest_collection_modifyitems(config, items):
    """Note which session catalogs the selected tests use, so a single test file does not render them all."""
    config.llmserve_catalogs = {name for item in items for name in getattr(item, "fixturenames", ()) if name in SESSION_CATALOGS}


@pytest.fixture(scope="session")
def renders(tmp_path_factory, request):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    jobs = int(os.environ.get("LLMSERVE_RENDER_JOBS") or max(1, (os.cpu_count() or 2) // workers))
    pool = Renders(tmp_path_factory, jobs, _shared_folder(tmp_path_factory))
    for label in sorted(getattr(request.config, "llmserve_catalogs", SESSION_CATALOGS)):
        pool.prefetch(*SESSION_CATALOGS[label], label=label)
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def _start_session_catalogs(renders):
    """Requesting `renders` at session start begins the catalogs the selected tests use, in the background."""
    return renders


@pytest.fixture(scope="module", autouse=True)
def _module_prefetch(request, renders):
    """A test module's PREFETCH ({label: render arguments}) starts in the render pool when the module starts."""
    for label, arguments in getattr(request.module, "PREFETCH", {}).items():
        renders.prefetch(label=label, **arguments)


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
