# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Why is a model not serving? A summary and diagnoses from Kubernetes API objects and vLLM logs (stdlib only).

Input is what kubernetes.core.k8s_info returns (`resources` lists of plain dicts) plus the last log lines of
the failing containers and the catalog plan; nothing here talks to a cluster, so it is tested from tables of
realistic objects and real vLLM error lines.
"""

from __future__ import absolute_import, division, print_function

import re

from ansible_collections.llmserve.k3s.plugins.module_utils._bundle import MODEL_LABEL
from ansible_collections.llmserve.k3s.plugins.module_utils._plan import INTERNAL_SECRET
from ansible_collections.llmserve.k3s.plugins.module_utils._shared import GPU_NODE_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCES

__metaclass__ = type

GPU_RESOURCE = GPU_RESOURCES["nvidia"]

# (kind, pattern, problem, fix) for vLLM / Hugging Face / CUDA errors in a container log.
LOG_PATTERNS = (
    ("kv_cache", re.compile(r"KV cache is needed, which is larger than the available KV cache memory|"
                            r"larger than the maximum number of tokens that can be stored in KV cache|"
                            r"No available memory for the cache blocks"),
     "the KV cache for max_model_len does not fit in the GPU memory left after the weights",
     "lower max_model_len{estimate}, raise gpu_memory_utilization, use kv_cache_dtype: fp8, or more "
     "tensor_parallel_size"),
    ("gpu_busy", re.compile(r"Free memory on device .* is less than desired GPU memory utilization"),
     "another process holds memory on the GPU (another model placed on the same GPU, or a stale pod)",
     "lower gpu_memory_utilization, or give the model a GPU of its own (check the placement with "
     "playbooks/status.yml and nvidia-smi on the node)"),
    ("cuda_oom", re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|CUDA error: out of memory"),
     "the GPU ran out of memory",
     "lower gpu_memory_utilization or max_num_seqs / max_num_batched_tokens, quantize (awq, fp8), or raise "
     "tensor_parallel_size"),
    ("gated", re.compile(r"Cannot access gated repo|GatedRepoError|You are trying to access a gated repo|"
                         r"Access to model \S+ is restricted"),
     "the model is gated on Hugging Face and the pod has no token, or the token's account lacks access",
     "accept the license on huggingface.co with the token's account, put the token in llmserve_hf_token "
     "(Vault) or HF_TOKEN and re-run the namespace role, or pre-download the model"),
    ("offline_missing", re.compile(r"Cannot find an appropriate cached snapshot folder|LocalEntryNotFoundError|"
                                   r"OfflineModeIsEnabled|couldn't find them in the cached files"),
     "the model is not in the model cache and the pod runs offline (HF_HUB_OFFLINE=1)",
     "pre-download it into the model cache on the host (llmserve_models_predownload) or let the pod download"),
    ("model_dir", re.compile(r"does not appear to have a file named config\.json|"
                             r"Repo id must be in the form|Invalid repository ID or local directory"),
     "the model directory is missing or incomplete",
     "check the model path and that the model cache holds it (under /var/lib/llm-models on the node)"),
    ("unreadable", re.compile(r"Permission denied|PermissionError|Read-only file system"),
     "the model cache is not readable or writable by the pod",
     "fix ownership and mode of the model cache folder on the node (model_storage_owner / _mode_bits) and "
     "re-run the host play"),
)


def _meta(obj, key, default=None):
    return (obj.get("metadata") or {}).get(key, default)


def _labels(obj):
    return _meta(obj, "labels") or {}


def parse_quantity(value):
    """Kubernetes quantity as a number ('1', '500m', 2)."""
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def gpu_table(nodes, pods, resource=GPU_RESOURCE):
    """Per node: GPUs allocatable, requested by the pods bound to it (not finished), product label."""
    used = {}
    for pod in pods or []:
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            continue
        wanted = 0.0
        for container in spec.get("containers") or []:
            requests = (container.get("resources") or {}).get("requests") or {}
            limits = (container.get("resources") or {}).get("limits") or {}
            wanted += parse_quantity(requests.get(resource, limits.get(resource, 0)))
        used[spec["nodeName"]] = used.get(spec["nodeName"], 0.0) + wanted
    rows = []
    for node in nodes or []:
        status = node.get("status") or {}
        name = _meta(node, "name")
        rows.append({
            "node": name,
            "product": _labels(node).get(GPU_PRODUCT_LABEL) or _labels(node).get("nvidia.com/gpu.product", ""),
            "capacity": int(parse_quantity((status.get("capacity") or {}).get(resource, 0))),
            "allocatable": int(parse_quantity((status.get("allocatable") or {}).get(resource, 0))),
            "used": int(used.get(name, 0)),
            "ready": any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []),
            "gpu_node": _labels(node).get(GPU_NODE_LABEL) == "true",
        })
    return rows


def pod_summary(pod):
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount", 0)) for c in containers)
    reason = ""
    last_reason = ""
    for container in containers:
        state = container.get("state") or {}
        if "waiting" in state:
            reason = state["waiting"].get("reason", "") or reason
        elif "terminated" in state:
            reason = state["terminated"].get("reason", "") or reason
        last = (container.get("lastState") or {}).get("terminated") or {}
        last_reason = last.get("reason", "") or last_reason
    if not reason and status.get("phase") == "Pending":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reason = condition.get("reason", "Unschedulable")
    return {
        "name": _meta(pod, "name"),
        "model": _labels(pod).get(MODEL_LABEL, ""),
        "node": (pod.get("spec") or {}).get("nodeName", ""),
        "phase": status.get("phase", "Unknown"),
        "ready": bool(containers) and all(c.get("ready") for c in containers),
        "restarts": restarts,
        "reason": reason,
        "last_reason": last_reason,
    }


def classify_log(text):
    """[(kind, problem, fix)] of the known errors in a log, with vLLM's max_model_len estimate when it gives one."""
    found = []
    estimate = re.search(r"estimated maximum model length is (\d+)", text or "")
    for kind, pattern, problem, fix in LOG_PATTERNS:
        if pattern.search(text or ""):
            hint = " (vLLM estimates at most %s fits)" % estimate.group(1) if estimate else ""
            found.append((kind, problem, fix.replace("{estimate}", hint)))
    return found


def error_lines(text, limit=8):
    """The last lines that carry an error, else the last lines."""
    lines = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"Error|ERROR|error:|Killed|Cannot |denied|restricted", line)
              or any(entry[1].search(line) for entry in LOG_PATTERNS)]
    return (errors or lines)[-limit:]


def _events_for(events, kind, name):
    return [e for e in events or [] if (e.get("involvedObject") or {}).get("kind") == kind
            and (e.get("involvedObject") or {}).get("name") == name]


def diagnose(plan_models, nodes, pods, pvcs, events=(), secrets=(), logs=None, hf_token_secret="hf-token",
             predownload=False, resource=GPU_RESOURCE):
    """{'gpus', 'models', 'pvcs', 'findings'}: the summary tables and what is wrong, each with what to do.

    plan_models: the catalog plan's models (name, k8s_name, gated, enabled, max_model_len, ...).
    logs: {pod name: last log lines (previous container when it restarted)}.
    """
    logs = logs or {}
    findings = []

    def find(severity, subject, problem, fix, evidence=()):
        findings.append({"severity": severity, "subject": subject, "problem": problem, "fix": fix,
                         "evidence": list(evidence)})

    gpus = gpu_table(nodes, pods, resource)
    enabled = list(plan_models or [])
    wanted_gpus = sum(int(m.get("tensor_parallel_size", 1)) * int(m.get("base_replicas", m.get("replicas", 1)))
                      for m in enabled)
    allocatable = sum(row["allocatable"] for row in gpus)
    if enabled and not allocatable:
        gpu_nodes = [row["node"] for row in gpus if row["gpu_node"]] or [row["node"] for row in gpus]
        find("error", "nodes", "no node has %s allocatable" % resource,
             "the NVIDIA device plugin is not running or finds no GPU: check its DaemonSet pods in kube-system, "
             "that the nodes carry llmserve.io/gpu=true, that the RuntimeClass 'nvidia' exists and that "
             "nvidia-smi works on the node (driver + container toolkit, then restart k3s)",
             ["nodes: %s" % ", ".join(gpu_nodes or ["none"])])
    elif wanted_gpus > allocatable:
        find("error", "nodes", "the catalog wants %d GPUs, the nodes offer %d" % (wanted_gpus, allocatable),
             "disable models, lower replicas / tensor_parallel_size, or add GPU nodes")

    claims = []
    for pvc in pvcs or []:
        phase = (pvc.get("status") or {}).get("phase", "Pending")
        name = _meta(pvc, "name")
        claims.append({"name": name, "phase": phase, "volume": (pvc.get("spec") or {}).get("volumeName", ""),
                       "storage_class": (pvc.get("spec") or {}).get("storageClassName", "")})
        if phase != "Bound":
            messages = [e.get("message", "") for e in _events_for(events, "PersistentVolumeClaim", name)]
            waiting = any("WaitForFirstConsumer" in m or "waiting for first consumer" in m for m in messages)
            if waiting:
                continue  # local-path binds when the first pod is scheduled: not a fault by itself
            find("error", "pvc/%s" % name, "PersistentVolumeClaim %s is %s" % (name, phase),
                 "check llmserve_storage_mode: hostpath needs the PersistentVolume '%s' (re-run --tags storage), "
                 "local-path needs the local-path provisioner of k3s, longhorn needs Longhorn installed"
                 % ((pvc.get("spec") or {}).get("volumeName") or name), messages[-3:])

    secret_names = {s if isinstance(s, str) else _meta(s, "name") for s in secrets or []}
    models = []
    for model in enabled:
        name = model["name"]
        mine = [pod_summary(p) for p in pods or [] if _labels(p).get(MODEL_LABEL) == name]
        ready = sum(1 for p in mine if p["ready"])
        models.append({"name": name, "k8s_name": model.get("k8s_name", ""), "pods": mine, "ready": ready,
                       "replicas": int(model.get("base_replicas", model.get("replicas", 1))),
                       "max_model_len": model.get("max_model_len"), "max_num_seqs": model.get("max_num_seqs"),
                       "tensor_parallel_size": model.get("tensor_parallel_size"),
                       "gpu_memory_utilization": model.get("gpu_memory_utilization"),
                       "placement": model.get("placement", [])})
        if model.get("gated") and not predownload and hf_token_secret not in secret_names:
            find("error", "model/%s" % name,
                 "%s is gated on Hugging Face and the Secret %s is missing"
                 % (model.get("model", name), hf_token_secret),
                 "set llmserve_hf_token (Ansible Vault) or HF_TOKEN and re-run --tags namespace, or pre-download "
                 "the model (llmserve_models_predownload: true)")
        if not mine:
            find("warning", "model/%s" % name, "no pod of %s exists" % name,
                 "apply the model: ansible-playbook playbooks/site.yml --tags %s" % name)
        for pod in mine:
            _diagnose_pod(find, model, pod, _events_for(events, "Pod", pod["name"]), logs.get(pod["name"], ""))
    return {"gpus": gpus, "models": models, "pvcs": claims, "findings": findings,
            "ok": not any(f["severity"] == "error" for f in findings)}


def _sizing_hint(model):
    """What gpu_sizing said about the model, when the plan carries its result (plan key 'sizing')."""
    sizing = model.get("sizing") or {}
    parts = [str(s) for s in sizing.get("suggestions") or []]
    recommended = sizing.get("recommended") or {}
    if recommended.get("max_model_len"):
        parts.append("recommended max_model_len %s" % recommended["max_model_len"])
    return "; gpu_sizing: %s" % "; ".join(parts) if parts else ""


def _diagnose_pod(find, model, pod, events, log):
    subject = "pod/%s" % pod["name"]
    messages = [e.get("message", "") for e in events]
    text = "\n".join(messages)
    if pod["phase"] == "Pending" and pod["reason"] in ("Unschedulable", ""):
        if "Insufficient %s" % GPU_RESOURCE in text:
            find("error", subject, "no node has a free GPU for %s" % model["name"],
                 "GPUs are all taken or not allocatable: compare allocatable and used GPUs above; disable a "
                 "model or lower its replicas", messages[-2:])
        elif "untolerated taint" in text or "didn't match Pod's node affinity/selector" in text:
            find("error", subject, "no node matches the pod's selector/tolerations",
                 "label the GPU nodes llmserve.io/gpu=true (the k3s role does) and check node_selector",
                 messages[-2:])
        elif "unbound immediate PersistentVolumeClaims" in text:
            find("error", subject, "the model cache claim is not bound", "see the PVC finding", messages[-2:])
    if "RuntimeClass" in text and "not found" in text or 'no runtime for "nvidia"' in text:
        find("error", subject, "the nvidia runtime is missing on the node",
             "install the NVIDIA container toolkit, restart k3s so containerd gets the nvidia runtime, and "
             "apply the RuntimeClass 'nvidia'", messages[-2:])
    missing = re.search(r'secret "([^"]+)" not found', text)
    if missing:
        secret = missing.group(1)
        find("error", subject, "the Secret %s the pod reads is missing" % secret,
             "re-run site.yml --tags namespace: the apply step creates %s when it is missing" % secret
             if secret == INTERNAL_SECRET else "set llmserve_hf_token (Vault) or HF_TOKEN and re-run --tags namespace",
             messages[-2:])
    if "hostPath type check failed" in text or "MountVolume.SetUp failed" in text:
        find("error", subject, "the model cache volume cannot be mounted",
             "create the model cache folder on the node (run the host play: --tags storage)", messages[-2:])
    if pod["reason"] == "OOMKilled" or pod["last_reason"] == "OOMKilled":
        find("error", subject, "the container was OOMKilled (host memory limit %s)" % (
            model.get("resources", {}).get("limits", {}).get("memory", "?")),
            "raise the model's memory limit (the size class memory_limit): loading weights needs host RAM of "
            "about the weights' size", error_lines(log, 3))
    crashing = pod["reason"] in ("CrashLoopBackOff", "Error") or pod["last_reason"] == "Error" or pod["restarts"] > 2
    matched = classify_log(log)
    for kind, problem, fix in matched:
        if kind in ("kv_cache", "cuda_oom", "gpu_busy"):
            fix = "%s; the plan has max_model_len=%s, gpu_memory_utilization=%s, tensor_parallel_size=%s%s" % (
                fix, model.get("max_model_len"), model.get("gpu_memory_utilization"),
                model.get("tensor_parallel_size"), _sizing_hint(model))
        find("error", subject, problem, fix, error_lines(log))
    if crashing and not matched and pod["last_reason"] != "OOMKilled":
        find("error", subject, "%s restarts (%s)" % (pod["restarts"], pod["reason"] or pod["last_reason"]),
             "read the last log lines below (kubectl logs --previous)", error_lines(log))
