"""The dashboards and alert rules, proven on real metrics: a real vLLM on CPU (the session's `vllm_server`)
scraped by a real Prometheus, real completions (one streamed), then every vLLM panel query and every vLLM alert
expression through Prometheus's HTTP API: each must parse, each panel query must return data.

The Prometheus scrape job carries the target labels the rendered PodMonitor gives in the cluster (namespace, pod,
and model_name from the pod label llmserve.io/model) and honours the scraped labels, as the PodMonitor does.

The front door (roles/ingress/files/llmserve_frontdoor.py) runs for real in front of the same vLLM, scraped with the
rendered front-door PodMonitor's metricRelabelings, so its panels and the FrontDoorNoBackend alert see real series.

GPU (DCGM exporter) and Traefik panels cannot have data here (no GPU, no Traefik): their metric names are checked
against recorded lists in tests/render/test_monitoring.py instead. The pod-restart alert reads kube-state-metrics,
which does not run here either: it is only parsed.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
import urllib.error
import urllib.request

import pytest
import yaml

from frontdoor import FrontDoor
from k8s_schema import load_bundle
from playbook import render
from prometheus import PrometheusServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "roles" / "monitoring" / "files" / "dashboards"
NAMESPACE = "llm-serving"
POD = "vllm-tiny-0"
FRONTDOOR_POD = "llmserve-frontdoor-0"
ABSENT_MODEL = "not-deployed"


def _is_vllm(expr):
    """A query over series this module serves: vLLM's own, its target's, and the front door's."""
    return "vllm:" in expr or "http_requests_total" in expr or "up{" in expr or "llmserve_frontdoor_" in expr


def _post(url, body, timeout=120):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def bundle(vllm_server, tmp_path_factory):
    """The monitoring component rendered by the real render playbook for a catalog holding the served model and
    one model that is not running."""
    dest = tmp_path_factory.mktemp("monitoring-rules")
    catalog = [{"name": vllm_server.name, "model": "local/tiny", "params_b": 0.01},
               {"name": ABSENT_MODEL, "model": "local/none", "params_b": 0.01}]
    result = render(dest, tags="monitoring", extra_vars={"llmserve_models": catalog})
    assert result.returncode == 0, result.stdout[-4000:]
    return load_bundle(dest)


@pytest.fixture(scope="module")
def rules(bundle):
    rule = next(o for o in bundle.values() if o["kind"] == "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def _relabel(rules):
    """A PodMonitor's relabelings / metricRelabelings as Prometheus writes them (camelCase -> snake_case)."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex", "action": "action",
            "replacement": "replacement", "separator": "separator"}
    return [{keys[k]: v for k, v in rule.items()} for rule in rules]


@pytest.fixture(scope="module")
def prometheus(vllm_server, bundle):
    """A real Prometheus scraping the real vLLM and the real front door in front of it every second, after real
    requests (bounded waits throughout)."""
    (monitor,) = [o for o in bundle.values() if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "llmserve-frontdoor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    with FrontDoor({"models": {vllm_server.name: {"url": vllm_server.url}}, "auth_mode": "none"}) as door:
        admin = door.admin_url.split("//", 1)[1]
        job = {"job_name": "vllm", "honor_labels": True, "metrics_path": "/metrics",
               "static_configs": [{"targets": ["127.0.0.1:%d" % vllm_server.port],
                                   "labels": {"namespace": NAMESPACE, "pod": POD, "model_name": vllm_server.name}}]}
        frontdoor_job = {"job_name": "frontdoor", "metrics_path": endpoint["path"],
                         "static_configs": [{"targets": [admin], "labels": {"namespace": NAMESPACE, "pod": FRONTDOOR_POD}}],
                         "metric_relabel_configs": _relabel(endpoint.get("metricRelabelings", []))}
        with PrometheusServer([job, frontdoor_job], interval="1s") as prom:
            prom.wait_for('up{job="vllm"} == 1', timeout=60)
            prom.wait_for('up{job="frontdoor"} == 1', timeout=60)
            base = vllm_server.url + "/v1/completions"
            prompt = "The quick brown fox jumps over the lazy dog. " * 6
            for i in range(6):
                _post(base, {"model": vllm_server.name, "prompt": prompt + str(i % 2), "max_tokens": 12, "temperature": 0})
            streamed = _post(base, {"model": vllm_server.name, "prompt": "Hello, how are you", "max_tokens": 8,
                                    "stream": True})
            assert "data: [DONE]" in streamed
            # Through the front door: one answered request and one vLLM refuses (an OpenAI 400 for the model).
            _post(door.url + "/v1/completions", {"model": vllm_server.name, "prompt": "Hi", "max_tokens": 2})
            with pytest.raises(urllib.error.HTTPError) as refused:
                _post(door.url + "/v1/completions", {"model": vllm_server.name, "prompt": "Hi", "max_tokens": -1})
            assert refused.value.code == 400
            # Counters were scraped before the requests; wait until the samples after them are in.
            prom.wait_for('sum(vllm:request_success_total{job="vllm"}) >= 7', timeout=60)
            prom.wait_for('sum(rate(vllm:time_to_first_token_seconds_count{job="vllm"}[5m])) > 0', timeout=30)
            prom.wait_for('min(llmserve_frontdoor_backend_up{model_name="%s"}) == 1' % vllm_server.name, timeout=60)
            prom.wait_for('sum(llmserve_frontdoor_requests_total{code="400"}) >= 1', timeout=60)
            time.sleep(3)
            yield prom


def _panels():
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def test_every_vllm_panel_query_returns_data(prometheus, vllm_server):
    """With the model variable on All (Grafana's allValue .*) and on the served model (dots escaped, as Grafana
    escapes a single regex value)."""
    checked, empty = [], []
    for board, title, expr in _panels():
        if not _is_vllm(expr) or "lora_requests_info" in expr:
            continue  # the LoRA panel has data only where adapters are served: tests/integration/test_lora.py
        for value in (".*", vllm_server.name.replace(".", "\\\\.")):
            query = expr.replace("$model", value)
            answer = prometheus.query(query)
            assert answer["status"] == "success", (board, title, query, answer)
            if not answer["data"]["result"]:
                empty.append((title, query))
        checked.append(title)
    assert not empty, "panel queries without data: %s" % empty
    # Every vLLM panel of the dashboard was run (none skipped by the filter above).
    assert sorted(set(checked)) == sorted([
        "Request throughput", "Tokens per second", "Running and waiting requests", "Requests by finish reason",
        "HTTP responses by status", "Time to first token", "Inter-token latency", "End-to-end request latency",
        "Queue time", "KV cache usage", "Preemptions", "Prefix cache hit rate",
        "Front door requests by model and code", "Front door errors", "Backends up (front door health checks)"])


def test_panel_values_match_the_requests_sent(prometheus, vllm_server):
    """The numbers are the real ones: at least the 7 requests sent here finished (the session's server may have
    served other tests too), with generated tokens counted and a plausible TTFT."""
    model = 'model_name="%s"' % vllm_server.name
    finished = prometheus.query("sum(vllm:request_success_total{%s})" % model)["data"]["result"]
    assert float(finished[0]["value"][1]) >= 7
    reasons = prometheus.query("sum by (finished_reason) (vllm:request_success_total{%s}) > 0" % model)["data"]["result"]
    assert reasons and {r["metric"]["finished_reason"] for r in reasons} <= {"stop", "length", "abort"}
    generated = prometheus.query("sum(vllm:generation_tokens_total{%s})" % model)["data"]["result"]
    assert float(generated[0]["value"][1]) >= 7
    ttft = prometheus.query('histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{%s}[5m])))'
                            % model)["data"]["result"]
    assert 0 < float(ttft[0]["value"][1]) < 60


def test_every_alert_expression_parses_and_vllm_ones_see_real_series(prometheus, rules, vllm_server):
    for rule in rules:
        answer = prometheus.query(rule["expr"])
        assert answer["status"] == "success", (rule["alert"], rule["expr"], answer)
        if not _is_vllm(rule["expr"]) or rule["alert"] == "VllmModelDown":
            continue
        # The left side of the threshold must select the real series (labels namespace/model_name line up).
        left = re.split(r"\s(?:>|==)\s[0-9.]+\s*$", rule["expr"].strip())[0]
        if rule["alert"] == "VllmServerErrors":
            left = left.split("\n/")[-1] if "\n/" in left else left.split(" / ")[-1]
        data = prometheus.query(left)["data"]["result"]
        assert data and data[0]["metric"].get("model_name") == vllm_server.name, (rule["alert"], left, data)


def test_model_down_alert_knows_which_model_runs(prometheus, rules, vllm_server):
    down = {r["labels"]["model_name"]: r["expr"] for r in rules if r["alert"] == "VllmModelDown"}
    assert sorted(down) == sorted([vllm_server.name, ABSENT_MODEL])
    assert prometheus.query(down[vllm_server.name])["data"]["result"] == []
    assert len(prometheus.query(down[ABSENT_MODEL])["data"]["result"]) == 1


def test_adapter_series_and_metrics_queries_find_the_pod(prometheus, bundle):
    """prometheus-adapter's rules, run the way the adapter runs them (seriesQuery, then metricsQuery with the
    pod's namespace/pod matchers), find the real vLLM pod's queue metrics."""
    chart = next(o for o in bundle.values() if o["kind"] == "HelmChart" and o["metadata"]["name"] == "prometheus-adapter")
    chart_values = yaml.safe_load(chart["spec"]["valuesContent"])
    for rule in chart_values["rules"]["custom"]:
        series = prometheus.api("series", **{"match[]": rule["seriesQuery"]})
        assert series["status"] == "success" and series["data"], rule["seriesQuery"]
        metric = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"]).group(1)
        query = (rule["metricsQuery"].replace("<<.Series>>", metric)
                 .replace("<<.LabelMatchers>>", 'namespace="%s",pod=~"%s"' % (NAMESPACE, POD))
                 .replace("<<.GroupBy>>", "pod"))
        result = prometheus.query(query)["data"]["result"]
        assert [r["metric"]["pod"] for r in result] == [POD], query


def test_pinned_vllm_knows_the_otlp_traces_flag():
    """The flag the vllm_models role adds for traces exists in the vLLM release the image pins (read from the
    installed package's argument definitions, without importing it)."""
    from vllm_server import VLLM_VERSION, ensure_vllm_venv  # pylint: disable=import-outside-toplevel
    python = ensure_vllm_venv()
    sources = list(python.parent.parent.glob("lib/python3*/site-packages/vllm/engine/arg_utils.py"))
    assert sources and '"--otlp-traces-endpoint"' in sources[0].read_text(encoding="utf-8")
    # The image's tag is the plan's (decided in _shared): the release these tests install.
    from ansible_collections.llmserve.k3s.plugins.module_utils import _shared  # pylint: disable=import-outside-toplevel
    assert _shared.VLLM_VERSION == VLLM_VERSION
    defaults = yaml.safe_load((ROOT / "roles/vllm_models/defaults/main.yml").read_text(encoding="utf-8"))
    assert defaults["vllm_models_accelerator_profiles"]["nvidia"]["tag"] == "{{ llmserve_plan.vllm_image_tag }}"
