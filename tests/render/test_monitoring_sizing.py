"""The sizing recording rules (PrometheusRule llmserve-sizing) of the workstation bundle, with the real promtool.

The plan's KV cache prediction per model is a constant series; joined with vLLM's vllm:cache_config_info, one
series per pod carries the planned tokens as its value and vLLM's num_gpu_blocks and block_size as labels.
"""

from __future__ import annotations

import yaml

from plans import workstation_plan
from prometheus import ensure_prometheus, promtool, rules_file

NS = "llm-serving"


def _rule(workstation):
    dummy, bundle, dummy_out = workstation
    found = [o for o in bundle.values() if o["kind"] == "PrometheusRule" and o["metadata"]["name"] == "llmserve-sizing"]
    assert len(found) == 1, sorted(o["metadata"]["name"] for o in bundle.values() if o["kind"] == "PrometheusRule")
    return found[0]


def test_one_planned_series_per_sized_model_and_the_join(workstation):
    planned = {m["name"]: m["sizing"]["kv_cache_tokens"] for m in workstation_plan()["models"] if m.get("sizing")}
    rules = _rule(workstation)["spec"]["groups"][0]["rules"]
    series = {r["labels"]["model_name"]: r["expr"] for r in rules if r["record"] == "llmserve:kv_cache_tokens:planned"}
    assert series == {name: "vector(%d)" % tokens for name, tokens in planned.items()}
    assert [r["record"] for r in rules][-1] == "llmserve:kv_cache_tokens:planned_vs_allocated"


def test_rules_pass_promtool_check_and_a_unit_test(workstation, tmp_path):
    ensure_prometheus()
    rule = _rule(workstation)
    rules_file(rule, tmp_path / "sizing.yml")
    checked = promtool("check", "rules", tmp_path / "sizing.yml")
    count = len(rule["spec"]["groups"][0]["rules"])
    assert checked.returncode == 0 and "SUCCESS: %d rules found" % count in checked.stdout, checked.stdout
    mixtral = next(m for m in workstation_plan()["models"] if m["name"] == "mixtral-8x7b")["sizing"]["kv_cache_tokens"]
    pod = {"namespace": NS, "model_name": "mixtral-8x7b", "pod": "vllm-mixtral-8x7b-7d9c6b5f4-x2k8p",
           "num_gpu_blocks": "6066", "block_size": "16"}
    labels = ",".join('%s="%s"' % kv for kv in pod.items())
    test = {"rule_files": ["sizing.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": "vllm:cache_config_info{%s,engine=\"0\",cache_dtype=\"auto\"}" % labels, "values": "1x5"}],
        "promql_expr_test": [
            {"expr": "llmserve:kv_cache_tokens:planned_vs_allocated", "eval_time": "2m",
             "exp_samples": [{"labels": "llmserve:kv_cache_tokens:planned_vs_allocated{%s}" % labels, "value": mixtral}]},
            # The difference a panel shows: planned minus num_gpu_blocks x block_size, here 6066 x 16.
            {"expr": "llmserve:kv_cache_tokens:planned_vs_allocated - 6066 * 16", "eval_time": "2m",
             "exp_samples": [{"labels": "{%s}" % labels, "value": mixtral - 6066 * 16}]},
        ]}]}
    (tmp_path / "sizing.test.yml").write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    tested = promtool("test", "rules", tmp_path / "sizing.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout
