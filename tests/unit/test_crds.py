"""Where the render tests get the upstream CRD files (tests/lib/crds.py), on a plain clone too.

GitHub cannot be reached from the test machines, so the download path is exercised against a local HTTP server on
127.0.0.1 laid out like raw.githubusercontent.com, and the offline case against a closed port.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

import crds

ROOT = pathlib.Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def mirror(folder):
    """Serve folder on 127.0.0.1; yields (base URL, list of requested paths)."""
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1], requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


_HELD = []


def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound, never listening, held for the rest of the process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]


def _upstream_layout(tmp_path, change=None):
    """The pinned files at their upstream paths (owner/repo/ref/path) under tmp_path/mirror; change=name alters one."""
    root = tmp_path / "mirror"
    for crd, path in zip(crds.CRDS, crds.crd_files()):
        dest = root / crd.repo / crd.ref / crd.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        body = path.read_bytes()
        dest.write_bytes(body + b"# changed\n" if crd.name == change else body)
    return root


def _plain_env(tmp_path, base_url):
    env = {k: v for k, v in os.environ.items() if k != "LLMSERVE_CRDS_DIR"}
    env.update(LLMSERVE_TEST_CACHE=str(tmp_path / "cache"), LLMSERVE_CRDS_BASE_URL=base_url)
    return env


def test_the_pinned_files_are_the_upstream_crds_the_tests_need():
    files = crds.crd_files()
    assert [p.name for p in files] == [c.name for c in crds.CRDS]
    assert all(crds._sha256(p) == c.sha256 for p, c in zip(files, crds.CRDS))  # pylint: disable=protected-access
    kinds = {doc["spec"]["names"]["kind"] for p in files for doc in yaml.safe_load_all(p.read_text()) if doc}
    assert {"Middleware", "IngressRoute", "TraefikService", "PodMonitor", "ServiceMonitor", "PrometheusRule",
            "HelmChart", "HelmChartConfig"} <= kinds
    assert {c.ref for c in crds.CRDS} == {"v0.93.0", "v0.17.7", "90164283504bd793bf4d45d1577fbf6fe04c23af"}


def test_a_plain_clone_downloads_verifies_and_caches_them(tmp_path):
    with mirror(_upstream_layout(tmp_path)) as (base, requested):
        env = _plain_env(tmp_path, base)
        folder = crds.resolve(env=env, root=tmp_path / "clone")
        assert folder == tmp_path / "cache" / "crds"
        assert sorted(requested) == sorted("/%s/%s/%s" % (c.repo, c.ref, c.path) for c in crds.CRDS)
        for crd, original in zip(crds.CRDS, crds.crd_files()):
            assert (folder / crd.name).read_bytes() == original.read_bytes()
        # A second session reads the cache; a damaged cached file is fetched again.
        (folder / crds.CRDS[0].name).write_text("damaged")
        assert crds.resolve(env=env, root=tmp_path / "clone") == folder
        assert len(requested) == len(crds.CRDS) + 1
        assert crds._sha256(folder / crds.CRDS[0].name) == crds.CRDS[0].sha256  # pylint: disable=protected-access


def test_a_file_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path):
    changed = crds.CRDS[2].name
    with mirror(_upstream_layout(tmp_path, change=changed)) as (base, _requested):
        with pytest.raises(crds.CrdsUnavailable) as err:
            crds.resolve(env=_plain_env(tmp_path, base), root=tmp_path / "clone")
    assert changed in str(err.value) and crds.CRDS[2].sha256 in str(err.value) and "nothing was kept" in str(err.value)
    assert not (tmp_path / "cache" / "crds" / changed).exists()
    assert [p.name for p in (tmp_path / "cache" / "crds").iterdir()] == [c.name for c in crds.CRDS[:2]]


def test_llmserve_crds_dir_wins_and_is_checked(tmp_path):
    for path in crds.crd_files():
        shutil.copy(path, tmp_path / path.name)
    env = {"LLMSERVE_CRDS_DIR": str(tmp_path), "LLMSERVE_CRDS_BASE_URL": "http://127.0.0.1:%d" % closed_port()}
    assert crds.resolve(env=env, root=tmp_path / "clone") == tmp_path
    (tmp_path / crds.CRDS[-1].name).unlink()
    with pytest.raises(crds.CrdsUnavailable, match="LLMSERVE_CRDS_DIR.*%s is missing" % crds.CRDS[-1].name):
        crds.resolve(env=env, root=tmp_path / "clone")


PROBE = '''
import pytest
from k8s_schema import validate

MIDDLEWARE = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware", "metadata": {"name": "m"},
              "spec": {"stripPrefix": {"prefixes": ["/x"]}}}


@pytest.mark.parametrize("n", range(10))
def test_middleware_validates(n):
    assert validate(MIDDLEWARE) == []
'''


def test_offline_plain_clone_stops_the_suite_at_once_with_one_message(tmp_path):
    """pytest on a copy of the test harness with no ../shared beside it and the download at a closed port."""
    clone = tmp_path / "clone"
    (clone / "tests" / "lib").mkdir(parents=True)
    (clone / "tests" / "render").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", clone / "tests")
    for name in ("crds.py", "k8s_schema.py"):
        shutil.copy(ROOT / "tests" / "lib" / name, clone / "tests" / "lib")
    (clone / "tests" / "render" / "test_probe.py").write_text(PROBE)
    env = _plain_env(tmp_path, "http://127.0.0.1:%d" % closed_port())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(clone / "tests" / "render")],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("The render tests need the upstream CRD files") == 1, output
    assert "LLMSERVE_CRDS_DIR" in output and "Connection refused" in output and str(clone.parent / "shared" / "crds") in output
    assert "no schema" not in output and not re.search(r"\d+ (passed|failed|skipped|error)", output), output
    assert "no tests ran" in output
    assert elapsed < 30, "took %.1f s" % elapsed
    assert not (tmp_path / "cache" / "crds").exists() or not any((tmp_path / "cache" / "crds").iterdir())
