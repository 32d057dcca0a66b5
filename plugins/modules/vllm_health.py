#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vllm_health
short_description: Check that a vLLM OpenAI endpoint is really serving
description:
  - Probes a vLLM OpenAI-compatible server (a pod, a Service or an ingress path) and says whether it is ready
    and, if not, why.
  - "One check is: C(GET /health) (no key), C(GET /v1/models) (with O(api_key)), optionally a one-token
    C(POST /v1/completions) that is timed, optionally C(GET /metrics) for the queues and the KV cache use."
  - Through an ingress that routes only C(/v1) of a model (for example C(https://llm.example/models/x)),
    C(/health) answers the proxy's 404; C(/v1/models) is then the readiness signal (vLLM serves it only
    once the engine is up).
  - With O(timeout) above 0 it checks every O(interval) seconds until ready, or until a status that waiting
    cannot fix (V(unauthorized), V(model_missing)), or until the time is up (status V(timeout)).
  - Changes nothing; runs the same in check mode.
version_added: 0.1.0
author:
  - llmserve.k3s maintainers (@llmserve)
options:
  url:
    description:
      - Base URL of the endpoint, without C(/v1) (a trailing C(/v1) is removed).
      - "Examples: C(http://10.43.12.7:8000) (ClusterIP), C(http://vllm-llama-3-1-8b.llm-serving.svc:8000)
        (inside the cluster), C(https://llm.example/models/llama-3.1-8b) (ingress)."
    type: str
    required: true
  model:
    description:
      - The served model name expected in C(/v1/models). Status V(model_missing) when it is not there.
      - When omitted, the first served model is probed.
    type: str
  api_key:
    description:
      - Bearer key for C(/v1/*) (vLLM C(--api-key) or the ingress). Never logged.
    type: str
  headers:
    description:
      - Extra request headers, for example C(Host) to reach an ingress by IP address.
    type: dict
    default: {}
  validate_certs:
    description:
      - Verify the TLS certificate of an https URL.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the endpoint's certificate.
    type: path
  timeout:
    description:
      - Seconds to wait for ready. V(0) makes a single check.
    type: int
    default: 0
  interval:
    description:
      - Seconds between checks while waiting.
    type: int
    default: 5
  completion_probe:
    description:
      - Send a one-token completion and time it (C(latency_ms.completion)).
    type: bool
    default: true
  check_metrics:
    description:
      - Read C(/metrics) for C(metrics). An unreadable C(/metrics) (for example not routed by the ingress)
        only adds a note.
    type: bool
    default: true
  fail_on_unready:
    description:
      - Fail the task when the endpoint is not ready. With V(false) the task succeeds and RV(ready) and
        RV(status) tell.
    type: bool
    default: true
notes:
  - Uses only the Python standard library on the host that runs it.
  - Kubernetes Service DNS names (C(*.svc)) resolve only inside the cluster. From a node use the Service's
    ClusterIP, from elsewhere the ingress URL.
seealso:
  - name: vLLM OpenAI-compatible server
    description: The endpoints this module probes.
    link: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html
"""

EXAMPLES = r"""
- name: Wait up to 10 minutes for a model behind its Service
  llmserve.k3s.vllm_health:
    url: "http://{{ service_cluster_ip }}:8000"
    model: llama-3.1-8b
    timeout: 600
    interval: 10

- name: Check a model through the ingress, reading the result instead of failing
  llmserve.k3s.vllm_health:
    url: https://llm.example.com/models/llama-3.1-8b
    model: llama-3.1-8b
    api_key: "{{ llmserve_api_key }}"
    ca_path: /etc/ssl/certs/llm-example-ca.pem
    fail_on_unready: false
  register: llama_health

- name: Reach the ingress by address with the Host header
  llmserve.k3s.vllm_health:
    url: https://192.0.2.10/models/qwen2.5-7b
    headers:
      Host: llm.example.com
    validate_certs: false
    completion_probe: false
"""

RETURN = r"""
ready:
  description: Whether the endpoint serves the model.
  returned: always
  type: bool
  sample: true
status:
  description:
    - "V(ready); V(loading): the port accepts connections but vLLM does not answer yet, it is loading the model;
      V(unreachable): no connection, DNS failure, TLS failure, or the proxy has no ready backend or no route;
      V(unauthorized): 401/403, the key is missing or wrong; V(model_missing): O(model) is not served;
      V(rate_limited): 429; V(unhealthy): vLLM answers 5xx or the completion fails; V(timeout): O(timeout)
      passed on a transient status (RV(last_status) says which)."
  returned: always
  type: str
  sample: ready
last_status:
  description: The status of the last check (differs from RV(status) only when RV(status) is V(timeout)).
  returned: always
  type: str
  sample: loading
models:
  description: Served model names from C(/v1/models).
  returned: always
  type: list
  elements: str
  sample: [llama-3.1-8b]
latency_ms:
  description: Milliseconds per probe of the last check (keys health, models, completion, metrics, those made).
  returned: always
  type: dict
  sample: {health: 1.9, models: 3.2, completion: 41.7, metrics: 4.0}
metrics:
  description:
    - Running and waiting requests and KV cache use (a fraction, 1.0 = full) from C(/metrics), for the model
      when its samples carry a C(model_name) label. Empty when not read.
  returned: always
  type: dict
  sample: {running: 0, waiting: 0, kv_cache_usage_perc: 0.0}
kv_cache:
  description:
    - The KV cache vLLM allocated, from C(vllm:cache_config_info) on C(/metrics) (the smallest engine's).
    - C(kv_cache_tokens) is C(num_gpu_blocks) x C(block_size). Empty when not read.
  returned: always
  type: dict
  sample: {num_gpu_blocks: 8192, block_size: 128, kv_cache_tokens: 1048576, kv_cache_memory_bytes: 1073741824,
           gpu_memory_utilization: 0.92, cache_dtype: auto, engines: 1}
waited_s:
  description: Seconds spent checking.
  returned: always
  type: float
  sample: 63.2
checks:
  description: How many checks were made.
  returned: always
  type: int
  sample: 7
notes:
  description: Remarks that do not change the status (health route missing, metrics not readable).
  returned: always
  type: list
  elements: str
msg:
  description: What was found, naming the cause when not ready.
  returned: always
  type: str
  sample: "llama-3.1-8b ready at http://10.43.12.7:8000, completion 42 ms"
url:
  description: The base URL checked (normalized).
  returned: always
  type: str
client_address:
  description:
    - The client address Traefik recorded for the C(/v1/models) request, from the front door's
      C(X-Llmserve-Client-Address) answer header (the ingress and shared endpoints); null when the answer had none.
  returned: always
  type: str
  sample: 203.0.113.7
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.k3s.plugins.module_utils import _health

ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    model=dict(type="str"),
    api_key=dict(type="str", no_log=True),
    headers=dict(type="dict", default={}),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="int", default=0),
    interval=dict(type="int", default=5),
    completion_probe=dict(type="bool", default=True),
    check_metrics=dict(type="bool", default=True),
    fail_on_unready=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        url = _health.normalize_url(params["url"])
    except ValueError as err:
        module.fail_json(msg=str(err))
    errors = _health.validate_args(params["timeout"], params["interval"], params["headers"])
    if errors:
        module.fail_json(msg="; ".join(errors))
    context = None
    if url.startswith("https:"):
        try:
            context = _health.ssl_context(params["validate_certs"], params["ca_path"])
        except (OSError, ValueError) as err:
            module.fail_json(msg="ca_path %s cannot be used as a CA file: %s" % (params["ca_path"], err))

    def fetch(target, method, headers, body, timeout):
        return _health.http_fetch(target, method, headers, body, timeout, context)

    result = _health.wait_ready(fetch, url, params["model"], params["api_key"], params["headers"],
                                params["completion_probe"], params["check_metrics"], params["timeout"],
                                params["interval"])
    result.update(changed=False, url=url)
    if not result["ready"] and params["fail_on_unready"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
