"""manifest_bundle through ansible-playbook (the action plugin in the controller's process) and as a module process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _bundle
from playbook import ROOT, run_playbook

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm-m", "namespace": "llm-serving"},
           "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}}
CONFIG = {"apiVersion": "llmserve.io/v1alpha1", "kind": "LLMConfig", "metadata": {"name": "m", "namespace": "llm-serving"},
          "spec": {"model": "org/m", "modelSize": "small", "gpuRequired": 1, "replicaCount": 1}}

PLAYBOOK = """
- name: Exercise manifest_bundle
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    objects: {objects}
    changed_objects: {changed_objects}
  tasks:
    - name: First write
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: models/m, objects: "{{{{ objects }}}}"}}
      register: first
    - name: Same objects again
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: models/m, objects: "{{{{ objects }}}}"}}
      register: second
    - name: Changed objects in check mode
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: models/m, objects: "{{{{ changed_objects }}}}"}}
      check_mode: true
      register: checked
    - name: One object fewer
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: models/m, objects: "{{{{ objects[:1] }}}}"}}
      register: pruned
    - name: Bad component
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: ../escape, objects: "{{{{ objects }}}}"}}
      register: bad
      ignore_errors: true
    - name: Unknown argument
      llmserve.k3s.manifest_bundle: {{dest: "{dest}", component: models/m, object: "{{{{ objects }}}}"}}
      register: unknown
      ignore_errors: true
    - name: Save the results
      ansible.builtin.copy:
        content: "{{{{ dict(first=first, second=second, checked=checked, pruned=pruned, bad=bad, unknown=unknown) | to_json }}}}"
        dest: "{results}"
        mode: "0644"
"""


def test_through_ansible_playbook(tmp_path):
    dest, results = tmp_path / "bundle", tmp_path / "results.json"
    changed = json.loads(json.dumps(SERVICE))
    changed["spec"]["ports"][0]["port"] = 8080
    playbook = tmp_path / "exercise.yml"
    playbook.write_text(PLAYBOOK.format(objects=json.dumps([SERVICE, CONFIG]), changed_objects=json.dumps([changed, CONFIG]),
                                        dest=dest, results=results), encoding="utf-8")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable, encoding="utf-8")
    proc = run_playbook(str(playbook), str(inventory), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = json.loads(results.read_text(encoding="utf-8"))
    assert out["first"]["changed"] is True
    assert out["first"]["written"] == ["models/m/llmconfig-m.yaml", "models/m/service-vllm-m.yaml"]
    assert out["first"]["files"] == out["first"]["written"]
    assert (out["second"]["changed"], out["second"]["written"], out["second"]["removed"]) == (False, [], [])
    assert (out["checked"]["changed"], out["checked"]["written"]) == (True, ["models/m/service-vllm-m.yaml"])
    assert (out["pruned"]["changed"], out["pruned"]["removed"]) == (True, ["models/m/llmconfig-m.yaml"])
    assert out["bad"]["failed"] is True and "component '../escape' is not a relative path" in out["bad"]["msg"]
    assert out["unknown"]["failed"] is True and "object" in out["unknown"]["msg"]
    # check mode left the file as the second run wrote it; the prune removed the LLMConfig from the kustomization.
    assert yaml.safe_load((dest / "models/m/service-vllm-m.yaml").read_text(encoding="utf-8")) == _bundle.labelled(SERVICE, "models/m")
    assert yaml.safe_load((dest / "kustomization.yaml").read_text(encoding="utf-8"))["resources"] == ["models/m/service-vllm-m.yaml"]
    assert not (tmp_path / "escape").exists()


def _module(args, tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".venv" / "collections"))
    proc = subprocess.run([sys.executable, str(ROOT / "plugins" / "modules" / "manifest_bundle.py"), str(path)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return json.loads(proc.stdout)


def test_as_a_module_process(tmp_path):
    """The module itself (what runs where the action plugin is not used), with its own argument parsing."""
    dest = str(tmp_path / "bundle")
    first = _module({"dest": dest, "component": "models/m", "objects": [SERVICE]}, tmp_path)
    assert (first["changed"], first["written"]) == (True, ["models/m/service-vllm-m.yaml"])
    second = _module({"dest": dest, "component": "models/m", "objects": [SERVICE]}, tmp_path)
    assert second["changed"] is False
    checked = _module({"dest": dest, "component": "models/m", "objects": [], "state": "absent", "_ansible_check_mode": True}, tmp_path)
    assert (checked["changed"], checked["removed"]) == (True, ["models/m/service-vllm-m.yaml"])
    assert pathlib.Path(dest, "models/m/service-vllm-m.yaml").is_file()
    failed = _module({"dest": dest, "component": "models/m", "objects": [{"kind": "Service"}]}, tmp_path)
    assert failed["failed"] is True
    assert failed["msg"].startswith("manifest_bundle: component models/m: object needs apiVersion, kind and metadata.name")
