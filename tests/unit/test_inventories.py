"""The shipped inventories: a host reached with a local connection runs modules with the controller's Python."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


def _hosts(node):
    for name, hostvars in (node.get("hosts") or {}).items():
        yield name, hostvars or {}
    for child in (node.get("children") or {}).values():
        yield from _hosts(child or {})


def test_every_local_host_uses_ansible_playbook_python():
    local = []
    for path in sorted(ROOT.glob("inventories/*/hosts.yml")):
        for group in yaml.safe_load(path.read_text()).values():
            for name, hostvars in _hosts(group):
                if hostvars.get("ansible_connection") == "local":
                    local.append(name)
                    assert hostvars.get("ansible_python_interpreter") == "{{ ansible_playbook_python }}", (path, name)
    assert local == ["workstation"]


def test_the_workstation_runs_modules_with_the_playbook_python():
    """Discovery would pick the machine's python3; the inventory makes it the venv's interpreter."""
    result = subprocess.run([str(BIN / "ansible"), "-i", str(ROOT / "inventories/workstation"), "workstation",
                             "-m", "ansible.builtin.setup", "-a", "gather_subset=!all,python filter=ansible_python"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    facts = yaml.safe_load(result.stdout.split("=>", 1)[1])["ansible_facts"]
    assert facts["ansible_python"]["executable"] == sys.executable
