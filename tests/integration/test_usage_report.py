"""`make usage` (tools/usage.py) and the Usage dashboard against a real Prometheus (Debian's package).

Prometheus scrapes a small static HTTP endpoint that serves the front door's usage and quota metric lines (the names
and labels agreed in tests/data/metric_names/llmserve-frontdoor-usage.txt), with the rendered front-door PodMonitor's
metricRelabelings, as in the cluster. The stand-in is enough here: the front door's own /metrics is tested by running
it (tests/unit/test_frontdoor.py). Every wait is bounded; Prometheus and the endpoint are stopped by the test.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import re
import subprocess
import sys
import threading

import pytest

from k8s_schema import load_bundle
from playbook import render
from prometheus import PrometheusServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "usage.py"
# (user, group, model, prompt tokens, completion tokens, requests): the values after the first scrape.
USAGE = [("alice", "students", "llama-3.1-8b", 9000, 3000, 40),
         ("bob", "staff", "llama-3.1-8b", 2000, 500, 90),
         ("carol", "students", "mixtral-8x7b", 700, 300, 5),
         ("key-1a2b3c4d", "", "mixtral-8x7b", 100, 20, 2)]


class _Metrics(http.server.BaseHTTPRequestHandler):
    """Counters at 0 on the first scrape, then at the values of USAGE (an increase Prometheus can see)."""
    scrapes = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        factor = 1 if type(self).scrapes else 0
        type(self).scrapes += 1
        lines = []
        for user, group, model, prompt, completion, requests in USAGE:
            labels = 'user="%s",group="%s",model="%s"' % (user, group, model)
            lines.append('llmserve_usage_tokens_total{%s,kind="prompt"} %d' % (labels, prompt * factor))
            lines.append('llmserve_usage_tokens_total{%s,kind="completion"} %d' % (labels, completion * factor))
            lines.append('llmserve_usage_requests_total{%s,code="200"} %d' % (labels, requests * factor))
        lines += ['llmserve_quota_refusals_total{group="students",limit="tokens_per_day"} %d' % (12 * factor),
                  'llmserve_quota_store_up{worker="1"} 1', "llmserve_quota_store_errors_total %d" % (3 * factor)]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _relabel(rules):
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex", "action": "action",
            "replacement": "replacement", "separator": "separator"}
    return [{keys[k]: v for k, v in rule.items()} for rule in rules]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    dest = tmp_path_factory.mktemp("usage-monitoring")
    result = render(dest, tags="monitoring")
    assert result.returncode == 0, result.stdout[-3000:]
    (monitor,) = [o for o in load_bundle(dest).values()
                  if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "llmserve-frontdoor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    job = {"job_name": "frontdoor", "metrics_path": endpoint["path"],
           "static_configs": [{"targets": ["127.0.0.1:%d" % server.server_address[1]],
                               "labels": {"namespace": "llm-serving", "pod": "llmserve-frontdoor-0"}}],
           "metric_relabel_configs": _relabel(endpoint.get("metricRelabelings", []))}
    try:
        with PrometheusServer([job], interval="1s") as prom:
            prom.wait_for('sum(llmserve_usage_tokens_total{user="alice"}) > 0', timeout=60)
            prom.wait_for('count_over_time(llmserve_usage_tokens_total{user="alice", kind="prompt"}[5m]) >= 5', timeout=60)
            yield prom
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60, check=False,
                          env=env)


def _row(output, title, name):
    """The figures (tokens, prompt, completion, requests) of name in the table titled title."""
    section = output.split(title, 1)[1].split("\n\n", 1)[0]
    (line,) = [l for l in section.splitlines() if l.split() and l.split()[0] == name]
    return [int(v) for v in line.split()[1:]]


def _increase(prom, expr):
    (item,) = prom.query(expr)["data"]["result"]
    return round(float(item["value"][1]))


def test_the_report_names_the_top_user_and_group_with_prometheus_figures(prometheus):
    out = _run("--url", prometheus.url, "--top", "3")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # alice has the most tokens, bob the most requests; students (alice + carol) lead the groups.
    users_by_tokens = text.split("Top 3 users by tokens", 1)[1].split("\n\n", 1)[0].splitlines()
    assert users_by_tokens[2].split()[0] == "alice" and len(users_by_tokens) == 5  # title, header, 3 rows
    assert text.split("Top 3 users by requests", 1)[1].splitlines()[2].split()[0] == "bob"
    assert text.split("Top 3 groups by tokens", 1)[1].splitlines()[2].split()[0] == "students"
    assert "(no group)" in text
    tokens, prompt, completion, requests = _row(text, "Top 3 users by tokens", "alice")
    # The figures are Prometheus's increase() over the day, as the report says: the same query a moment later gives
    # nearly the same numbers (its extrapolation moves with the clock).
    for figure, expr in ((prompt, 'sum(increase(llmserve_usage_tokens_total{user="alice", kind="prompt"}[1d]))'),
                         (requests, 'sum(increase(llmserve_usage_requests_total{user="alice"}[1d]))')):
        assert abs(figure - _increase(prometheus, expr)) <= 0.05 * figure
    assert tokens == prompt + completion or abs(tokens - prompt - completion) <= 1
    # increase() extrapolates a little beyond what was counted, never below it.
    assert 9000 <= prompt <= 9000 * 1.5 and 3000 <= completion <= 3000 * 1.5 and 40 <= requests <= 60
    students = _row(text, "Top 3 groups by tokens", "students")
    assert students[0] >= 9000 + 3000 + 700 + 300


def test_the_range_and_top_follow_the_environment(prometheus):
    env = {"PROMETHEUS_URL": prometheus.url, "USAGE_TOP": "1", "USAGE_RANGE": "1h", "PATH": "/usr/bin:/bin"}
    out = _run(env=env)
    assert out.returncode == 0, out.stderr
    assert "last 1h" in out.stdout and "Top 1 users by tokens" in out.stdout
    assert "bob" not in out.stdout.split("Top 1 users by requests")[0]


def test_unreachable_prometheus_is_a_clear_error():
    out = _run("--url", "http://127.0.0.1:9")
    assert out.returncode == 1 and out.stdout == ""
    assert "cannot reach Prometheus at http://127.0.0.1:9" in out.stderr and "port-forward" in out.stderr


def test_every_usage_dashboard_query_returns_data(prometheus):
    """Grafana's variables as an operator would leave them: All models and groups (.*), top 5, a 1h range."""
    board = json.loads((ROOT / "roles/monitoring/files/dashboards/llmserve-usage.json").read_text(encoding="utf-8"))
    empty = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in (("$__range", "1h"), ("$topk", "5"), ("$model", ".*"), ("$group", ".*")):
                expr = expr.replace(variable, value)
            assert not re.search(r"\$\w", expr), expr
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (panel["title"], expr, answer)
            if not answer["data"]["result"]:
                empty.append((panel["title"], expr))
    assert empty == []
    # The model filter works on the relabelled model_name.
    mixtral = prometheus.query('sum(increase(llmserve_usage_tokens_total{model_name=~"mixtral-8x7b"}[1h]))')
    assert float(mixtral["data"]["result"][0]["value"][1]) >= 1120
