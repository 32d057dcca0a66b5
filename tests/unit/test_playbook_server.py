"""The playbook server (tests/lib/playbook_server.py): a forked run is the ansible-playbook command's run.

Each case runs the same real playbook both ways, as the command (subprocess) and forked from a server of its own,
and compares what a test can see: return code, output, files written. Then what only the server has to get right:
settings ansible-core reads at import time send a run to the command, a timeout ends the run's whole process
group, and runs at the same time each have (and remove) their own ansible-local folder.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from playbook import BIN, ROOT, PlaybookServer, base_env
from playbook_server import same_import_env

TASKS = [
    {"name": "Compute", "ansible.builtin.set_fact": {"answer": "{{ (words | length) * 2 }}"}},
    {"name": "Write", "ansible.builtin.copy": {"dest": "{{ out }}/answer.txt", "mode": "0644",
                                               "content": "{{ answer }} {{ lookup('env', 'LLMSERVE_PROBE') }}\n"}},
    {"name": "Fail when asked", "ansible.builtin.fail": {"msg": "asked to fail with {{ answer }}"}, "when": "fail_now | bool"},
]


@pytest.fixture(scope="module")
def server():
    own = PlaybookServer()
    yield own
    own.close()


def _files(tmp_path, name, tasks=None):
    book = tmp_path / (name + ".yml")
    book.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks or TASKS}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return book, inventory


def _cmd(book, inventory, out, fail):
    return [str(BIN / "ansible-playbook"), "-i", str(inventory), str(book), "-e",
            '{"words": ["a", "b", "c"], "out": "%s", "fail_now": %s}' % (out, "true" if fail else "false")]


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
def test_a_forked_run_is_the_command_run(tmp_path, server, fail):
    book, inventory = _files(tmp_path, "play")
    env = base_env({"LLMSERVE_PROBE": "from-the-env"})
    runs = {}
    for way in ("command", "server"):
        out = tmp_path / way
        out.mkdir()
        cmd = _cmd(book, inventory, out, fail)
        if way == "command":
            result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=300, check=False)
        else:
            result = server.run(cmd, env, timeout=300)
            assert 0 < result.cpu_s < 300  # the run's CPU time, its task workers' included
        runs[way] = (result.returncode, result.stdout.replace(str(out), "OUT"), (out / "answer.txt").read_text())
    assert runs["server"] == runs["command"]
    assert runs["server"][0] == (2 if fail else 0)
    assert runs["server"][2] == "6 from-the-env\n"
    assert ("asked to fail with 6" in runs["server"][1]) is fail


def test_settings_read_at_import_go_to_the_command():
    base = base_env()
    assert same_import_env(dict(base, LLMSERVE_API_KEYS="k", GRAFANA_ADMIN_PASSWORD="p"), base)
    assert not same_import_env(dict(base, ANSIBLE_ACTION_PLUGINS="/x"), base)
    assert not same_import_env(dict(base, ANSIBLE_CONFIG="/other/ansible.cfg"), base)
    assert not same_import_env({k: v for k, v in base.items() if k != "ANSIBLE_NOCOLOR"}, base)
    assert not same_import_env(dict(base, HOME="/elsewhere"), base)


def test_a_timeout_ends_the_whole_run(tmp_path, server):
    book, inventory = _files(tmp_path, "slow", [{"name": "Sleep", "ansible.builtin.command": "sleep 120", "changed_when": False}])
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        server.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book)], base_env(), timeout=8)
    assert time.monotonic() - started < 30
    time.sleep(1)
    sleeping = subprocess.run(["pgrep", "-f", "sleep 120"], stdout=subprocess.PIPE, text=True, check=False).stdout.split()
    assert sleeping == [], "the run's task still sleeps: %s" % sleeping


def test_runs_at_the_same_time_keep_their_own_local_tmp(tmp_path, server):
    book, inventory = _files(tmp_path, "play")
    local_tmp = pathlib.Path(os.path.expanduser("~/.ansible/tmp"))
    before = set(local_tmp.glob("ansible-local-*"))

    def run(index):
        out = tmp_path / ("out-%d" % index)
        out.mkdir()
        return server.run(_cmd(book, inventory, out, False), base_env(), timeout=300).returncode

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(run, range(3))) == [0, 0, 0]
    assert sorted(set(local_tmp.glob("ansible-local-*")) - before) == []
