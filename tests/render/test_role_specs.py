"""Every role documents exactly the variables it has: meta/argument_specs.yml `main` options == defaults/main.yml keys."""

from __future__ import annotations

import pytest
import yaml

from playbook import ROOT

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def test_roles_found():
    assert {"llm_namespace", "manifests", "model_storage", "vllm_models"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    folder = ROOT / "roles" / role
    assert (folder / "meta" / "argument_specs.yml").is_file(), "%s has no meta/argument_specs.yml" % role
    specs = _load(folder / "meta" / "argument_specs.yml")["argument_specs"]
    assert "main" in specs, "%s: argument_specs has no main entry point" % role
    options = set((specs["main"].get("options") or {}))
    defaults = set(_load(folder / "defaults" / "main.yml")) if (folder / "defaults" / "main.yml").is_file() else set()
    assert sorted(options - defaults) == [], "%s: documented in argument_specs.yml but not in defaults/main.yml" % role
    assert sorted(defaults - options) == [], "%s: in defaults/main.yml but not documented in argument_specs.yml" % role


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_carry_the_role_name(role):
    folder = ROOT / "roles" / role
    if not (folder / "defaults" / "main.yml").is_file():
        pytest.skip("%s has no defaults" % role)
    assert [k for k in _load(folder / "defaults" / "main.yml") if not k.startswith(role + "_")] == []
