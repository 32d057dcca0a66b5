"""LoRA adapters in the rendered bundle and the plan: the model's arguments (parsed by vLLM 0.32's own parser, with
the --lora-modules slots expanded from the ConfigMap as Kubernetes expands them), the runtime-loading switch, the
front door's served names, and the LoRA memory in plan.json.

Rendered only here; tests/integration/test_lora.py starts a real vLLM with these arguments.
"""

from __future__ import annotations

import json
import subprocess

from bundle import container, model_objects
from vllm_server import ensure_vllm_venv, vllm_python

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora

MODELS = [
    {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
     "adapters": [{"name": "llama-legal", "source": "org/llama-legal-lora", "revision": "v1"},
                  {"name": "llama-chem", "source": "/var/lib/llm-models/adapters/chem", "rank": 64}]},
    {"name": "qwen", "model": "Qwen/Qwen2.5-7B-Instruct", "architecture": "qwen2.5-7b", "max_loras": 2, "max_cpu_loras": 3,
     "adapters": [{"name": "qwen-course", "source": "./course/qwen", "rank": 8}]},
    {"name": "plain", "model": "Qwen/Qwen3-0.6B", "architecture": "qwen3-0.6b"},
]
VARS = {"llmserve_models": MODELS}
PREFETCH = {"lora": {"extra_vars": VARS}, "lora-plan": {"extra_vars": VARS, "playbook": "plan.yml"}}

PARSE = r'''
import json, sys
import vllm.entrypoints.cli.serve as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser
out = []
for args in json.loads(sys.stdin.read()):
    top = FlexibleArgumentParser(prog="vllm")
    serve.ServeSubcommand().subparser_init(top.add_subparsers(dest="subparser"))
    parsed = top.parse_args(["serve"] + args)
    out.append({"enable_lora": parsed.enable_lora, "max_lora_rank": parsed.max_lora_rank, "max_loras": parsed.max_loras,
                "max_cpu_loras": parsed.max_cpu_loras,
                "lora_modules": [{"name": m.name, "path": m.path, "base_model_name": m.base_model_name} for m in parsed.lora_modules or []]})
print(json.dumps(out))
'''


def _expanded(deployment, objects):
    """The container's arguments with $(VAR) expanded from its env, the ConfigMap slots included."""
    values = {}
    for item in container(deployment).get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            cm = next(o for o in objects.values() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"])
            values[item["name"]] = cm["data"][ref["key"]]
    return _lora.expand(container(deployment)["args"], values)


def _parse(argument_lists):
    """vLLM's parser run on each argument list in the vLLM venv. The venv's python is tried as it is first (the parse
    imports vLLM anyway); ensure_vllm_venv's import check, which costs as much again, runs only when that fails."""
    def run(python):
        return subprocess.run([str(python), "-c", PARSE], input=json.dumps(argument_lists), capture_output=True, text=True,
                              timeout=600, check=False, env={"VLLM_LOGGING_LEVEL": "ERROR", "PATH": "/usr/bin:/bin"})

    result = run(vllm_python()) if vllm_python().exists() else None
    if result is None or result.returncode != 0:
        result = run(ensure_vllm_venv())
    return result


def test_lora_objects_and_arguments(renders):
    dest, objects, dummy = renders.bundle(extra_vars=VARS, label="lora")
    llama = model_objects(objects, "llama")
    assert llama["ConfigMap"]["metadata"]["name"] == "vllm-llama-lora"
    deployment = llama["Deployment"]
    names = {e["name"]: e for e in container(deployment)["env"]}
    assert names["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    assert names["LLMSERVE_LORA_0"]["valueFrom"] == {"configMapKeyRef": {"name": "vllm-llama-lora", "key": "LLMSERVE_LORA_0"}}
    plain = model_objects(objects, "plain")["Deployment"]
    assert "--enable-lora" not in container(plain)["args"]
    assert not any(e["name"].startswith("LLMSERVE_LORA") for e in container(plain)["env"])
    door = next(o for p, o in objects.items() if p.startswith("ingress/") and o["kind"] == "ConfigMap" and "config.json" in o.get("data", {}))
    backends = json.loads(door["data"]["config.json"])["models"]
    assert backends["llama"]["served_names"] == ["llama-legal", "llama-chem"]
    assert backends["qwen"]["served_names"] == ["qwen-course"]
    assert "served_names" not in backends["plain"]


def test_every_argument_list_with_adapters_parses_with_vllms_parser(renders):
    dummy, objects, dummy2 = renders.bundle(extra_vars=VARS, label="lora")
    lists = {}
    for name in ("llama", "qwen"):
        lists[name] = _expanded(model_objects(objects, name)["Deployment"], objects)
    result = _parse(list(lists.values()))
    assert result.returncode == 0, result.stderr[-3000:]
    llama, qwen = json.loads(result.stdout.strip().splitlines()[-1])
    assert llama == {"enable_lora": True, "max_lora_rank": 64, "max_loras": 2, "max_cpu_loras": 4, "lora_modules": [
        {"name": "llama-legal", "path": "org/llama-legal-lora", "base_model_name": "llama"},
        {"name": "llama-chem", "path": "/models/adapters/chem", "base_model_name": "llama"}]}
    assert qwen == {"enable_lora": True, "max_lora_rank": 8, "max_loras": 2, "max_cpu_loras": 3, "lora_modules": [
        {"name": "qwen-course", "path": "/models/course/qwen", "base_model_name": "qwen"}]}


def test_plan_json_has_the_lora_memory(renders):
    dest, result = renders.run(extra_vars=VARS, playbook="plan.yml", label="lora-plan")
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((dest / "plan.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in report["models"]}
    assert rows["plain"]["lora"] is None
    lora = rows["llama"]["lora"]
    assert lora["adapters"] == ["llama-legal", "llama-chem"]
    assert (lora["max_lora_rank"], lora["max_loras"]) == (64, 2)
    assert lora["gpu_gib"] > 0
    output = " ".join(result.stdout.split())
    assert "LoRA llama: llama-legal, llama-chem; max_lora_rank 64, max_loras 2, max_cpu_loras 4: %.3f GiB per GPU" % lora["gpu_gib"] in output
