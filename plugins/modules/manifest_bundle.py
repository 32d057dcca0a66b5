#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: manifest_bundle
short_description: Write Kubernetes objects into the llmserve manifest bundle
version_added: "0.1.0"
description:
  - Writes each object to C(dest/<component>/<kind>-<name>.yaml) and keeps C(dest/kustomization.yaml) listing
    every manifest of the bundle, components in apply order, so C(kubectl kustomize dest) builds it.
  - Files of the component that are not among O(objects) are removed, so the component holds exactly what was rendered.
  - A file is only rewritten when its content changes, so a second render reports no change.
  - Runs on the controller (with C(delegate_to) localhost); needs no host and no cluster.
options:
  dest:
    description: Root folder of the bundle.
    type: path
    required: true
  component:
    description: Folder under O(dest), for example C(namespace) or C(models/llama-3.1-8b).
    type: str
    required: true
  objects:
    description: Kubernetes objects (mappings with C(apiVersion), C(kind), C(metadata.name)).
    type: list
    elements: dict
    default: []
  state:
    description: C(present) writes the objects; C(absent) removes the component's manifests.
    type: str
    choices: [present, absent]
    default: present
author:
  - llmserve.k3s maintainers (@llmserve)
"""

EXAMPLES = r"""
- name: Render the namespace component
  llmserve.k3s.manifest_bundle:
    dest: /srv/llmserve/manifests
    component: namespace
    objects: "{{ lookup('ansible.builtin.template', 'namespace.yaml.j2') | ansible.builtin.from_yaml_all | list }}"
  delegate_to: localhost

- name: Remove a model that left the catalog
  llmserve.k3s.manifest_bundle:
    dest: /srv/llmserve/manifests
    component: models/old-model
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
written:
  description: Files (relative to O(dest)) that were created or changed.
  returned: always
  type: list
  elements: str
  sample: [models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml]
removed:
  description: Files (relative to O(dest)) removed because they are no longer rendered.
  returned: always
  type: list
  elements: str
files:
  description: Every file the component holds now.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.k3s.plugins.module_utils._bundle import BundleError, render_files, write_component


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            component=dict(type="str", required=True),
            objects=dict(type="list", elements="dict", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        if not module.check_mode:
            os.makedirs(params["dest"], exist_ok=True)
        changed, written, removed = write_component(
            params["dest"], params["component"], params["objects"], params["state"], module.check_mode
        )
        files = sorted(os.path.join(params["component"], f) for f in render_files(params["objects"])) if params["state"] == "present" else []
    except (BundleError, OSError) as exc:
        module.fail_json(msg="manifest_bundle: component %s: %s" % (params["component"], exc))
    module.exit_json(changed=changed, written=written, removed=removed, files=files)


if __name__ == "__main__":
    main()
