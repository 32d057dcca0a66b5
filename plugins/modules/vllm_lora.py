#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vllm_lora
short_description: Load and unload LoRA adapters in running vLLM replicas, without a restart
description:
  - For each replica URL, reads C(GET /v1/models) (adapters are listed with their C(parent)), unloads the adapters
    of O(model) that O(adapters) no longer has (C(POST /v1/unload_lora_adapter)) and loads the missing ones
    (C(POST /v1/load_lora_adapter) with C(lora_name) and C(lora_path)); an adapter whose path changed is reloaded.
  - The replicas must run with C(VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) (the role sets it for a model with adapters).
  - In check mode nothing is sent but C(/v1/models); the result says what would change.
version_added: 0.1.0
author:
  - llmserve.k3s maintainers (@llmserve)
options:
  urls:
    description: Base URLs of the running replicas (the pods), without C(/v1).
    type: list
    elements: str
    required: true
  model:
    description: The base model's served name (the adapters' C(parent)).
    type: str
    required: true
  adapters:
    description: The adapters that must be served, each C({name, path}), the path as the pod sees it.
    type: list
    elements: dict
    required: true
  api_key:
    description: The cluster's internal key (Bearer). Never logged.
    type: str
  timeout:
    description: Seconds for each HTTP exchange (a load reads the adapter from disk).
    type: float
    default: 60
"""

EXAMPLES = r"""
- name: Serve the catalog's adapters in every running replica
  llmserve.k3s.vllm_lora:
    urls: ["http://10.42.0.17:8000", "http://10.42.0.18:8000"]
    model: llama-3.1-8b
    adapters:
      - {name: llama-legal, path: /models/adapters/llama-legal}
    api_key: "{{ internal_key }}"
"""

RETURN = r"""
replicas:
  description: Per replica, the adapters loaded and unloaded, and what failed (name, status, body).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.k3s.plugins.module_utils import _health, _lora


def main():
    module = AnsibleModule(
        argument_spec=dict(urls=dict(type="list", elements="str", required=True), model=dict(type="str", required=True),
                           adapters=dict(type="list", elements="dict", required=True),
                           api_key=dict(type="str", no_log=True), timeout=dict(type="float", default=60.0)),
        supports_check_mode=True)
    params = module.params
    wanted = {}
    for adapter in params["adapters"]:
        if not isinstance(adapter.get("name"), str) or not isinstance(adapter.get("path"), str):
            module.fail_json(msg="adapters: %r needs a name and a path (strings)" % (adapter,))
        wanted[adapter["name"]] = adapter["path"]
    replicas = [_lora.sync_replica(_health.http_fetch, url, params["model"], wanted, params["api_key"], module.check_mode,
                                   params["timeout"]) for url in params["urls"]]
    changed = any(r["loaded"] or r["unloaded"] for r in replicas)
    failed = [r for r in replicas if r["failed"]]
    if failed:
        module.fail_json(msg="; ".join("%s: %s" % (r["url"], ", ".join("%s (%s: %s)" % f for f in r["failed"])) for r in failed),
                         replicas=replicas, changed=changed)
    module.exit_json(changed=changed, replicas=replicas)


if __name__ == "__main__":
    main()
