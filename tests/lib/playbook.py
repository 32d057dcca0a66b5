"""Run the real render playbook (ansible-playbook playbooks/render.yml) for tests and benchmarks."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


def run_playbook(playbook, inventory, extra_vars=None, tags=None, check=False, extra_args=(), env=None, timeout=900):
    """ansible-playbook from this venv; returns CompletedProcess (stdout and stderr together in .stdout)."""
    cmd = [str(BIN / "ansible-playbook"), "-i", str(ROOT / inventory) if not os.path.isabs(str(inventory)) else str(inventory),
           str(ROOT / "playbooks" / playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", tags]
    if check:
        cmd.append("--check")
    cmd += list(extra_args)
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".venv" / "collections"))
    full_env.update(env or {})
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=timeout, check=False)
    _log_run(playbook, inventory, extra_vars, tags, check, extra_args, time.monotonic() - started)
    return result


def _log_run(playbook, inventory, extra_vars, tags, check, extra_args, seconds):
    """One JSON line per run into $LLMSERVE_PLAYBOOK_LOG when set: how many runs a suite makes and what they cost."""
    log = os.environ.get("LLMSERVE_PLAYBOOK_LOG")
    if not log:
        return
    entry = {"playbook": str(playbook), "inventory": str(inventory), "extra_vars": extra_vars, "tags": tags,
             "check": check, "args": list(extra_args), "seconds": round(seconds, 1),
             "test": os.environ.get("PYTEST_CURRENT_TEST", "")}
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def render(dest, inventory="inventories/workstation", extra_vars=None, tags=None, **kwargs):
    """Render the bundle of an inventory into dest; returns the CompletedProcess."""
    ev = {"llmserve_render_dir": str(dest)}
    ev.update(extra_vars or {})
    return run_playbook("render.yml", inventory, extra_vars=ev, tags=tags, **kwargs)


def recap(output):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the PLAY RECAP line for localhost."""
    for line in output.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (p.split("=") for p in line.split(":", 1)[1].split())}
    raise AssertionError("no PLAY RECAP for localhost in:\n" + output[-3000:])
