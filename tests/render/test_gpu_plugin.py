"""The gpu component (NVIDIA device plugin, time-slicing, GPU Operator) and the accelerator profiles of the model pods.

Rendered by the real playbook and validated against Kubernetes 1.35 and the helm-controller CRDs; the device plugin,
the operator and the GPUs themselves do not run here.
"""

from __future__ import annotations

import pytest
import yaml

from k8s_schema import validate


# The module's bundles (extra vars, tags), rendered in the background from the module's first test on.
# Every run plans the whole catalog first (the plan fact), so a gpu-only render with GPUs cut into slices needs a
# catalog that fits the slices: the seed's models do not fit a quarter of an L40.
SMALL = [{"name": "qwen-small", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5, "max_model_len": 4096}]
RENDERS = {
    "sliced": ({"llmserve_gpu_time_slicing_replicas": 4, "llmserve_models": SMALL}, "gpu"),
    "operator": ({"llmserve_gpu_stack": "gpu-operator", "llmserve_gpu_time_slicing_replicas": 2, "llmserve_models": SMALL}, "gpu"),
    "amd": ({"llmserve_accelerator": "amd", "llmserve_gpu_stack": "none"}, "gpu,models,namespace"),
    "gaudi": ({"llmserve_accelerator": "intel-gaudi", "llmserve_gpu_stack": "none"}, "gpu,models"),
}


PREFETCH = {name: {"extra_vars": extra, "tags": tags} for name, (extra, tags) in RENDERS.items()}


def _render(renders, name, extra, tags):
    return renders.bundle(extra_vars=extra, tags=tags, label=name)[1]


@pytest.fixture(scope="module")
def sliced(renders):
    return _render(renders, "sliced", *RENDERS["sliced"])


@pytest.fixture(scope="module")
def operator(renders):
    return _render(renders, "operator", *RENDERS["operator"])


@pytest.fixture(scope="module")
def amd(renders):
    return _render(renders, "amd", *RENDERS["amd"])


@pytest.fixture(scope="module")
def gaudi(renders):
    return _render(renders, "gaudi", *RENDERS["gaudi"])


def _kind(bundle, kind, folder="gpu/"):
    return [o for p, o in bundle.items() if p.startswith(folder) and o["kind"] == kind]


def test_device_plugin_daemonset(workstation):
    (ds,) = _kind(workstation[1], "DaemonSet")
    assert validate(ds) == []
    spec = ds["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"llmserve.io/gpu": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (ctr,) = spec["containers"]
    image, tag = ctr["image"].rsplit(":", 1)
    assert image == "nvcr.io/nvidia/k8s-device-plugin" and tag.startswith("v0.") and tag != "latest"
    assert {"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"} in ctr["volumeMounts"]
    assert not _kind(workstation[1], "ConfigMap")  # no time-slicing by default
    assert "CONFIG_FILE" not in {e["name"] for e in ctr["env"]}


def test_time_slicing_config(sliced):
    (cm,) = _kind(sliced, "ConfigMap")
    (ds,) = _kind(sliced, "DaemonSet")
    assert validate(cm) == [] and validate(ds) == []
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert config["sharing"]["timeSlicing"]["failRequestsGreaterThanOne"] is True
    (ctr,) = ds["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    mount = [m for m in ctr["volumeMounts"] if m["name"] == "config"][0]["mountPath"]
    assert env["CONFIG_FILE"] == mount + "/config.yaml"
    assert ds["spec"]["template"]["spec"]["volumes"][1]["configMap"]["name"] == cm["metadata"]["name"]
    assert ds["spec"]["template"]["metadata"]["annotations"]["llmserve.io/config-hash"]


def test_gpu_operator_helm_chart(operator):
    (chart,) = _kind(operator, "HelmChart")
    assert validate(chart) == []
    assert not _kind(operator, "DaemonSet")
    spec = chart["spec"]
    assert spec["chart"] == "gpu-operator" and spec["version"].startswith("v2") and spec["repo"].startswith("https://")
    values = yaml.safe_load(spec["valuesContent"])
    # The host roles installed the driver and the toolkit: the operator must not install them again.
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    assert values["devicePlugin"]["config"] == {"name": "nvidia-device-plugin-config", "default": "any"}
    (cm,) = _kind(operator, "ConfigMap")
    assert cm["metadata"]["namespace"] == spec["targetNamespace"]
    assert yaml.safe_load(cm["data"]["any"])["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 2
    (ns,) = _kind(operator, "Namespace")
    assert [validate(o) for o in (cm, ns)] == [[], []]


@pytest.mark.parametrize("name, resource, image, runtime, command", [
    ("amd", "amd.com/gpu", "docker.io/vllm/vllm-openai-rocm", None, None),
    ("gaudi", "habana.ai/gaudi", "vault.habana.ai/gaudi-docker/", None, ["vllm", "serve"]),
    ("workstation", "nvidia.com/gpu", "docker.io/vllm/vllm-openai", "nvidia", None),
])
def test_accelerator_profiles_shape_the_model_pods(name, resource, image, runtime, command, request):
    bundle = request.getfixturevalue(name)
    bundle = bundle[1] if isinstance(bundle, tuple) else bundle
    deployments = [o for p, o in bundle.items() if p.startswith("models/") and o["kind"] == "Deployment"]
    assert deployments
    for dep in deployments:
        assert validate(dep) == []
        spec = dep["spec"]["template"]["spec"]
        (ctr,) = spec["containers"]
        assert spec.get("runtimeClassName") == runtime
        assert ctr["image"].startswith(image)
        assert ctr.get("command") == command
        for part in ("requests", "limits"):
            assert ctr["resources"][part][resource] >= 1
            assert not {"nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi"} - {resource} & set(ctr["resources"][part])
        assert {"key": resource, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        env = {e["name"]: e.get("value") for e in ctr["env"]}
        assert ("NVIDIA_DRIVER_CAPABILITIES" in env) is (name == "workstation")
        if name == "gaudi":
            assert env["PT_HPU_ENABLE_LAZY_COLLECTIVES"] == "true"
    if name != "workstation":
        assert not [p for p in bundle if p.startswith("gpu/")]  # the vendor's device plugin is not ours to deploy


def _quota(bundle):
    (quota,) = [o for p, o in bundle.items() if p.startswith("namespace/") and o["kind"] == "ResourceQuota"]
    return quota["spec"]["hard"]


def test_gpu_quota_follows_the_accelerator(amd, workstation):
    assert _quota(amd)["requests.amd.com/gpu"] == "4"
    assert "requests.nvidia.com/gpu" not in _quota(amd)
    assert _quota(workstation[1])["requests.nvidia.com/gpu"] == "4"


def test_time_sliced_gpus_are_planned_as_shares(renders):
    """Two replicas of a small-context 8B model share one L40 cut in 2 slices: quota, placement and vLLM's share."""
    catalog = [{"name": "llama-shared", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
                "max_model_len": 4096, "max_num_seqs": 16, "replicas": 2}]
    bundle = _render(renders, "shared", {"llmserve_gpu_count": 1, "llmserve_gpu_time_slicing_replicas": 2,
                                         "llmserve_models": catalog}, "gpu,namespace,models")
    assert _quota(bundle)["requests.nvidia.com/gpu"] == "2"
    # The model's own Deployment (two replicas also get a vllm-router Deployment in the same folder).
    (dep,) = [d for d in _kind(bundle, "Deployment", "models/") if d["metadata"]["name"] == "vllm-llama-shared"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.45"
    assert dep["metadata"]["annotations"]["llmserve.io/placement"] == "workstation,workstation"
    (config,) = _kind(bundle, "ConfigMap")
    assert "replicas: 2" in yaml.safe_dump(config["data"]) or "replicas: 2" in "".join(config["data"].values())
