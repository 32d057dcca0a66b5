"""The prometheus-adapter chart's values (plugins/module_utils/_prometheus_adapter.py): one custom pod metric per
series the model HPAs scale on."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.filter import monitoring
from ansible_collections.llmserve.k3s.plugins.module_utils import _prometheus_adapter


def test_a_vllm_series_becomes_a_pod_metric_without_colons():
    assert _prometheus_adapter.metric_rule("vllm:num_requests_waiting") == {
        "seriesQuery": 'vllm:num_requests_waiting{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^vllm:num_requests_waiting$", "as": "vllm_num_requests_waiting"},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"}


def test_regex_characters_of_a_name_are_escaped():
    rule = _prometheus_adapter.metric_rule("llmserve.frontdoor:in_flight")
    assert rule["name"] == {"matches": r"^llmserve\.frontdoor:in_flight$", "as": "llmserve.frontdoor_in_flight"}


def test_values_keep_only_our_rules_in_the_order_given():
    values = _prometheus_adapter.adapter_values(["vllm:num_requests_waiting", "vllm:num_requests_running"],
                                                "http://prometheus.monitoring.svc", 9090)
    assert values["prometheus"] == {"url": "http://prometheus.monitoring.svc", "port": 9090}
    assert values["rules"]["default"] is False
    assert [r["name"]["as"] for r in values["rules"]["custom"]] == ["vllm_num_requests_waiting", "vllm_num_requests_running"]
    assert _prometheus_adapter.adapter_values([], "http://p", 9090)["rules"] == {"default": False, "custom": []}


def test_filter():
    assert monitoring.FilterModule().filters() == {"prometheus_adapter_values": _prometheus_adapter.adapter_values}
