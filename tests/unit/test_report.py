"""The plan report and the KV cache live check (module_utils/_report.py), from tables.

Plans are built by the real planner (_plan.build_plan); /metrics answers are the recorded real vLLM 0.32 ones.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.filter import report as report_filter
from ansible_collections.llmserve.k3s.plugins.module_utils import _health, _plan, _report

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text(encoding="utf-8"))
METRICS = json.loads((ROOT / "tests" / "unit" / "data" / "vllm_http" / "vllm_metrics.json").read_text(encoding="utf-8"))["body"]
CASES = yaml.safe_load((ROOT / "tests" / "unit" / "fixtures" / "vllm_startup_cases.yaml").read_text(encoding="utf-8"))["cases"]
L40 = {"name": "ws", "gpu_count": 4, "gpu_name": "NVIDIA L40", "gpu_slices": 1, "gpu_memory_gib": 44.99, "labels": {}}
LLAMA = {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b"}


def build(models, nodes=(L40,)):
    return _plan.build_plan(models, list(nodes), DEFAULTS["plan_model_defaults"], DEFAULTS["plan_size_classes"])


@pytest.mark.parametrize("entry, field, value, expected", [
    ({"max_model_len": 32768}, "max_model_len", 32768, "catalog"),
    ({}, "max_model_len", ..., "plan"),                                  # sizing's recommendation
    ({"architecture": None, "params_b": 8.0}, "max_model_len", None, "vllm"),  # a model without a preset
    ({}, "gpu_memory_utilization", 0.9, "default"),                      # plan_model_defaults
    ({}, "tensor_parallel_size", 1, "plan"),                             # the size class
    ({"tensor_parallel_size": 2}, "tensor_parallel_size", 2, "catalog"),
])
def test_where_a_setting_came_from(entry, field, value, expected):
    setting = _report.plan_report(build([dict(LLAMA, **entry)]))["models"][0]["settings"][field]
    assert setting["source"] == expected and (setting["value"] == value if value is not ... else setting["value"] > 0)


@pytest.mark.parametrize("source, expected", [("catalog", "catalog"), ("default", "default"), ("vllm", "vllm"), ("size class", "plan"),
                                              ("sized", "plan"), ("time-slicing", "plan"), ("measured", "plan")])
def test_the_plans_sources_in_the_reports_words(source, expected):
    assert _report.report_source(source) == expected


def test_report_of_a_plan_gives_each_setting_its_origin():
    catalog = [dict(LLAMA, max_model_len=16384), dict(LLAMA, name="auto"),
               {"name": "estimated", "model": "x/y", "params_b": 3.0, "max_num_seqs": 32}, dict(LLAMA, name="off", enabled=False)]
    report = _report.plan_report(build(catalog))
    rows = {r["name"]: r for r in report["models"]}
    assert list(rows) == ["llama", "auto", "estimated"] and report["disabled"] == ["off"]
    assert rows["llama"]["settings"]["max_model_len"] == {"value": 16384, "source": "catalog"}
    assert rows["llama"]["settings"]["max_num_seqs"]["source"] == "plan"
    assert rows["auto"]["settings"]["max_model_len"]["source"] == "plan"
    assert rows["auto"]["settings"]["max_model_len"]["value"] > 0
    # No preset: no sizing, weights estimated from params_b, vLLM picks max_model_len.
    est = rows["estimated"]
    assert not est["sized"] and est["kv_cache_tokens"] is None and est["weights_gib"] == pytest.approx(5.59, abs=0.01)
    assert est["settings"]["max_model_len"] == {"value": None, "source": "vllm"}
    assert est["settings"]["max_num_seqs"] == {"value": 32, "source": "catalog"}
    assert est["gpu"] == "NVIDIA L40"  # the node's GPU when there is no sizing
    assert report["nodes"] == [{"name": "ws", "gpu": "NVIDIA L40", "gpus": 4, "gpus_used": 3, "gpus_free": 1}]
    lines = _report.plan_table(report)
    assert lines[-1] == "The catalog fits."
    assert "GPUs free per node: ws 1 of 4 (NVIDIA L40)" in lines


def test_time_sliced_gpus_mark_the_divided_utilization_as_the_plans():
    node = dict(L40, gpu_count=8, gpu_slices=2, gpu_memory_gib=22.5)
    catalog = [{"name": "small", "model": "x/y", "params_b": 1.5, "gpu_memory_utilization": 0.8}]
    report = _report.plan_report(build(catalog, [node]))
    assert report["models"][0]["settings"]["gpu_memory_utilization"] == {"value": 0.4, "source": "plan"}


def test_every_planner_problem_splits_into_subject_reason_and_fix():
    catalog = [dict(LLAMA, max_model_len=131072, gpu_memory_utilization=0.5), dict(LLAMA, name="many", replicas=5)]
    plan = build(catalog)
    assert len(plan["errors"]) == 2
    report = _report.plan_report(plan)
    assert not report["ok"]
    for message, problem in zip(plan["errors"], report["problems"]):
        assert message == "%s: %s. Fix: %s" % (problem["subject"], problem["problem"], problem["fix"])
        assert problem["subject"].startswith("llmserve_models[") and problem["fix"]
    assert [(p["index"], p["name"], p["field"]) for p in report["problems"]] == [(1, "many", "replicas"), (0, "llama", "max_model_len")]
    lines = _report.plan_table(report)
    assert "The catalog does not fit (2 problem(s)):" in lines
    assert sum(line.startswith("    fix: ") for line in lines) == 2


def test_a_catalog_error_before_placement_leaves_every_gpu_free():
    catalog = [dict(LLAMA, dtype="float8")]
    report = _report.plan_report(build(catalog))
    assert report["nodes"][0]["gpus_free"] == 4 and report["models"][0]["nodes"] == []
    assert report["problems"][0]["subject"] == "llmserve_models[0] (llama).dtype"
    assert report["problems"][0]["fix"].startswith("use one of")


def test_a_problem_without_an_entry_is_a_catalog_problem():
    report = _report.plan_report(build({"llama": LLAMA}))
    assert report["problems"] == [{"index": None, "name": None, "field": None, "subject": "llmserve_models",
                                   "problem": "is a mapping, not a list",
                                   "fix": "write the catalog as a list of mappings, one per model (- name: ...)"}]
    assert "  llmserve_models: is a mapping, not a list" in _report.plan_table(report)


def test_a_problem_of_an_adapter_names_the_adapters_field():
    report = _report.plan_report(build([dict(LLAMA, adapters=[{"name": "Bad", "source": "org/a"}])]))
    assert [(p["subject"], p["field"]) for p in report["problems"]] == [("llmserve_models[0] (llama).adapters[0].name", "adapters[0].name")]


def test_the_cache_config_vllm_exports():
    info = _health.kv_cache_config(METRICS)
    assert info == {"num_gpu_blocks": 8192, "block_size": 128, "kv_cache_tokens": 1048576, "kv_cache_memory_bytes": 1073741824,
                    "gpu_memory_utilization": 0.92, "cache_dtype": "auto", "engines": 1}
    two = ('vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="100"} 1.0\n'
           'vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="90"} 1.0\n'
           'vllm:cache_config_info{block_size="16",engine="2",num_gpu_blocks="None"} 1.0\n')
    assert _health.kv_cache_config(two) == {"num_gpu_blocks": 90, "block_size": 16, "kv_cache_tokens": 1440, "engines": 2}
    assert _health.kv_cache_config("vllm:num_requests_running 0.0\n") == {}


def _sized(tokens, **extra):
    model = {"name": "llama", "architecture": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16",
             "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": 8192, "max_num_seqs": 256,
             "max_num_batched_tokens": None, "quantization": None, "kv_cache_dtype": "auto",
             "sizing": {"kv_cache_tokens": tokens, "gpu": {"name": "L40", "memory_gib": 44.99}}}
    model.update(extra)
    return model


@pytest.mark.parametrize("predicted, status, pct", [
    (1048576, "ok", 0.0),
    (1048576 * 1.09, "ok", 9.0),
    (1048576 * 0.91, "ok", -9.0),
    (1048576 * 1.25, "off", 25.0),
    (1048576 * 0.8, "off", -20.0),
    (None, "no_prediction", None),
])
def test_predicted_vs_actual(predicted, status, pct):
    check = _report.kv_check(_sized(int(predicted) if predicted else None), _health.kv_cache_config(METRICS))
    assert check["status"] == status and check["actual_tokens"] == 1048576
    assert check["difference_pct"] == (pytest.approx(pct, abs=0.1) if pct is not None else None)
    assert (check["case"] is not None) == (status == "off")


def test_no_metrics_when_vllm_does_not_export_the_cache():
    assert _report.kv_check(_sized(1000), {})["status"] == "no_metrics"


def test_an_off_prediction_gives_a_case_for_the_case_file():
    check = _report.kv_check(_sized(1310720), _health.kv_cache_config(METRICS), vllm_version="0.32.0",
                             source="llmserve.k3s live check of llama at http://10.43.0.20:8000")
    case = check["case"]
    # The fields the case file's entries have (observed as the figures vLLM gave).
    common = set.intersection(*(set(c) for c in CASES if c.get("kind") == "full"))
    assert common - {"note"} <= set(case), common - set(case)
    assert case["engine"] == "v1" and case["vllm_version"] == "0.32.0" and case["split"] == "holdout"
    assert case["gpu"] == "L40" and case["gpu_memory_utilization"] == 0.92 and case["max_num_seqs"] == 256
    assert "max_num_batched_tokens" not in case  # not set on the command line
    assert case["observed"] == {"kv_cache_tokens": 1048576, "fits": True, "kv_cache_gib": 1.0}
    lines = _report.kv_table([dict(check, where="service")])
    assert lines[1].split() == ["MODEL", "WHERE", "PREDICTED_TOKENS", "ACTUAL_TOKENS", "BLOCKS", "DIFFERENCE", "STATUS"]
    assert lines[2].split() == ["llama", "service", "1310720", "1048576", "8192x128", "+262144", "(+25.0%)", "off"]
    assert "llama: the plan is off by +25.0% (more than 10%)" in lines[3]
    # The case is printed as YAML that goes into the case file as it is.
    parsed = yaml.safe_load("\n".join(line[2:] for line in lines[4:]))
    assert parsed == [case]


def test_the_filters_match_results_and_pods_to_planned_models():
    planned = [_sized(1048576), _sized(None, name="other")]
    results = [{"item": {"model": "llama", "endpoint": "service", "url": "http://a:8000"}, "kv_cache": _health.kv_cache_config(METRICS)},
               {"item": {"model": "other", "endpoint": "ingress"}, "kv_cache": {}},
               {"item": {"model": "unplanned", "endpoint": "service"}, "kv_cache": {}}]
    checks = report_filter.kv_checks(results, planned)
    assert [(c["model"], c["where"], c["status"]) for c in checks] == [("llama", "service", "ok"), ("other", "ingress", "no_metrics")]
    pods = [{"metadata": {"name": "vllm-llama-abc", "labels": {"llmserve.io/model": "llama"}},
             "spec": {"containers": [{"name": "vllm", "image": "docker.io/vllm/vllm-openai:v0.32.0"}]}},
            {"metadata": {"name": "vllm-other-x", "labels": {"llmserve.io/model": "other"}}}]
    checks = report_filter.pod_kv_checks({"vllm-llama-abc": METRICS.replace('num_gpu_blocks="8192"', 'num_gpu_blocks="4096"')},
                                         pods, planned)
    assert len(checks) == 1 and checks[0]["where"] == "vllm-llama-abc" and checks[0]["status"] == "off"
    assert checks[0]["difference_pct"] == 100.0 and checks[0]["case"]["vllm_version"] == "0.32.0"
