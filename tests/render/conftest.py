"""Bundles rendered once per test session by the real render playbook."""

from __future__ import annotations

import pytest

from k8s_schema import load_bundle
from playbook import render


def _rendered(tmp_path_factory, inventory):
    dest = tmp_path_factory.mktemp(inventory.split("/")[-1])
    result = render(dest, inventory)
    assert result.returncode == 0, result.stdout[-5000:]
    return dest, load_bundle(dest), result.stdout


@pytest.fixture(scope="session")
def workstation(tmp_path_factory):
    """(folder, {path: object}, ansible output) of inventories/workstation."""
    return _rendered(tmp_path_factory, "inventories/workstation")


@pytest.fixture(scope="session")
def multinode(tmp_path_factory):
    """(folder, {path: object}, ansible output) of inventories/multinode."""
    return _rendered(tmp_path_factory, "inventories/multinode")
