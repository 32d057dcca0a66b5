"""status.yml's diagnoses (module_utils/_diagnose.py) from Kubernetes objects shaped as kubernetes.core.k8s_info
returns them, and real vLLM / Hugging Face / CUDA error logs (tests/unit/data/vllm_logs/, each names its source).

No cluster runs here: the objects are written after what a k3s 1.35 API server returns for the same states.
"""

from __future__ import annotations

import copy
import pathlib

import pytest

from ansible_collections.llmserve.k3s.plugins.filter import health as health_filters
from ansible_collections.llmserve.k3s.plugins.module_utils import _diagnose
from k8s_objects import event, node, pod, pvc

LOGS = pathlib.Path(__file__).parent / "data" / "vllm_logs"


def log(name):
    return (LOGS / (name + ".log")).read_text()


def plan(name="llama-3.1-8b", gated=False, **extra):
    model = {"name": name, "k8s_name": "vllm-" + name.replace(".", "-"), "model": "meta-llama/Llama-3.1-8B-Instruct",
             "enabled": True, "gated": gated, "tensor_parallel_size": 1, "base_replicas": 1, "max_model_len": 32768,
             "max_num_seqs": 256, "gpu_memory_utilization": 0.9, "placement": ["workstation"],
             "resources": {"limits": {"memory": "32Gi"}}}
    model.update(extra)
    return model


HEALTHY = dict(plan_models=[plan()], nodes=[node()], pods=[pod()], pvcs=[pvc()], secrets=["hf-token"])


def run(**changes):
    args = copy.deepcopy(HEALTHY)
    args.update(changes)
    return _diagnose.diagnose(**args)


def problems(result):
    return [(f["subject"], f["problem"], f["fix"]) for f in result["findings"]]


def test_healthy_cluster_has_no_finding_and_a_summary():
    result = run(pods=[pod(), pod("qwen", gpus=2)], plan_models=[plan(), plan("qwen", tensor_parallel_size=2)])
    assert result["findings"] == [] and result["ok"]
    assert result["gpus"] == [{"node": "workstation", "product": "NVIDIA-L40", "capacity": 4, "allocatable": 4,
                               "used": 3, "ready": True, "gpu_node": True}]
    assert [(m["name"], m["ready"], m["replicas"]) for m in result["models"]] == [("llama-3.1-8b", 1, 1), ("qwen", 1, 1)]
    assert result["pvcs"] == [{"name": "llm-models", "phase": "Bound", "volume": "llm-models", "storage_class": ""}]


def test_finished_pods_hold_no_gpu():
    done = pod(name="old", phase="Failed", ready=False)
    assert run(pods=[pod(), done])["gpus"][0]["used"] == 1


def test_pvc_pending_names_the_storage_mode():
    events = [event("PersistentVolumeClaim", "llm-models", "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set")]
    result = run(pvcs=[pvc("Pending")], events=events)
    [(subject, problem, fix)] = problems(result)
    assert subject == "pvc/llm-models" and "Pending" in problem and "llmserve_storage_mode" in fix
    assert "no persistent volumes available" in result["findings"][0]["evidence"][0]
    assert not result["ok"]


def test_local_path_waiting_for_first_consumer_is_not_a_fault():
    events = [event("PersistentVolumeClaim", "llm-models-qwen", "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding", "Normal")]
    assert run(pvcs=[pvc("Pending", "llm-models-qwen", "local-path")], events=events)["findings"] == []


def test_gated_model_without_token_secret():
    [(subject, problem, fix)] = problems(run(plan_models=[plan(gated=True)], secrets=[]))
    assert subject == "model/llama-3.1-8b" and "gated" in problem and "hf-token" in problem
    assert "llmserve_hf_token" in fix


@pytest.mark.parametrize("secret, fix", [("llmserve-internal", "the apply step creates llmserve-internal"),
                                         ("hf-token", "llmserve_hf_token")])
def test_a_missing_secret_is_named_with_its_fix(secret, fix):
    """The kubelet's event when a container's env or volume names a Secret that does not exist."""
    waiting = pod(phase="Pending", ready=False, state={"waiting": {"reason": "CreateContainerConfigError"}})
    events = [event("Pod", waiting["metadata"]["name"], "Failed", 'Error: secret "%s" not found' % secret)]
    [(subject, problem, found)] = problems(run(pods=[waiting], events=events))
    assert subject == "pod/" + waiting["metadata"]["name"] and secret in problem and fix in found


def test_gated_model_predownloaded_needs_no_token():
    assert run(plan_models=[plan(gated=True)], secrets=[], predownload=True)["findings"] == []


def test_gated_model_token_refused_from_the_log():
    crashing = pod(phase="Running", ready=False, restarts=4, state={"waiting": {"reason": "CrashLoopBackOff"}},
                   last={"reason": "Error", "exitCode": 1})
    result = run(plan_models=[plan(gated=True)], pods=[crashing], logs={crashing["metadata"]["name"]: log("gated")})
    [(subject, problem, fix)] = problems(result)
    assert "gated" in problem and "accept the license" in fix
    assert any("Cannot access gated repo" in line for line in result["findings"][0]["evidence"])


def test_no_gpu_allocatable_points_at_the_device_plugin():
    result = run(nodes=[node(allocatable=None)], pods=[pod(phase="Pending", ready=False, node_name=None)])
    finding = [f for f in result["findings"] if f["subject"] == "nodes"][0]
    assert "no node has nvidia.com/gpu allocatable" in finding["problem"]
    assert "device plugin" in finding["fix"] and "RuntimeClass" in finding["fix"]


def test_catalog_wants_more_gpus_than_the_nodes_have():
    models = [plan("a"), plan("b", tensor_parallel_size=4)]
    result = run(plan_models=models, nodes=[node(allocatable=4)], pods=[])
    assert "wants 5 GPUs, the nodes offer 4" in [f["problem"] for f in result["findings"]][0]


def test_pending_for_lack_of_gpu():
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: " \
              "1 No preemption victims found for incoming pod."
    pending = pod(phase="Pending", ready=False, node_name=None,
                  conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}])
    result = run(pods=[pending], events=[event("Pod", pending["metadata"]["name"], "FailedScheduling", message)])
    assert [p for s, p, f in problems(result)] == ["no node has a free GPU for llama-3.1-8b"]


def test_missing_runtime_class():
    message = 'Failed to create pod sandbox: RuntimeHandler "nvidia" not supported; RuntimeClass "nvidia" not found'
    waiting = pod(phase="Pending", ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    result = run(pods=[waiting], events=[event("Pod", waiting["metadata"]["name"], "FailedCreatePodSandBox", message)])
    assert any("nvidia runtime" in p for s, p, f in problems(result))


def test_hostpath_mount_failure():
    message = ('MountVolume.SetUp failed for volume "llm-models" : hostPath type check failed: '
               '/var/lib/llm-models is not a directory')
    waiting = pod(phase="Pending", ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    result = run(pods=[waiting], events=[event("Pod", waiting["metadata"]["name"], "FailedMount", message)])
    assert [f for s, p, f in problems(result) if "cannot be mounted" in p][0].startswith("create the model cache")


def test_oomkilled_asks_for_more_host_memory():
    killed = pod(ready=False, restarts=3, state={"waiting": {"reason": "CrashLoopBackOff"}},
                 last={"reason": "OOMKilled", "exitCode": 137})
    [(subject, problem, fix)] = problems(run(pods=[killed]))
    assert "OOMKilled" in problem and "32Gi" in problem and "memory limit" in fix


CRASH = dict(ready=False, restarts=5, state={"waiting": {"reason": "CrashLoopBackOff"}},
             last={"reason": "Error", "exitCode": 1})


@pytest.mark.parametrize("logname, words", [
    ("kv_cache_too_small", ["KV cache", "vLLM estimates at most 99792 fits", "max_model_len=32768"]),
    ("kv_cache_too_small_tpu", ["KV cache", "at most 5632"]),
    ("kv_cache_v0", ["KV cache", "lower max_model_len"]),
    ("gpu_busy", ["another process holds memory", "gpu_memory_utilization"]),
    ("cuda_oom", ["ran out of memory", "quantize"]),
    ("offline_not_cached", ["not in the model cache", "pre-download"]),
    ("model_dir_missing", ["model directory is missing", "/var/lib/llm-models"]),
])
def test_crash_loop_diagnosed_from_real_logs(logname, words):
    crashing = pod(**CRASH)
    result = run(pods=[crashing], logs={crashing["metadata"]["name"]: log(logname)})
    assert len(result["findings"]) == 1, result["findings"]
    text = "%s %s" % (result["findings"][0]["problem"], result["findings"][0]["fix"])
    for word in words:
        assert word in text, (word, text)
    assert result["findings"][0]["evidence"], "no log lines shown"
    assert len(result["findings"][0]["evidence"]) <= 8


def test_kv_cache_finding_carries_the_sizing_result_when_the_plan_has_one():
    crashing = pod(**CRASH)
    sizing = {"fits": False, "suggestions": ["max_model_len 16384 fits", "tensor_parallel_size 2 fits"],
              "recommended": {"max_model_len": 16384}}
    result = run(plan_models=[plan(sizing=sizing)], pods=[crashing],
                 logs={crashing["metadata"]["name"]: log("cuda_oom")})
    fix = result["findings"][0]["fix"]
    assert "gpu_sizing: max_model_len 16384 fits; tensor_parallel_size 2 fits; recommended max_model_len 16384" in fix


def test_unknown_crash_shows_the_last_lines():
    crashing = pod(**CRASH)
    result = run(pods=[crashing], logs={crashing["metadata"]["name"]: "INFO starting\nRuntimeError: something new\n"})
    [finding] = result["findings"]
    assert "5 restarts (CrashLoopBackOff)" in finding["problem"]
    assert finding["evidence"] == ["RuntimeError: something new"]


def test_model_without_pods():
    [(subject, problem, fix)] = problems(run(pods=[]))
    assert problem == "no pod of llama-3.1-8b exists" and "--tags llama-3.1-8b" in fix


def test_status_report_lines():
    crashing = pod(**CRASH)
    diagnosis = run(pods=[crashing], logs={crashing["metadata"]["name"]: log("kv_cache_too_small")})
    lines = health_filters.status_report(diagnosis)
    assert "  workstation: 4 / 1 NVIDIA-L40" in lines
    assert any(line.startswith("ERROR pod/vllm-llama-3-1-8b-") for line in lines)
    assert any(line.startswith("  fix: lower max_model_len") for line in lines)
    assert any("estimated maximum model length is 99792" in line for line in lines)


@pytest.mark.parametrize("models, kwargs, expected", [
    ([{"name": "llama-3.1-8b"}], {}, [("llama-3.1-8b", "service", "http://vllm-llama-3-1-8b.llm-serving.svc:8000")]),
    ([{"name": "llama-3.1-8b"}], {"cluster_ips": {"llama-3.1-8b": "10.43.7.9"}, "ingress_host": "llm.example"},
     [("llama-3.1-8b", "service", "http://10.43.7.9:8000"),
      ("llama-3.1-8b", "ingress", "https://llm.example/models/llama-3.1-8b")]),
    ([{"name": "a"}, {"name": "b"}], {"urls": {"b": {"service": "http://127.0.0.1:9"}}},
     [("a", "service", "http://vllm-a.llm-serving.svc:8000"), ("b", "service", "http://127.0.0.1:9")]),
    ([{"name": "b"}], {"endpoints": ["ingress"], "urls": {"b": {"ingress": "https://x/models/b"}}},
     [("b", "ingress", "https://x/models/b")]),
    # The shared endpoint: one base URL for every model (the front door routes by the body's model).
    ([{"name": "a"}, {"name": "b"}], {"endpoints": ["shared", "ingress"], "ingress_host": "llm.example"},
     [("a", "shared", "https://llm.example"), ("a", "ingress", "https://llm.example/models/a"),
      ("b", "shared", "https://llm.example"), ("b", "ingress", "https://llm.example/models/b")]),
    ([{"name": "a"}], {"endpoints": ["shared"]}, []),  # no ingress host: nothing to check there
])
def test_health_targets(models, kwargs, expected):
    targets = health_filters.health_targets(models, **kwargs)
    assert [(t["model"], t["endpoint"], t["url"]) for t in targets] == expected


@pytest.mark.parametrize("models, kwargs, words", [
    ([{"name": "a"}], {"endpoints": ["pod"]}, "llmserve_health_endpoints has pod"),
    ([{"model": "x"}], {}, "without a name"),
    ([{"name": "a"}], {"urls": {"a": "http://x"}}, "llmserve_health_urls['a']"),
])
def test_health_targets_bad_input(models, kwargs, words):
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError, match=words.replace("[", r"\[").replace("]", r"\]")):
        health_filters.health_targets(models, **kwargs)


def test_health_table_rows():
    results = [{"item": {"model": "a", "endpoint": "service", "url": "http://x"}, "status": "ready", "ready": True,
                "latency_ms": {"completion": 41.7}, "metrics": {"running": 2, "waiting": 0, "kv_cache_usage_perc": 0.125},
                "url": "http://x"},
               {"item": {"model": "b", "endpoint": "ingress", "url": "https://y"}, "status": "unreachable",
                "ready": False, "latency_ms": {}, "metrics": {}, "msg": "refused"}]
    lines = health_filters.health_table(results)
    assert lines[0].split() == ["MODEL", "ENDPOINT", "STATUS", "LATENCY", "RUNNING", "WAITING", "KV", "CACHE", "URL"]
    assert lines[1].split() == ["a", "service", "ready", "42", "ms", "2", "0", "12.5%", "http://x"]
    assert lines[2].split() == ["b", "ingress", "unreachable", "-", "-", "-", "-", "https://y"]
    assert health_filters.health_failures(results) == ["b (ingress): unreachable: refused"]
