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


def _role_calls():
    """(file, role, tasks_from) of every import_role / include_role with tasks_from in the playbooks and roles."""
    calls = []
    for path in sorted(list((ROOT / "playbooks").glob("*.yml")) + list((ROOT / "playbooks").glob("tasks/*.yml"))
                       + list((ROOT / "roles").glob("*/tasks/*.yml"))
                       + list((ROOT / "molecule").glob("*/*.yml"))):
        stack = [_load(path)]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, dict):
                for key in ("ansible.builtin.import_role", "ansible.builtin.include_role", "import_role", "include_role"):
                    call = node.get(key)
                    if isinstance(call, dict) and call.get("tasks_from"):
                        calls.append((str(path.relative_to(ROOT)), call["name"].split(".")[-1], call["tasks_from"]))
                stack.extend(node.values())
    return calls


def test_role_calls_found():
    assert ("playbooks/tasks/cluster_render.yml", "ingress", "preflight") in _role_calls()
    assert ("playbooks/tasks/cluster_apply.yml", "ingress", "api_keys") in _role_calls()


@pytest.mark.parametrize("where, role, entry", sorted(set(_role_calls())))
def test_every_entry_point_used_has_an_argument_spec(where, role, entry):
    """ansible-core validates only the argument spec of the entry point called: each tasks_from needs its own."""
    specs = _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    assert entry in specs, "%s calls %s with tasks_from %s, which meta/argument_specs.yml has no entry point for" % (where, role, entry)
    assert set(specs[entry].get("options") or {}) == set(specs["main"].get("options") or {}), (role, entry)


def _imports(path):
    """(role, tasks_from, validates) of the import_role tasks of a task file, in order."""
    out = []
    for task in _load(ROOT / path):
        call = task.get("ansible.builtin.import_role")
        if call:
            out.append((call["name"].split(".")[-1], call.get("tasks_from", "main"), call.get("rolespec_validate", True)))
    return out


@pytest.mark.parametrize("files", [["playbooks/tasks/cluster_render.yml"],
                                   ["playbooks/tasks/cluster_render.yml", "playbooks/tasks/cluster_apply.yml"]])
def test_every_role_is_validated_by_its_first_import_and_only_then(files):
    """render.yml runs cluster_render.yml, cluster.yml both files in one play: a role's first import there validates
    its settings (its check, tagged always), the later ones do not again (they take the same options)."""
    seen = set()
    for role, entry, validates in [call for path in files for call in _imports(path)]:
        assert validates == (role not in seen), (role, entry)
        seen.add(role)


def test_a_full_render_validates_each_role_once(workstation):
    tasks = [line for line in workstation[2].splitlines() if line.startswith("TASK [") and "Validating arguments" in line]
    roles = [line.split("TASK [")[1].split(" :")[0] for line in tasks]
    assert sorted(roles) == sorted(set(roles)), roles
    assert {"llmserve.k3s.plan", "llmserve.k3s.ingress", "llmserve.k3s.monitoring", "llmserve.k3s.vllm_models"} <= set(roles)


def _choices():
    """(role, option, what the project's own check allows) for the options whose argument spec lists choices too."""
    from ansible_collections.llmserve.k3s.plugins.module_utils import _preflight, _shared, _traefik, _tracing

    return [("gpu_device_plugin", "gpu_device_plugin_accelerator", tuple(_shared.GPU_RESOURCES)),
            ("gpu_device_plugin", "gpu_device_plugin_stack", _preflight.GPU_STACKS),
            ("vllm_models", "vllm_models_accelerator", tuple(_shared.GPU_RESOURCES)),
            ("ingress", "ingress_auth_mode", _preflight.AUTH_MODES),
            ("ingress", "ingress_tls_mode", _preflight.TLS_MODES),
            ("ingress", "ingress_alias_headers_strategy", _traefik.HEADER_STRATEGIES),
            ("ingress", "ingress_traefik_external_traffic_policy", _traefik.TRAFFIC_POLICIES),
            ("ingress", "ingress_traefik_kind", _traefik.KINDS),
            ("monitoring", "monitoring_tracing_backend", _tracing.BACKENDS)]


@pytest.mark.parametrize("role, option, allowed", _choices(), ids=lambda v: v if isinstance(v, str) else None)
def test_an_argument_specs_choices_are_what_the_check_allows(role, option, allowed):
    """The argument spec refuses a value before the role's check sees it: both must allow the same values, else a
    value one allows is refused by the other with a message that does not name what the other allows."""
    specs = _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    for entry, spec in specs.items():
        assert sorted(spec["options"][option]["choices"]) == sorted(allowed), (role, entry, option)
