"""playbooks/status.yml through ansible-playbook, on saved Kubernetes objects (llmserve_status_objects).

No cluster runs here (k3s cannot start on these machines): the gathering tasks (kubernetes.core.k8s_info,
k8s_log) are skipped by giving the objects, shaped as k8s_info returns them, with a real vLLM error log; the
plan, the diagnosis and the report run for real on the workstation inventory.
"""

from __future__ import annotations

import json
import pathlib

from k8s_objects import event, node, pod, pvc
from playbook import ROOT, run_playbook
from plans import workstation_plan

LOG = (pathlib.Path(__file__).parents[1] / "unit" / "data" / "vllm_logs" / "kv_cache_too_small.log").read_text()
METRICS = json.loads((ROOT / "tests" / "unit" / "data" / "vllm_http" / "vllm_metrics.json").read_text())["body"]


def _objects():
    crashing = pod("llama-3.1-8b", ready=False, restarts=6, state={"waiting": {"reason": "CrashLoopBackOff"}},
                   last={"reason": "Error", "exitCode": 1})
    pending = pod("deepseek-coder-v2-lite", phase="Pending", ready=False, node_name=None,
                  conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    return {"nodes": [node(allocatable=2)], "pods": [crashing, pod("mixtral-8x7b"), pending], "pvcs": [pvc()],
            "events": [event("Pod", pending["metadata"]["name"], "FailedScheduling", message)],
            "secrets": [], "logs": {crashing["metadata"]["name"]: LOG}}


def _run(tmp_path, **extra):
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({"llmserve_status_objects": _objects()}))
    return run_playbook("status.yml", "inventories/workstation", extra_vars=extra or None,
                        extra_args=["-e", "@%s" % objects])


def test_status_report_and_diagnoses(tmp_path):
    result = _run(tmp_path)
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    assert "workstation: 2 / 2 NVIDIA-L40" in out                      # 1 running + 1 crash-looping pod hold GPUs
    assert "llama-3.1-8b: 0 / 1; 32768, 256, TP 1" in out                # the plan's settings
    assert "CrashLoopBackOff" in out and "restarts=6" in out
    assert "llm-models: Bound llm-models" in out
    assert "the catalog wants 3 GPUs, the nodes offer 2" in out
    assert "is gated on Hugging Face and the Secret hf-token is missing" in out
    assert "KV cache for max_model_len does not fit" in out and "vLLM estimates at most 99792 fits" in out
    assert "no node has a free GPU for deepseek-coder-v2-lite" in out


def test_status_fails_on_errors_when_asked(tmp_path):
    result = _run(tmp_path, llmserve_status_fail=True)
    assert result.returncode != 0
    assert "KV cache for max_model_len does not fit" in result.stdout


def test_status_compares_the_planned_kv_cache_with_the_pods_metrics(tmp_path):
    """The mixtral pod's /metrics (the recorded real one) says vLLM allocated 25% less KV cache than planned."""
    plan = workstation_plan()
    predicted = next(m for m in plan["models"] if m["name"] == "mixtral-8x7b")["sizing"]["kv_cache_tokens"]
    blocks = int(round(predicted / 1.25 / 16))
    text = METRICS.replace('num_gpu_blocks="8192"', 'num_gpu_blocks="%d"' % blocks).replace('block_size="128"', 'block_size="16"')
    objects = _objects()
    running = objects["pods"][1]
    objects["metrics"] = {running["metadata"]["name"]: text}
    path = tmp_path / "objects.json"
    path.write_text(json.dumps({"llmserve_status_objects": objects}))
    result = run_playbook("status.yml", "inventories/workstation", extra_args=["-e", "@%s" % path])
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    row = next(line.split() for line in out.splitlines() if line.split()[:2] == ["mixtral-8x7b", running["metadata"]["name"]])
    diff = predicted - blocks * 16
    assert row[1:] == [running["metadata"]["name"], str(predicted), str(blocks * 16), "%dx16" % blocks, "%+d" % diff,
                       "(%+.1f%%)" % (100.0 * diff / (blocks * 16)), "off"], row
    assert "mixtral-8x7b: the plan is off by +25.0% (more than 10%)" in out
    assert "vllm_version: \"0.32.0\"" in out and "tensor_parallel_size: 1" in out
