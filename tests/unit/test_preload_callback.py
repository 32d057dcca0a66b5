"""The preload callback (plugins/callback/preload.py): the worker that runs a task finds the plugins imported.

Real ansible-playbook runs on localhost. The first task of the play is a test-only action plugin that reports what
its worker process finds already loaded: the Jinja filter and test caches, this collection's plugin modules and
the assert action plugin that a later task of the play names. With the collection's ansible.cfg (which enables
the callback) all of it is there before the task has templated anything; with the same settings minus the
callback, none of it is. What this saves per render is measured by benchmarks/render.py.
"""

from __future__ import annotations

import json
import pathlib
import sys

import yaml

from ansible_collections.llmserve.k3s.plugins.callback.preload import collection_plugins
from playbook import ROOT, config_without_preload, run_playbook

PROBE_DIR = pathlib.Path(__file__).parent / "data" / "preload"
PLAY = [{"hosts": "localhost", "gather_facts": False, "tasks": [
    {"name": "Probe", "preload_probe": {"dest": "{{ probe_dest }}"}},
    {"name": "Use a filter of the collection", "ansible.builtin.assert": {"that": "'a.b' | llmserve.k3s.k8s_name == 'vllm-a-b'"}},
]}]


def _probe(tmp_path, config):
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(PLAY))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    report = tmp_path / "probe.json"
    result = run_playbook(str(book), str(inventory), extra_vars={"probe_dest": str(report)}, timeout=300,
                          env={"ANSIBLE_CONFIG": str(config), "ANSIBLE_ACTION_PLUGINS": str(PROBE_DIR)})
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(report.read_text(encoding="utf-8"))


def test_the_collection_config_enables_the_preload():
    config = (ROOT / "ansible.cfg").read_text(encoding="utf-8")
    assert "callbacks_enabled = llmserve.k3s.preload" in config


def test_workers_find_the_plugins_loaded(tmp_path):
    probe = _probe(tmp_path, ROOT / "ansible.cfg")
    assert probe["jinja_filters"] > 50 and probe["jinja_tests"] > 20, probe
    assert probe["collection_plugins"] == collection_plugins(), probe
    assert probe["assert_action"] is True


def test_without_the_callback_each_worker_loads_them_itself(tmp_path):
    probe = _probe(tmp_path, config_without_preload(tmp_path))
    assert probe["jinja_filters"] == 0 and probe["jinja_tests"] == 0, probe
    assert probe["collection_plugins"] == [], probe
    assert probe["assert_action"] is False


def test_the_collection_plugins_listed_are_its_files():
    names = collection_plugins()
    assert "ansible_collections.llmserve.k3s.plugins.filter.llmserve" in names
    assert "ansible_collections.llmserve.k3s.plugins.action.manifest_bundle" in names
    assert all(".callback." not in name and ".modules." not in name for name in names)
