# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The prometheus-adapter chart's values the monitoring role renders (stdlib only): one custom pod metric
(custom.metrics.k8s.io) per Prometheus series the model HPAs scale on."""

from __future__ import annotations

import re


def metric_rule(metric):
    """The adapter rule of one series: its pods' values, summed per pod, under the series name with ':' made '_'
    (a custom metric's name cannot hold ':', vLLM's series names do: vllm:num_requests_waiting)."""
    return {"seriesQuery": metric + '{namespace!="",pod!=""}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": "^" + re.escape(metric) + "$", "as": metric.replace(":", "_")},
            "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"}


def adapter_values(metrics, prometheus_url, prometheus_port):
    """The chart's values: where Prometheus is, and only our rules (the chart's default rules off)."""
    return {"prometheus": {"url": prometheus_url, "port": prometheus_port},
            "rules": {"default": False, "custom": [metric_rule(metric) for metric in metrics or []]}}
