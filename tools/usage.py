# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who used what: the top users and groups by tokens and by requests over the last day (`make usage`).

Asks Prometheus's HTTP API (PROMETHEUS_URL, default http://127.0.0.1:9090) for the front door's usage counters,
llmserve_usage_tokens_total and llmserve_usage_requests_total, summed by user and by group with increase() over the
range (USAGE_RANGE, default 1d), and prints the top USAGE_TOP (default 10) of each. Reach the cluster's Prometheus with
    kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090:9090
Figures are Prometheus's increase(): extrapolated over the range, so they are estimates, not invoices.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9090"
PORT_FORWARD = "kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090:9090"


class PrometheusError(RuntimeError):
    """Prometheus cannot be reached or refused a query."""


def query(url, expr, timeout=30):
    """[(labels, value)] of an instant query."""
    address = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(address, timeout=timeout) as answer:
            body = json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise PrometheusError("Prometheus at %s refused the query %s: HTTP %d %s"
                              % (url, expr, exc.code, exc.read().decode("utf-8", "replace")[:300])) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusError("cannot reach Prometheus at %s (%s). Port-forward it (%s) or set PROMETHEUS_URL."
                              % (url, getattr(exc, "reason", exc), PORT_FORWARD)) from exc
    if body.get("status") != "success":
        raise PrometheusError("Prometheus at %s answered %s to %s" % (url, body.get("error", body), expr))
    return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]


def usage(url, by, window):
    """{name: {"tokens", "prompt", "completion", "requests"}} of every user (by="user") or group (by="group")."""
    rows = {}

    def row(name):
        return rows.setdefault(name, {"tokens": 0.0, "prompt": 0.0, "completion": 0.0, "requests": 0.0})

    for labels, value in query(url, "sum by (%s, kind) (increase(llmserve_usage_tokens_total[%s]))" % (by, window)):
        entry = row(labels.get(by, ""))
        entry["tokens"] += value
        if labels.get("kind") in ("prompt", "completion"):
            entry[labels["kind"]] += value
    for labels, value in query(url, "sum by (%s) (increase(llmserve_usage_requests_total[%s]))" % (by, window)):
        row(labels.get(by, ""))["requests"] += value
    return rows


def table(rows, order, top, what):
    """The top rows by `order` as a text table."""
    ranked = sorted(rows.items(), key=lambda item: (-item[1][order], item[0]))[:top]
    lines = ["Top %d %s by %s" % (top, what + "s", order)]
    if not ranked:
        return "\n".join(lines + ["  (no usage recorded)"])
    names = [(name or "(no group)") for name, dummy in ranked]
    width = max(len(what), *(len(n) for n in names))
    lines.append("  %-*s %14s %14s %14s %10s" % (width, what, "tokens", "prompt", "completion", "requests"))
    for name, (dummy, entry) in zip(names, ranked):
        lines.append("  %-*s %14d %14d %14d %10d" % (width, name, round(entry["tokens"]), round(entry["prompt"]),
                                                     round(entry["completion"]), round(entry["requests"])))
    return "\n".join(lines)


def report(url, top=10, window="1d"):
    users, groups = usage(url, "user", window), usage(url, "group", window)
    parts = ["Usage over the last %s (Prometheus %s; increase(), estimates)" % (window, url)]
    for rows, what in ((users, "user"), (groups, "group")):
        for order in ("tokens", "requests"):
            parts.append(table(rows, order, top, what))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", default=os.environ.get("PROMETHEUS_URL") or DEFAULT_URL)
    parser.add_argument("--top", type=int, default=int(os.environ.get("USAGE_TOP") or 10))
    parser.add_argument("--range", dest="window", default=os.environ.get("USAGE_RANGE") or "1d",
                        help="a Prometheus duration, e.g. 1h, 1d, 7d")
    args = parser.parse_args(argv)
    if args.top < 1 or not re.match(r"^[0-9]+(ms|s|m|h|d|w|y)$", args.window):
        parser.error("--top must be >= 1 and --range a Prometheus duration such as 1d")
    try:
        sys.stdout.write(report(args.url, args.top, args.window))
    except PrometheusError as exc:
        sys.stderr.write("make usage: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
