"""The monitoring component, rendered by the real render playbook: schemas, wiring to the model workloads,
secrets, the Grafana route, prometheus-adapter, dashboards, alert rules (promtool) and bad input.

Runs here for real: ansible-playbook render, the CRD/Kubernetes schemas, promtool (Debian's prometheus package).
Cannot run here: the charts themselves (helm-controller, Grafana, Prometheus Operator), Traefik and the DCGM
exporter; what they are given is checked as data.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest
import yaml

from batches import flat, pack
from k8s_schema import validate
from playbook import render
from prometheus import promtool, rules_file

from ansible_collections.llmserve.k3s.plugins.module_utils._shared import PORTS

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metric_names"
PASSWORD = "Grafana-admin-pass-0123"
MIDDLEWARES = [{"name": "llm-ratelimit", "namespace": "llm-serving"}, {"name": "llm-auth", "namespace": "llm-serving"}]
# The thresholds tests/render/data/monitoring-alerts.test.yml is written for (the others are the defaults).
THRESHOLDS = {"monitoring_alert_kv_cache_ratio": 0.8, "monitoring_alert_queue_waiting": 7,
              "monitoring_alert_ttft_p95_seconds": 1.5, "monitoring_alert_gpu_temp_celsius": 80}
# Quotas turn on the quota alerts and the Redis exporter's PodMonitor (the render without them: test_no_quotas_...).
QUOTAS = {"students": {"tokens_per_day": 200000}, "default": {"tokens_per_day": 100000}}


def recorded_names(name):
    """{metric name: [labels]} of a recorded list in tests/data/metric_names."""
    out = {}
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            metric, *labels = line.split()
            out[metric] = labels
    return out


def frontdoor_names():
    """The metric names the front door serves (from its own source: it writes its /metrics page itself)."""
    return set(re.findall(r"\b(llmserve_frontdoor_\w+)", (ROOT / "roles/ingress/files/llmserve_frontdoor.py").read_text()))


def _monitoring(objects):
    return {p: o for p, o in objects.items() if p.startswith("monitoring/")}


def _one(objects, kind, name):
    found = [o for o in objects.values() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, "%s/%s: %d found" % (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def bundle(renders):
    """The workstation bundle with an ingress host, Grafana middlewares and the test thresholds; the Grafana
    password is in the environment, as it would come from Vault."""
    return renders.bundle(extra_vars=_bundle_vars(), env={"GRAFANA_ADMIN_PASSWORD": PASSWORD}, label="monitoring")


def _bundle_vars():
    extra = {"llmserve_ingress_host": "llm.example.org", "monitoring_grafana_middlewares": MIDDLEWARES,
             "llmserve_quotas": QUOTAS}
    extra.update(THRESHOLDS)
    return extra


def test_every_monitoring_object_validates(bundle):
    objects = _monitoring(bundle[1])
    kinds = sorted({o["kind"] for o in objects.values()})
    assert kinds == ["ConfigMap", "DaemonSet", "HelmChart", "IngressRoute", "Namespace", "PodMonitor",
                     "PrometheusRule", "Service", "ServiceMonitor"]
    assert {p: e for p, o in objects.items() if (e := validate(o))} == {}


def test_one_podmonitor_per_enabled_model_selects_its_pods(bundle):
    objects = bundle[1]
    deployments = {o["metadata"]["labels"]["llmserve.io/model"]: o for o in objects.values()
                   if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"}
    monitors = {o["metadata"]["labels"]["llmserve.io/model"]: o for o in objects.values()
                if o["kind"] == "PodMonitor" and "llmserve.io/model" in o["metadata"]["labels"]}
    # llama-3.1-8b-multi is disabled in the workstation catalog: neither a Deployment nor a PodMonitor.
    assert sorted(monitors) == sorted(deployments) == ["deepseek-coder-v2-lite", "llama-3.1-8b", "mixtral-8x7b"]
    for name, monitor in monitors.items():
        pod = deployments[name]["spec"]["template"]
        spec = monitor["spec"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert spec["namespaceSelector"]["matchNames"] == [deployments[name]["metadata"]["namespace"]]
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        endpoint = spec["podMetricsEndpoints"][0]
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports[endpoint["port"]] == PORTS["vllm"] and endpoint["path"] == "/metrics"
        # model_name on every series of the target (the pod label llmserve.io/model, sanitized by Prometheus).
        relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert relabel["model_name"] == ["__meta_kubernetes_pod_label_llmserve_io_model"]
        assert "namespace" not in relabel and endpoint["honorLabels"] is True


def test_dcgm_exporter_runs_on_gpu_nodes_and_is_scraped(bundle):
    objects = bundle[1]
    daemonset = _one(objects, "DaemonSet", "dcgm-exporter")
    service = _one(objects, "Service", "dcgm-exporter")
    monitor = _one(objects, "ServiceMonitor", "dcgm-exporter")
    pod = daemonset["spec"]["template"]["spec"]
    model_pod = next(o for o in objects.values() if o["kind"] == "Deployment"
                     and o["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"llmserve.io/gpu": "true"} and pod["runtimeClassName"] == "nvidia"
    assert pod["runtimeClassName"] == model_pod["runtimeClassName"]
    image = pod["containers"][0]["image"]
    assert re.fullmatch(r"nvcr\.io/nvidia/k8s/dcgm-exporter:\d+\.\d+\.\d+-\d+\.\d+\.\d+-[a-z0-9.]+", image), image
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]


def test_traefik_is_scraped_on_its_metrics_port(bundle):
    """k3s's Traefik pods (kube-system, app.kubernetes.io/name=traefik, container port `metrics`) feed the 429
    panels; Traefik itself does not run here."""
    monitor = _one(bundle[1], "PodMonitor", "traefik")
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["kube-system"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_stack_chart_is_pinned_and_configured_from_variables(bundle):
    chart = _one(bundle[1], "HelmChart", "kube-prometheus-stack")
    assert chart["metadata"]["namespace"] == "kube-system" and chart["spec"]["targetNamespace"] == "monitoring"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["spec"]["version"])
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d" and spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    grafana = values["grafana"]
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert grafana["sidecar"]["dashboards"]["enabled"] is True
    assert {grafana["sidecar"]["dashboards"]["label"]: grafana["sidecar"]["dashboards"]["labelValue"]} == {"grafana_dashboard": "1"}
    assert grafana["grafana.ini"]["server"] == {"root_url": "https://llm.example.org/grafana/", "serve_from_sub_path": True}


def test_grafana_password_is_never_in_the_bundle_or_the_output(bundle):
    folder, output = bundle[0], bundle[2]
    assert PASSWORD not in output
    for path in folder.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(encoding="utf-8"), path


def test_grafana_route_uses_the_ingress_host_path_and_middlewares(bundle):
    route = _one(bundle[1], "IngressRoute", "grafana")
    rule = route["spec"]["routes"][0]
    assert rule["match"] == "Host(`llm.example.org`) && PathPrefix(`/grafana`)"
    assert rule["middlewares"] == MIDDLEWARES
    assert rule["services"] == [{"name": "kube-prometheus-stack-grafana", "port": 80}]
    assert route["spec"]["entryPoints"] == ["websecure"]


def test_adapter_exposes_what_the_model_hpas_scale_on(bundle, multinode):
    """prometheus-adapter's rules rename vllm:x to vllm_x; every HPA's Pods metric must be one of them."""
    chart = _one(bundle[1], "HelmChart", "prometheus-adapter")
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["prometheus"]["url"] == "http://kube-prometheus-stack-prometheus.monitoring.svc"
    exposed = {}
    for rule in values["rules"]["custom"]:
        series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"]).group(1)
        assert re.fullmatch(rule["name"]["matches"], series)
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        exposed[rule["name"]["as"]] = series
    assert exposed == {"vllm_num_requests_waiting": "vllm:num_requests_waiting",
                       "vllm_num_requests_running": "vllm:num_requests_running"}
    hpas = [o for o in multinode[1].values() if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpas, "the multinode catalog has an autoscaled model"
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exposed


def test_dashboards_are_sidecar_configmaps_of_the_role_files(bundle):
    maps = [o for o in bundle[1].values() if o["kind"] == "ConfigMap" and o["metadata"]["namespace"] == "monitoring"]
    files = sorted((ROOT / "roles/monitoring/files/dashboards").glob("*.json"))
    assert len(maps) == len(files) == 4
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), = cm["data"].items()
        assert json.loads(text) == json.loads((ROOT / "roles/monitoring/files/dashboards" / key).read_text())


def _panel_queries(dashboard):
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def _dashboard(name):
    return json.loads((ROOT / "roles/monitoring/files/dashboards" / name).read_text(encoding="utf-8"))


def test_vllm_dashboard_queries_use_current_names_and_the_model_filter():
    board = _dashboard("llmserve-vllm.json")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "model_name" in variables["model"]["definition"] and variables["model"]["includeAll"]
    titles = {p["title"] for p in board["panels"]}
    for wanted in ("Request throughput", "Tokens per second", "Running and waiting requests", "KV cache usage",
                   "Time to first token", "Inter-token latency", "End-to-end request latency",
                   "Requests by finish reason", "Preemptions", "Prefix cache hit rate", "Rate limited (429)"):
        assert wanted in titles
    for title, expr in _panel_queries(board):
        assert "gpu_cache_usage_perc" not in expr and "time_per_output_token" not in expr, title
        if "vllm:" in expr or "http_requests_total" in expr:
            assert 'model_name=~"$model"' in expr, title
        for fn, metric in re.findall(r"\b(rate|increase)\((\w[\w:]*)", expr):
            assert metric.endswith(("_total", "_bucket")), "%s: %s over a non-counter %s" % (title, fn, metric)
        for quantile in re.findall(r"histogram_quantile\(([^,]+), (\w+ by \([^)]*\))", expr):
            assert "le" in re.findall(r"\w+", quantile[1].split("(", 1)[1]), title


def test_gpu_and_traefik_queries_use_recorded_metric_names():
    """GPU and Traefik panels cannot have data here: their names are checked against lists recorded from the
    DCGM exporter's default counters and Traefik's documentation (tests/data/metric_names)."""
    dcgm = recorded_names("dcgm-exporter.txt")
    traefik = recorded_names("traefik-v3.txt")
    used = set()
    for name in ("llmserve-gpu.json", "llmserve-vllm.json"):
        for title, expr in _panel_queries(_dashboard(name)):
            for metric in re.findall(r"\b((?:DCGM_FI|traefik)_\w+)", expr):
                assert metric in dcgm or metric in traefik, "%s: %s is not a recorded metric" % (title, metric)
                used.add(metric)
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_XID_ERRORS", "traefik_entrypoint_requests_total"} <= used
    for label in re.findall(r"by \(([^)]*)\)", json.dumps(_dashboard("llmserve-gpu.json"))):
        assert set(re.findall(r"\w+", label)) <= {"Hostname", "gpu", "UUID", "namespace", "pod", "le"}


def test_rule_metric_names_are_recorded_or_vllm(bundle):
    rule = _one(bundle[1], "PrometheusRule", "llmserve-alerts")
    known = set(recorded_names("dcgm-exporter.txt")) | set(recorded_names("traefik-v3.txt")) \
        | set(recorded_names("kube-state-metrics.txt")) | {"up", "http_requests_total"} | set(frontdoor_names()) \
        | set(recorded_names("llmserve-frontdoor-usage.txt"))
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert "runbook" in r["annotations"] and "playbooks/" in r["annotations"]["runbook"], r["alert"]
            for metric in re.findall(r"\b([a-zA-Z_][\w:]*)\{", r["expr"]) + re.findall(r"\((DCGM_\w+)\)", r["expr"]):
                assert metric.startswith("vllm:") or metric in known, (r["alert"], metric)


def test_rules_pass_promtool_check_and_unit_tests(bundle, tmp_path):
    rule = _one(bundle[1], "PrometheusRule", "llmserve-alerts")
    rules_file(rule, tmp_path / "rules.yml")
    checked = promtool("check", "rules", tmp_path / "rules.yml")
    assert checked.returncode == 0 and "SUCCESS: 15 rules found" in checked.stdout, checked.stdout
    shutil.copy(ROOT / "tests/render/data/monitoring-alerts.test.yml", tmp_path / "alerts.test.yml")
    tested = promtool("test", "rules", tmp_path / "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    unit_tested = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts.test.yml").read_text()))
    assert alerts == unit_tested


def test_promtool_unit_tests_fail_when_a_threshold_changes(tmp_path, bundle):
    """The unit tests depend on the rendered thresholds: the same tests against rules rendered with another
    queue threshold fail (so they test the rules, not themselves)."""
    rule = _one(bundle[1], "PrometheusRule", "llmserve-alerts")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r["alert"] == "VllmQueueHigh":
                r["expr"] = r["expr"].replace("> 7", "> 25")
    rules_file(rule, tmp_path / "rules.yml")
    shutil.copy(ROOT / "tests/render/data/monitoring-alerts.test.yml", tmp_path / "alerts.test.yml")
    tested = promtool("test", "rules", tmp_path / "alerts.test.yml")
    assert tested.returncode != 0 and "VllmQueueHigh" in tested.stdout


def test_external_prometheus_renders_only_monitors_rules_and_dashboards(renders):
    objects = renders.bundle(label="external", **PREFETCH["external"])[1]
    charts = sorted(o["metadata"]["name"] for o in objects.values() if o["kind"] == "HelmChart")
    assert charts == ["prometheus-adapter"]
    assert not [o for o in objects.values() if o["kind"] == "IngressRoute"]
    selected = [o for o in objects.values() if o["kind"] in ("PodMonitor", "ServiceMonitor", "PrometheusRule")]
    assert len(selected) == 9  # 3 models, the front door, the routers, Traefik, the DCGM exporter, the alert rules, the sizing rules
    for obj in selected:
        assert obj["metadata"]["labels"]["prometheus"] == "campus" and "release" not in obj["metadata"]["labels"]
    adapter = yaml.safe_load(_one(objects, "HelmChart", "prometheus-adapter")["spec"]["valuesContent"])
    assert adapter["prometheus"]["url"] == "http://prometheus-operated.observability.svc"
    assert {p: e for p, o in objects.items() if (e := validate(o))} == {}


def test_render_again_changes_nothing(bundle, tmp_path):
    """The monitoring tag on a bundle the same settings rendered: nothing changes."""
    folder = tmp_path / "bundle"
    shutil.copytree(bundle[0], folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    again = render(folder, extra_vars=_bundle_vars(), tags="monitoring", env={"GRAFANA_ADMIN_PASSWORD": PASSWORD})
    assert again.returncode == 0, again.stdout[-3000:]
    assert "TASK [llmserve.k3s.monitoring : Render the monitoring component]" in again.stdout
    assert recap_changed(again.stdout) == 0
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def recap_changed(output):
    from playbook import recap  # pylint: disable=import-outside-toplevel
    return recap(output)["changed"]


# variable -> (extra vars, its own message, the messages it makes). Every monitoring problem is reported at once, so
# cases with no variable and no message in common share a run (tests/lib/batches.py).
BAD_INPUT = {
    "monitoring_namespace": ({"monitoring_namespace": "Monitoring"}, 'monitoring_namespace is "Monitoring": not a DNS-1123 label',
                             "namespace"),
    "monitoring_stack_chart_version": ({"monitoring_stack_chart_version": "latest"},
                                       'monitoring_stack_chart_version is "latest": not a pinned version', "stack-chart"),
    "monitoring_dcgm_image_tag": ({"monitoring_dcgm_image_tag": "latest"}, 'monitoring_dcgm_image_tag is "latest"', "dcgm"),
    "monitoring_alert_kv_cache_ratio": ({"monitoring_alert_kv_cache_ratio": 90}, "monitoring_alert_kv_cache_ratio 90, ", "alerts"),
    "monitoring_alert_ttft_p95_seconds": ({"monitoring_alert_ttft_p95_seconds": 0}, "monitoring_alert_ttft_p95_seconds 0, ",
                                          "alerts"),
    "monitoring_alert_queue_for": ({"monitoring_alert_queue_for": "5 minutes"},
                                   'monitoring_alert_queue_for is "5 minutes": not a Prometheus duration', "queue-for"),
    "monitoring_grafana_ingress_host": ({"llmserve_ingress_host": "LLM_host"}, 'monitoring_grafana_ingress_host "LLM_host"',
                                        "grafana-route"),
    "monitoring_grafana_middlewares": ({"monitoring_grafana_middlewares": [{"namespace": "llm-serving"}]},
                                       'monitoring_grafana_middlewares [{"namespace": "llm-serving"}]', "grafana-route"),
    "monitoring_adapter_metrics": ({"monitoring_adapter_metrics": ["vllm num waiting"]},
                                   'monitoring_adapter_metrics ["vllm num waiting"] must be', "adapter"),
    # Applying the stack without a Grafana password stops in preflight, before any cluster call.
    "llmserve_grafana_admin_password": ({"llmserve_apply": True}, "The Grafana admin password is missing or shorter than 8 "
                                        "characters. Fix: set llmserve_grafana_admin_password", "password"),
    "monitoring_alert_quota_store_down_for": ({"monitoring_alert_quota_store_down_for": "a minute"},
                                              'monitoring_alert_quota_store_down_for is "a minute"', "store-down-for"),
    "monitoring_alert_quota_refusals_per_hour": ({"monitoring_alert_quota_refusals_per_hour": -1},
                                                 "monitoring_alert_quota_refusals_per_hour -1 must be", "alerts"),
}
BAD_RUNS, BAD_RUN_OF = pack({variable: (spec[0], "monitoring", spec[2]) for variable, spec in BAD_INPUT.items()}, "bad")


OTLP = "http://tempo.monitoring.svc:4317"
# The module's renders besides `bundle`, started in the session's render pool when the module starts.
PREFETCH = {
    "external": {"tags": "monitoring", "extra_vars": {
        "llmserve_ingress_host": "llm.example.org", "monitoring_external_prometheus": True,
        "monitoring_selector_labels": {"prometheus": "campus"},
        "monitoring_adapter_prometheus_url": "http://prometheus-operated.observability.svc"}},
    "otlp": {"tags": "models", "extra_vars": {"llmserve_otlp_traces_endpoint": OTLP}},
    "no-quotas": {"tags": "monitoring", "extra_vars": {"llmserve_ingress_host": "llm.example.org"}},
} | {label: {"tags": "monitoring", "extra_vars": extra, "env": {"GRAFANA_ADMIN_PASSWORD": ""}}
     for label, extra in BAD_RUNS.items()}


@pytest.mark.parametrize("variable", list(BAD_INPUT))
def test_bad_input_fails_in_preflight_naming_the_variable(renders, variable):
    dest, result = renders.run(label=BAD_RUN_OF[variable], **PREFETCH[BAD_RUN_OF[variable]])
    assert result.returncode != 0
    assert BAD_INPUT[variable][1] in flat(result.stdout), result.stdout[-3000:]
    assert "TASK [llmserve.k3s.monitoring : Check the monitoring settings]" in result.stdout.split("FAILED!")[0]
    assert not dest.exists()


def test_the_bad_monitoring_settings_share_few_runs():
    assert len(BAD_RUNS) <= len(BAD_INPUT) // 3


def test_otlp_traces_endpoint_reaches_every_model(renders):
    deployments = [o for o in renders.bundle(label="otlp", **PREFETCH["otlp"])[1].values() if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for deployment in deployments:
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        # The older setting keeps working: vLLM sent it over gRPC (its exporter's default), as it is now written.
        assert args[args.index("--otlp-traces-endpoint") + 1] == OTLP.replace("http://", "grpc://")


def test_no_otlp_flag_by_default(bundle):
    for obj in bundle[1].values():
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            assert "--otlp-traces-endpoint" not in container.get("command", []) + container.get("args", [])


def test_front_door_and_router_panels_use_their_real_metric_names():
    """The front door's names come from its source (its /metrics is tested by running it, tests/unit/test_frontdoor.py);
    the router's from tests/data/metric_names/vllm-router-0.1.17.txt, recorded from the real router."""
    router = recorded_names("vllm-router-0.1.17.txt")
    door = frontdoor_names()
    used = set()
    for title, expr in _panel_queries(_dashboard("llmserve-vllm.json")):
        for metric in re.findall(r"\b((?:vllm_router|llmserve_frontdoor)_\w+)", expr):
            assert metric in router or metric in door, "%s: %s is not a metric of the router or the front door" % (title, metric)
            assert 'model_name=~"$model' in expr, title
            used.add(metric)
    assert {"llmserve_frontdoor_requests_total", "llmserve_frontdoor_backend_up", "vllm_router_requests_total",
            "vllm_router_request_errors_total"} <= used


def test_front_door_and_routers_are_scraped(bundle):
    door = _one(bundle[1], "PodMonitor", "llmserve-frontdoor")["spec"]
    assert door["selector"] == {"matchLabels": {"app.kubernetes.io/name": "llmserve-frontdoor"}}
    assert door["podMetricsEndpoints"][0]["port"] == "metrics"
    assert door["namespaceSelector"] == {"matchNames": ["llm-serving"]}
    router = _one(bundle[1], "PodMonitor", "vllm-router")["spec"]
    assert router["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"] == "model_name"
    # The pods they select are the ones the bundle runs, on the port the pods name "metrics".
    (deployment,) = [o for o in bundle[1].values() if o["kind"] == "Deployment" and o["metadata"]["name"] == "llmserve-frontdoor"]
    pod = deployment["spec"]["template"]
    assert door["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "metrics" in [p["name"] for p in pod["spec"]["containers"][0]["ports"]]


def test_usage_dashboard_queries_use_the_front_door_usage_names_and_filters():
    """The front door's usage names are the agreed interface (tests/data/metric_names/llmserve-frontdoor-usage.txt);
    their series are queried for real by tests/integration/test_usage_report.py."""
    board = _dashboard("llmserve-usage.json")
    usage = recorded_names("llmserve-frontdoor-usage.txt")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["topk"]["current"]["value"] == "10" and "model_name" in variables["model"]["definition"]
    titles = {p["title"] for p in board["panels"]}
    for wanted in ("Tokens by group", "Requests by group", "Top users by tokens", "Top users by requests", "Tokens by model",
                   "Quota refusals by group and limit", "Quota store up"):
        assert wanted in titles
    used = set()
    for title, expr in _panel_queries(board):
        metrics = re.findall(r"\b(llmserve_\w+)", expr)
        assert metrics, title
        for metric in metrics:
            assert metric in usage, "%s: %s is not a front door usage metric" % (title, metric)
            used.add(metric)
        # The front door's "model" label is model_name in Prometheus (the PodMonitor's metricRelabelings).
        assert "model=" not in expr and "(model," not in expr, title
        if "llmserve_usage_" in expr:
            assert 'model_name=~"$model"' in expr and 'group=~"$group"' in expr, title
        if title.startswith("Top users"):
            assert expr.startswith("topk($topk, sum by (user)") and "[$__range]" in expr, title
        for fn, metric in re.findall(r"\b(rate|increase)\((\w+)", expr):
            assert metric.endswith("_total"), "%s: %s over a non-counter %s" % (title, fn, metric)
    assert used == set(usage)


def test_redis_exporter_is_scraped_where_redis_runs(bundle):
    monitor = _one(bundle[1], "PodMonitor", "llmserve-redis")["spec"]
    (deployment,) = [o for o in bundle[1].values() if o["kind"] == "Deployment" and o["metadata"]["name"] == "llmserve-redis"]
    pod = deployment["spec"]["template"]
    assert monitor["namespaceSelector"] == {"matchNames": [deployment["metadata"]["namespace"]]}
    assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: c["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert ports[monitor["podMetricsEndpoints"][0]["port"]] == "exporter"


def test_no_quotas_no_quota_alerts_and_no_redis_scrape(renders):
    objects = renders.bundle(label="no-quotas", **PREFETCH["no-quotas"])[1]
    rule = _one(objects, "PrometheusRule", "llmserve-alerts")
    assert "llmserve.quotas" not in [g["name"] for g in rule["spec"]["groups"]]
    assert not [o for o in objects.values() if o["metadata"]["name"] == "llmserve-redis"]
