"""Run playbooks/host.yml against a scenario's instances from its testinfra tests (extra converges)."""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

from playbook import run_playbook  # noqa: E402  pylint: disable=wrong-import-position


def converge(extra_vars=None, tags=None, playbook="playbooks/host.yml", check=False, timeout=400):
    """ansible-playbook on the molecule inventory; returns (rc, output)."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    proc = run_playbook(pathlib.Path(playbook).name, inventory, extra_vars=extra_vars, tags=tags, check=check,
                        env={"ANSIBLE_HOST_KEY_CHECKING": "False"}, timeout=timeout)
    return proc.returncode, proc.stdout
