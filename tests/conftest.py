"""Shared pytest setup: the collection importable as ansible_collections.llmserve.k3s, tests/lib on the path."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".venv" / "collections"
for path in (str(COLLECTIONS), str(ROOT / "tests" / "lib")):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))


def pytest_collection_finish(session):
    """Stop the whole run at once, with one message, when tests that validate CRs cannot get the CRD files.

    A module that validates objects imports k8s_schema.validate (or k8s_schema itself); without the files each of
    its tests would fail on its own with a schema error, so the lookup (tests/lib/crds.py) runs here instead.
    """
    schema = sys.modules.get("k8s_schema")
    if schema is None or session.config.option.collectonly:
        return
    users = {id(schema), id(schema.validate), id(schema.crd_schemas)}
    modules = {id(item.module): item.module for item in session.items if getattr(item, "module", None) is not None}
    if not any(id(value) in users for module in modules.values() for value in vars(module).values()):
        return
    import crds  # pylint: disable=import-outside-toplevel  # tests/lib is on sys.path only from here on

    try:
        crds.crd_files()
    except crds.CrdsUnavailable as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session", autouse=True)
def _playbook_server():
    """Playbook runs fork from one process that has imported ansible-core (tests/lib/playbook_server.py).

    LLMSERVE_PLAYBOOK_FORK=0 runs every playbook as the ansible-playbook command instead.
    """
    if os.environ.get("LLMSERVE_PLAYBOOK_FORK", "1") == "0":
        yield None
        return
    import playbook  # pylint: disable=import-outside-toplevel  # tests/lib is on sys.path only from here on

    yield playbook.start_server()
    playbook.stop_server()
