# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/health.yml and playbooks/status.yml; thin wrappers over module_utils."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog, _diagnose, _health, _shared

ENDPOINTS = ("service", "ingress", "shared")
DEFAULT_ENDPOINTS = ("service", "ingress")


def health_targets(models, endpoints=DEFAULT_ENDPOINTS, urls=None, namespace="llm-serving", ingress_host=None,
                   ingress_scheme="https", cluster_ips=None, port=_shared.PORTS["vllm"]):
    """[{model, endpoint, url}] to check: per enabled model, its Service, its ingress path and the shared endpoint.

    urls: {model: {service: URL, ingress: URL, shared: URL}} overrides. Without one, the Service is reached at its
    ClusterIP when cluster_ips knows it (from a node), else at its cluster DNS name (inside the cluster); the ingress
    at <scheme>://<ingress_host>/models/<name>; shared is the one /v1 of every model, <scheme>://<ingress_host>, where
    the model must be listed by /v1/models and answer a completion that names it (the front door routes by name).
    Both ingress endpoints are skipped when no ingress host is set. A model's LoRA adapters are checked at each of its
    endpoints too (adapter_of names the base model).
    """
    unknown = sorted(set(endpoints or []) - set(ENDPOINTS))
    if unknown:
        raise AnsibleFilterError("llmserve_health_endpoints has %s: use service, ingress and/or shared" % ", ".join(unknown))
    urls = urls or {}
    cluster_ips = cluster_ips or {}
    targets = []
    for model in models or []:
        if not isinstance(model, dict) or "name" not in model:
            raise AnsibleFilterError("llmserve_models has an entry without a name: %r" % (model,))
        name = model["name"]
        override = urls.get(name) or {}
        if not isinstance(override, dict):
            raise AnsibleFilterError("llmserve_health_urls[%r] is %r: give {service: URL, ingress: URL, shared: URL}"
                                     % (name, override))
        k8s = _catalog.k8s_name(name)
        for endpoint in endpoints:
            url = override.get(endpoint)
            if not url and endpoint == "service":
                host = cluster_ips.get(name) or "%s.%s.svc" % (k8s, namespace)
                url = "http://%s:%s" % (host, port)
            if not url and endpoint == "ingress" and ingress_host:
                # The plan's path of the model, less its API root: vllm_health adds /v1/... itself.
                path = model.get("path") or _shared.model_path(name)
                url = "%s://%s%s" % (ingress_scheme, ingress_host, path[:-len(_shared.API_ROOT)] if path.endswith(_shared.API_ROOT) else path)
            if not url and endpoint == "shared" and ingress_host:
                url = "%s://%s" % (ingress_scheme, ingress_host)
            if url:
                targets.append({"model": name, "endpoint": endpoint, "url": url})
                # Each LoRA adapter at the same endpoint: listed and answering a one-token completion under its name.
                for adapter in (model.get("lora") or {}).get("adapters", []):
                    targets.append({"model": adapter["name"], "endpoint": endpoint, "url": url, "adapter_of": name})
    return targets


def _cell(value, fmt="%s"):
    return "-" if value in (None, "") else fmt % value


def _auto(value):
    """vLLM's own default where the plan leaves a setting unset."""
    return "auto" if value is None else value


def health_table(results):
    """Lines of a table: one row per checked endpoint (status, completion latency, queue, KV cache use)."""
    header = ("MODEL", "ENDPOINT", "STATUS", "LATENCY", "RUNNING", "WAITING", "KV CACHE", "URL")
    rows = [header]
    for result in results or []:
        item = result.get("item") or {}
        metrics = result.get("metrics") or {}
        latency = (result.get("latency_ms") or {}).get("completion")
        kv = metrics.get("kv_cache_usage_perc")
        rows.append((item.get("model", "?"), item.get("endpoint", "?"), result.get("status", "error"),
                     _cell(latency, "%.0f ms"), _cell(metrics.get("running")), _cell(metrics.get("waiting")),
                     _cell(None if kv is None else kv * 100.0, "%.1f%%"), result.get("url") or item.get("url", "")))
    return _shared.table(rows)


def health_failures(results):
    """'model (endpoint): status: msg' of every endpoint that is not ready."""
    return ["%s (%s): %s: %s" % ((r.get("item") or {}).get("model"), (r.get("item") or {}).get("endpoint"),
                                 r.get("status", "error"), r.get("msg", ""))
            for r in results or [] if not r.get("ready")]


def client_address_findings(results, nodes=None, internal_networks=None, own_addresses=None):
    """One finding per cluster-internal client address Traefik recorded in the checks (vllm_health results):
    [{level: warning | note, address, msg, endpoints: ['model (endpoint)', ...]}]; see _health.client_address_finding.

    nodes: Node objects (k8s_info resources), whose status.addresses are the nodes' own; internal_networks: the pod
    and service CIDRs (k3s' defaults when not given); own_addresses: this machine's (ansible_all_ipv4_addresses ...).
    """
    node_addresses = [a.get("address") for node in nodes or [] for a in (node.get("status") or {}).get("addresses") or []
                      if a.get("type") in ("InternalIP", "ExternalIP")]
    networks = _health.K3S_INTERNAL_NETWORKS if internal_networks is None else internal_networks
    findings = {}
    for result in results or []:
        try:
            finding = _health.client_address_finding(result.get("client_address"), node_addresses, networks, own_addresses)
        except ValueError as exc:
            raise AnsibleFilterError("llmserve_health_internal_networks: %s" % exc)
        if finding:
            item = result.get("item") or {}
            entry = findings.setdefault(finding["address"], dict(finding, endpoints=[]))
            entry["endpoints"].append("%s (%s)" % (item.get("model", "?"), item.get("endpoint", "?")))
    return list(findings.values())


def llmserve_diagnose(gathered, plan_models, hf_token_secret="hf-token", predownload=False):
    """_diagnose.diagnose over what status.yml gathered: {nodes, pods, pvcs, events, secrets, logs}."""
    gathered = gathered or {}
    return _diagnose.diagnose(plan_models, gathered.get("nodes"), gathered.get("pods"), gathered.get("pvcs"),
                              gathered.get("events"), gathered.get("secrets"), gathered.get("logs"),
                              hf_token_secret, predownload)


def status_report(diagnosis):
    """Readable lines: GPUs per node, pods per model, claims, then each finding with what to do."""
    lines = ["GPUs (allocatable / used):"]
    for row in diagnosis.get("gpus") or []:
        lines.append("  %s: %s / %s %s%s" % (row["node"], row["allocatable"], row["used"], row["product"] or "",
                                             "" if row["ready"] else " (node NOT Ready)"))
    lines.append("Models (ready / replicas; plan max_model_len, max_num_seqs, TP, placement):")
    for model in diagnosis.get("models") or []:
        lines.append("  %s: %s / %s; %s, %s, TP %s, on %s" % (
            model["name"], model["ready"], model["replicas"], _auto(model["max_model_len"]),
            _auto(model["max_num_seqs"]),
            model["tensor_parallel_size"], ",".join(model["placement"] or []) or "-"))
        for pod in model["pods"]:
            ready = " ready" if pod["ready"] else ""
            reason = " (%s)" % pod["reason"] if pod["reason"] else ""
            lines.append("    %s %s%s restarts=%s%s" % (pod["name"], pod["phase"], ready, pod["restarts"], reason))
    lines.append("Volume claims:")
    for claim in diagnosis.get("pvcs") or []:
        lines.append("  %s: %s %s" % (claim["name"], claim["phase"], claim["volume"]))
    if not diagnosis.get("findings"):
        lines.append("No problem found.")
    for finding in diagnosis.get("findings") or []:
        lines.append("%s %s: %s" % (finding["severity"].upper(), finding["subject"], finding["problem"]))
        lines.append("  fix: %s" % finding["fix"])
        lines.extend("  | %s" % line for line in finding["evidence"])
    return lines


class FilterModule:
    def filters(self):
        return {"health_targets": health_targets, "health_table": health_table, "health_failures": health_failures,
                "diagnose": llmserve_diagnose, "status_report": status_report,
                "client_address_findings": client_address_findings}
