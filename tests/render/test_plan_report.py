"""The plan report (make plan, playbooks/plan.yml) on both inventories and on a catalog that does not fit.

Runs the real playbook (and the Makefile target once): no host, no cluster. The table printed on the terminal is
parsed back and compared with the inventory's catalog and with the JSON written to the render folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.filter import llmserve
from ansible_collections.llmserve.k3s.plugins.module_utils import _bundle
from playbook import ROOT, run_playbook

# Mixtral at 128k context cannot hold one full-length request on an L40; with it, four replicas of Llama do not fit the 4 GPUs
# (placement goes by name once the GPUs per replica are equal: mixtral first).
NOT_FITTING = [
    {"name": "mixtral-8x7b", "model": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "architecture": "mixtral-8x7b",
     "quantization": "awq", "dtype": "float16", "max_model_len": 131072},
    {"name": "spread-llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b", "replicas": 4},
]


def _catalog(inventory):
    with open(ROOT / inventory / "group_vars" / "all" / "models.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["llmserve_models"]


def _table(output):
    """Rows of the printed table ({column: cell}) and the lines after it."""
    lines = [line.strip() for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("MODEL ") and "KV_TOKENS" in line)
    header = re.split(r"\s{2,}", lines[start])
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("GiB per GPU"):
            break
        cells = re.split(r"\s{2,}", line)
        assert len(cells) == len(header), (header, line)
        rows.append(dict(zip(header, cells)))
    return rows, lines[start:]


def _check_against_json(rows, report):
    assert [r["MODEL"] for r in rows] == [m["name"] for m in report["models"]]
    for row, model in zip(rows, report["models"]):
        assert row["GPUS"] == "%dx%d" % (model["replicas"], model["gpus_per_replica"])
        assert row["KV_TOKENS"] == str(model["kv_cache_tokens"])
        assert row["WEIGHTS"] == "%.2f" % model["weights_gib"]
        assert row["KV_GIB"] == "%.2f" % model["kv_cache_gib"]
        for field, column in (("max_model_len", "MAX_MODEL_LEN"), ("max_num_seqs", "MAX_NUM_SEQS"),
                              ("tensor_parallel_size", "TP"), ("gpu_memory_utilization", "UTILIZATION")):
            setting = model["settings"][field]
            assert row[column] == "%s/%s" % (setting["value"], setting["source"]), (row, setting)
        assert {n.split("(")[0] for n in row["NODES"].split(",") if n != "-"} == set(model["nodes"])


@pytest.fixture(scope="module")
def workstation_plan(tmp_path_factory):
    """make plan on the workstation inventory (the Makefile target, as a user runs it)."""
    dest = tmp_path_factory.mktemp("plan-workstation")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    result = subprocess.run(["make", "-s", "plan", "INVENTORY=inventories/workstation", "RENDER_DIR=%s" % dest], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    return dest, result.stdout


@pytest.fixture(scope="module")
def multinode_plan(renders):
    """playbooks/plan.yml on the multinode inventory."""
    dest, result = renders.run("inventories/multinode", playbook="plan.yml", label="plan-multinode")
    assert result.returncode == 0, result.stdout[-4000:]
    return dest, result.stdout


@pytest.mark.parametrize("inventory", ["inventories/workstation", "inventories/multinode"])
def test_one_row_per_enabled_model_and_the_json_matches(inventory, workstation_plan, multinode_plan):
    dest, output = workstation_plan if inventory == "inventories/workstation" else multinode_plan
    report = json.loads((dest / "plan.json").read_text(encoding="utf-8"))
    rows, after = _table(output)
    catalog = _catalog(inventory)
    enabled = [m["name"] for m in catalog if m.get("enabled", True)]
    assert sorted(r["MODEL"] for r in rows) == sorted(enabled)
    _check_against_json(rows, report)
    assert report["ok"] and report["problems"] == [] and "The catalog fits." in after
    # Where each setting came from: llama-3.1-8b sets max_model_len and max_num_seqs, mixtral leaves max_num_seqs to sizing.
    by_name = {r["MODEL"]: r for r in rows}
    assert by_name["llama-3.1-8b"]["MAX_MODEL_LEN"] == "32768/catalog"
    assert by_name["llama-3.1-8b"]["MAX_NUM_SEQS"] == "256/catalog"
    assert by_name["mixtral-8x7b"]["MAX_NUM_SEQS"].endswith("/plan")
    assert by_name["mixtral-8x7b"]["UTILIZATION"] == "0.9/default"
    assert all(r["FITS"] == "yes" and int(r["KV_TOKENS"]) > 0 for r in rows)
    # GPUs: what the models take plus what is left free is every GPU of the inventory, node by node.
    used = sum(m["gpus"] for m in report["models"])
    assert used == report["gpus_used"] == sum(n["gpus_used"] for n in report["nodes"])
    assert sum(n["gpus_free"] for n in report["nodes"]) == report["gpus_total"] - used
    free_line = next(line for line in after if line.startswith("GPUs free per node:"))
    for node in report["nodes"]:
        assert "%s %d of %d" % (node["name"], node["gpus_free"], node["gpus"]) in free_line


def test_multinode_places_replicas_on_several_nodes(multinode_plan):
    report = json.loads((multinode_plan[0] / "plan.json").read_text(encoding="utf-8"))
    multi = next(m for m in report["models"] if m["name"] == "llama-3.1-8b-multi")
    assert multi["replicas"] == 2 and len(multi["nodes"]) == 2
    nodes = {n["name"]: n for n in report["nodes"]}
    assert set(nodes) == {"gpu-server-1", "gpu-node-2", "gpu-node-3"}
    assert nodes["gpu-node-3"]["gpu"] == "NVIDIA L40S" and nodes["gpu-node-3"]["gpus"] == 2


def test_a_catalog_that_does_not_fit_prints_reasons_and_fixes_and_fails(tmp_path):
    result = run_playbook("plan.yml", "inventories/workstation",
                          extra_vars={"llmserve_render_dir": str(tmp_path), "llmserve_models": NOT_FITTING})
    out = result.stdout
    assert result.returncode != 0, out[-4000:]
    rows, after = _table(out)
    assert [r["MODEL"] for r in rows] == ["mixtral-8x7b", "spread-llama"]
    report = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    assert not report["ok"]
    _check_against_json(rows, report)
    assert "The catalog does not fit (2 problem(s)):" in after
    assert sorted(p["subject"] for p in report["problems"]) == [
        "llmserve_models[0] (mixtral-8x7b).max_model_len", "llmserve_models[1] (spread-llama).replicas"]
    for problem in report["problems"]:
        assert problem["problem"] and problem["fix"], problem
        at = after.index("%s: %s" % (problem["subject"], problem["problem"]))
        assert after[at + 1] == "fix: %s" % problem["fix"]
    mixtral = next(p for p in report["problems"] if "mixtral" in p["subject"])
    assert "131072" in mixtral["problem"] and "set max_model_len to" in mixtral["fix"]
    assert next(r for r in rows if r["MODEL"] == "mixtral-8x7b")["FITS"] == "NO"
    # The report comes before the failure, which is the playbook's own last check (the role's was deferred).
    assert out.index("The catalog does not fit") < out.index("fatal: [localhost]")
    tasks = [line for line in out.split("fatal: [localhost]")[0].splitlines() if line.startswith("TASK [")]
    assert tasks[-1].startswith("TASK [Check the catalog]"), tasks[-3:]


def test_the_bundle_tools_ignore_plan_json(workstation_plan):
    dest, dummy = workstation_plan
    (dest / "namespace").mkdir()
    (dest / "namespace" / "namespace-x.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", encoding="utf-8")
    assert (dest / "plan.json").is_file()
    assert "plan.json" not in _bundle.kustomization_text(str(dest))
    assert list(llmserve.bundle_objects(str(dest))) == ["namespace/namespace-x.yaml"]
