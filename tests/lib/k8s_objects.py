"""Kubernetes objects shaped as kubernetes.core.k8s_info returns them (k3s 1.35), for the status diagnoses' tests."""

from __future__ import annotations


def node(name="workstation", allocatable=4, gpu_label=True):
    labels = {"kubernetes.io/hostname": name, "node-role.kubernetes.io/control-plane": "true"}
    if gpu_label:
        labels.update({"llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40"})
    status = {
        "capacity": {"cpu": "64", "memory": "527993708Ki", "pods": "110"},
        "allocatable": {"cpu": "64", "memory": "527993708Ki", "pods": "110"},
        "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True",
                                                                       "reason": "KubeletReady"}],
        "nodeInfo": {"containerRuntimeVersion": "containerd://2.1.5-k3s1", "kubeletVersion": "v1.35.0+k3s1"},
    }
    if allocatable is not None:
        status["capacity"]["nvidia.com/gpu"] = str(allocatable)
        status["allocatable"]["nvidia.com/gpu"] = str(allocatable)
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "status": status}


def pod(model="llama-3.1-8b", name=None, phase="Running", ready=True, restarts=0, state=None, last=None, gpus=1,
        node_name="workstation", conditions=None):
    k8s = "vllm-" + model.replace(".", "-")
    container = {"name": "vllm", "ready": ready, "restartCount": restarts, "image": "docker.io/vllm/vllm-openai:v0.32.0",
                 "state": state or ({"running": {"startedAt": "2026-11-23T10:00:00Z"}} if phase == "Running" else
                                    {"waiting": {"reason": "ContainerCreating"}}),
                 "lastState": {"terminated": last} if last else {}}
    spec = {"containers": [{"name": "vllm", "resources": {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(gpus)},
                                                          "limits": {"memory": "32Gi", "nvidia.com/gpu": str(gpus)}}}],
            "runtimeClassName": "nvidia"}
    if node_name:
        spec["nodeName"] = node_name
    status = {"phase": phase, "conditions": conditions or []}
    if phase != "Pending" or state:
        status["containerStatuses"] = [container]
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec, "status": status,
            "metadata": {"name": name or k8s + "-7d9c6b5f4-x2k8p", "namespace": "llm-serving",
                         "labels": {"app.kubernetes.io/name": "vllm", "llmserve.io/model": model}}}


def pvc(phase="Bound", name="llm-models", storage_class=""):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "llm-serving"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                     "volumeName": "llm-models" if phase == "Bound" else ""},
            "status": {"phase": phase}}


def event(kind, name, reason, message, type_="Warning"):
    return {"apiVersion": "v1", "kind": "Event", "type": type_, "reason": reason, "message": message,
            "involvedObject": {"kind": kind, "name": name, "namespace": "llm-serving"}}
