# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Values the whole collection shares, decided here once. Pure data and one helper, stdlib only.

Python reads them from here; templates and tasks read them from the plan fact (llmserve_plan, _plan.build_plan),
which carries them. A value that is decided here is written nowhere else.
"""

from __future__ import annotations

GIB = 1024 ** 3

# Every object the collection renders or applies carries this label: apply and prune find its objects by it.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "llmserve.k3s"
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "llmserve"
# The labels of every object that is part of the serving stack (NetworkPolicies, Secrets, RBAC ...).
LABELS = {PART_OF_LABEL: PART_OF, MANAGED_BY_LABEL: MANAGED_BY}

# The ports the pods listen on (container and Service ports): vLLM's API and metrics (vllm), the front door's OpenAI
# API (frontdoor), its forwardAuth and error pages (frontdoor_auth), its /healthz, /readyz and /metrics
# (frontdoor_metrics), and a vllm-router's metrics (router_metrics; its API listens on the vllm port).
PORTS = {"vllm": 8000, "frontdoor": 8080, "frontdoor_auth": 8081, "frontdoor_metrics": 9090, "router_metrics": 29000}

# The label every pod of a kind carries, whatever model it serves: what Services, NetworkPolicies and monitors select.
NAME_LABEL = "app.kubernetes.io/name"
POD_LABELS = {
    "vllm": {NAME_LABEL: "vllm"},
    "router": {NAME_LABEL: "vllm-router"},
    "frontdoor": {NAME_LABEL: "llmserve-frontdoor"},
    "redis": {NAME_LABEL: "llmserve-redis"},
}

# The vLLM release the collection deploys (the vllm_models accelerator profiles' nvidia and amd tags, the front door's
# image): sizing models its memory; a unit test keeps the role defaults in step.
VLLM_VERSION = "0.32.0"

# Relative difference between the KV cache the plan expects and the one vLLM reports that still counts as agreeing
# (health and status playbooks, the plan report's kv_check).
KV_TOLERANCE = 0.10

# The extended resource of each accelerator profile (llmserve_accelerator): GPUs per pod, quota, allocatable.
GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel-gaudi": "habana.ai/gaudi"}
# The node label of a GPU node (the k3s role sets it, "true"), which the GPU pods select; and its GPU's product name.
GPU_NODE_LABEL = "llmserve.io/gpu"
GPU_PRODUCT_LABEL = "llmserve.io/gpu-product"

# The API's roots on the ingress and the front door: /v1 (every model) and /models/<name>/v1 (one model).
API_ROOT = "/v1"
MODELS_ROOT = "/models"


def model_path(name):
    """The path of one model's API on the ingress: /models/<name>/v1 (the plan's path of each model)."""
    return "%s/%s%s" % (MODELS_ROOT, name, API_ROOT)


def table(rows):
    """Plain-text columns: each cell padded to its column's widest, two spaces between, no trailing blanks."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
