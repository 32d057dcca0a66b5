"""Bundles rendered once per test session by the real render playbook."""

from __future__ import annotations

import pytest

from k8s_schema import load_bundle
from playbook import render

from catalogs import CUSTOM_GPUS, CUSTOM_MODELS


def _rendered(tmp_path_factory, inventory, extra_vars=None, label=None):
    dest = tmp_path_factory.mktemp(label or inventory.split("/")[-1])
    result = render(dest, inventory, extra_vars=extra_vars)
    assert result.returncode == 0, result.stdout[-5000:]
    return dest, load_bundle(dest), result.stdout


@pytest.fixture(scope="session")
def workstation(tmp_path_factory):
    """(folder, {path: object}, ansible output) of inventories/workstation (storage mode hostpath)."""
    return _rendered(tmp_path_factory, "inventories/workstation")


@pytest.fixture(scope="session")
def multinode(tmp_path_factory):
    """(folder, {path: object}, ansible output) of inventories/multinode (storage mode longhorn)."""
    return _rendered(tmp_path_factory, "inventories/multinode")


@pytest.fixture(scope="session")
def custom(tmp_path_factory):
    """(folder, {path: object}, ansible output) of CUSTOM_MODELS on the workstation with 8 GPUs, storage mode local-path."""
    extra = {"llmserve_models": CUSTOM_MODELS, "llmserve_gpu_count": CUSTOM_GPUS, "llmserve_storage_mode": "local-path"}
    return _rendered(tmp_path_factory, "inventories/workstation", extra, label="custom")
