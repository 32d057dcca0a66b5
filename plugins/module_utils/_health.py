# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a vLLM OpenAI endpoint really serving? Probes, classification and the wait loop (stdlib only).

One check is: GET /health (no key), GET /v1/models (key), optionally POST /v1/completions with one token,
optionally GET /metrics. Every HTTP exchange goes through a `fetch` callable, so the classification is
tested from recorded real responses and the module passes `http_fetch`.

Through an ingress that routes only /v1 (e.g. https://llm.example/models/x), /health answers the proxy's
404: /v1/models then stands in as the readiness signal (vLLM serves it only once the engine is up).
"""

from __future__ import absolute_import, division, print_function

import ipaddress
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

__metaclass__ = type

STATUSES = ("ready", "loading", "unreachable", "unauthorized", "model_missing", "rate_limited", "unhealthy", "timeout")
# Worth waiting for: a pod that starts, restarts or is throttled can become ready without anyone acting.
TRANSIENT = frozenset(("loading", "unreachable", "rate_limited", "unhealthy"))
METRIC_NAMES = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    # vLLM < 0.10 called it gpu_cache_usage_perc; both are a fraction (1.0 = full).
    "kv_cache_usage_perc": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
PROBE_PROMPT = "ping"
# The front door answers GET /v1/models with the client address Traefik recorded (its X-Real-Ip).
CLIENT_ADDRESS_HEADER = "x-llmserve-client-address"
# k3s' default --cluster-cidr (pods, ServiceLB's svclb pods included) and --service-cidr.
K3S_INTERNAL_NETWORKS = ("10.42.0.0/16", "10.43.0.0/16")
CLIENT_ADDRESS_FIX = ("set ingress_traefik_external_traffic_policy: Local (the default; Traefik's Service then keeps "
                      "the client's address and a Traefik runs on every node, ingress_traefik_kind: DaemonSet) and "
                      "re-run site.yml --tags ingress; see docs/ingress.md, \"Client addresses on k3s\"")


class Response:
    """What one HTTP exchange gave: an HTTP status, or no status and the transport error kind.

    kind: http | refused | dns | connect_timeout | read_timeout | closed | tls | error
    """

    def __init__(self, status=None, body="", headers=None, kind="http", error="", elapsed_ms=0.0):
        self.status = status
        self.body = body if isinstance(body, str) else body.decode("utf-8", "replace")
        self.headers = dict((k.lower(), v) for k, v in (headers or {}).items())
        self.kind = kind
        self.error = error
        self.elapsed_ms = elapsed_ms

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def from_vllm(self):
        """vLLM (FastAPI on uvicorn) answers errors in JSON; proxies answer plain text, the collection's gateway in
        JSON marked X-Llmserve-Refused-By."""
        if self.headers.get("x-llmserve-refused-by"):
            return False
        return self.headers.get("server", "").startswith("uvicorn") or isinstance(self.json(), dict)

    def short_body(self, limit=160):
        text = " ".join(self.body.split())
        return text[:limit] + ("..." if len(text) > limit else "")


def normalize_url(url):
    """Base URL without a trailing '/' or '/v1'; ValueError naming the problem."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url is empty: give the base URL of the endpoint, e.g. http://vllm-x.llm-serving.svc:8000")
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("url %r is not an http(s) URL: give e.g. http://10.43.0.12:8000 or "
                         "https://llm.example/models/<name>" % url)
    if parsed.query or parsed.fragment:
        raise ValueError("url %r has a query or fragment: give the base URL only" % url)
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def ssl_context(validate_certs=True, ca_path=None):
    if not validate_certs:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()


def http_fetch(url, method="GET", headers=None, body=None, timeout=10.0, context=None):
    """One HTTP exchange with urllib; never raises for HTTP or network errors (see Response.kind)."""
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    started = time.monotonic()

    def done(**kwargs):
        return Response(elapsed_ms=round((time.monotonic() - started) * 1000.0, 1), **kwargs)

    # An opener of our own: the TLS context goes into its HTTPS handler (same handlers as the default one).
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return done(status=answer.status, body=answer.read(), headers=dict(answer.headers.items()))
    except urllib.error.HTTPError as err:
        try:
            payload = err.read()
        except (OSError, HTTPException):
            payload = b""
        return done(status=err.code, body=payload, headers=dict(err.headers.items()) if err.headers else {})
    except urllib.error.URLError as err:
        # urllib wraps what happens while connecting and sending.
        reason = err.reason
        if isinstance(reason, ConnectionRefusedError):
            return done(kind="refused", error=str(reason))
        if isinstance(reason, socket.gaierror):
            return done(kind="dns", error=str(reason))
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return done(kind="connect_timeout", error="connect timed out")
        if isinstance(reason, ssl.SSLError):
            return done(kind="tls", error=str(reason))
        return done(kind="error", error=str(reason))
    except (socket.timeout, TimeoutError):
        # Connected and sent, but no answer in time: vLLM binds its port before the engine is up.
        return done(kind="read_timeout", error="no answer within %ss" % timeout)
    except ssl.SSLError as err:
        return done(kind="tls", error=str(err))
    except (ConnectionResetError, HTTPException) as err:
        return done(kind="closed", error="%s: %s" % (type(err).__name__, err))
    except OSError as err:
        return done(kind="error", error=str(err))


def _transport_verdict(url, resp):
    """(status, msg) for an exchange that got no HTTP answer."""
    if resp.kind == "read_timeout":
        return "loading", ("%s accepts connections but does not answer (%s): vLLM is still starting "
                           "(it binds the port before it loads the model)" % (url, resp.error))
    if resp.kind == "dns":
        return "unreachable", ("%s: name does not resolve (%s); Service DNS names (*.svc) resolve only inside "
                               "the cluster: use the ClusterIP or the ingress URL from outside" % (url, resp.error))
    if resp.kind == "tls":
        return "unreachable", ("%s: TLS failed (%s): set ca_path to the CA of the ingress certificate, or "
                               "validate_certs: false for a self-signed test certificate" % (url, resp.error))
    if resp.kind == "refused":
        return "unreachable", ("%s: connection refused: nothing listens (vLLM listens only once the model is "
                               "loaded, so a starting server refuses too: give timeout to wait), or a Service "
                               "without ready pods, or the wrong port" % url)
    return "unreachable", "%s: %s (%s)" % (url, resp.kind.replace("_", " "), resp.error)


def _http_verdict(url, resp, probe):
    """(status, msg) for a non-2xx HTTP answer of a probe; None when the caller decides (404 of /health)."""
    code = resp.status
    origin = "vLLM" if resp.from_vllm() else "the proxy"
    if code in (401, 403):
        return "unauthorized", ("%s answered %s from %s (%s): give the API key (api_key) the endpoint expects"
                                % (url, code, origin, resp.short_body()))
    if code == 429:
        retry = resp.headers.get("retry-after")
        return "rate_limited", ("%s answered 429 from %s (%s)%s: the rate limit applies to health checks too"
                                % (url, origin, resp.short_body(), ", retry after %ss" % retry if retry else ""))
    if code in (502, 503, 504) and not resp.from_vllm():
        return "loading", ("%s answered %s from the proxy (%s): no ready vLLM behind it yet (pods loading the "
                           "model; if it lasts, they are failing: run playbooks/status.yml)"
                           % (url, code, resp.short_body()))
    if code >= 500:
        return "unhealthy", ("%s answered %s from %s (%s): the engine is not healthy (dead engine core, out of "
                             "memory): see the pod's log" % (url, code, origin, resp.short_body()))
    return "unhealthy", "%s answered %s to the %s probe (%s)" % (url, code, probe, resp.short_body())


def served_models(resp):
    """Model ids of a /v1/models answer; None when it is not an OpenAI model list."""
    data = resp.json()
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    return [item.get("id") for item in data["data"] if isinstance(item, dict) and item.get("id")]


def parse_prometheus(text):
    """{metric name: [(labels, value)]} of a Prometheus text exposition (comments and bad lines skipped)."""
    samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            label_text, value_text = rest.rpartition("}")[::2]
            labels = _parse_labels(label_text)
        else:
            name, value_text = line.partition(" ")[::2]
        fields = value_text.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        samples.setdefault(name.strip(), []).append((labels, value))
    return samples


def _parse_labels(text):
    labels, key, value, in_value, escaped, i = {}, "", "", False, False, 0
    while i < len(text):
        char = text[i]
        if in_value:
            if escaped:
                value += {"n": "\n"}.get(char, char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                labels[key.strip().lstrip(",").strip()] = value
                key, value, in_value = "", "", False
            else:
                value += char
        elif char == "=" and i + 1 < len(text) and text[i + 1] == '"':
            in_value = True
            i += 1
        else:
            key += char
        i += 1
    return labels


def vllm_metrics(text, model=None):
    """{running, waiting, kv_cache_usage_perc} of vLLM's /metrics, for `model` when its samples are labelled.

    Several engines (data parallel) add up for the queues; the KV cache use is the fullest engine's.
    """
    samples = parse_prometheus(text)
    result = {}
    for key, names in METRIC_NAMES.items():
        for name in names:
            rows = samples.get(name)
            if not rows:
                continue
            if model and any(row[0].get("model_name") == model for row in rows):
                rows = [row for row in rows if row[0].get("model_name") == model]
            values = [row[1] for row in rows]
            if key == "kv_cache_usage_perc":
                result[key] = round(max(values), 4)
            else:
                result[key] = int(sum(values))
            break
    return result


def kv_cache_config(text):
    """The KV cache vLLM allocated, from vllm:cache_config_info on /metrics; {} when it is not exported.

    {num_gpu_blocks, block_size, kv_cache_tokens (blocks x block size), engines, and kv_cache_memory_bytes,
    gpu_memory_utilization, cache_dtype where vLLM labels them}. Several engines (data parallel): the smallest.
    """
    found = []
    for labels, dummy in parse_prometheus(text if isinstance(text, str) else "").get("vllm:cache_config_info", []):
        try:
            blocks, block_size = int(labels["num_gpu_blocks"]), int(labels["block_size"])
        except (KeyError, ValueError):
            continue
        info = {"num_gpu_blocks": blocks, "block_size": block_size, "kv_cache_tokens": blocks * block_size}
        for key, cast in (("kv_cache_memory_bytes", int), ("gpu_memory_utilization", float), ("cache_dtype", str)):
            try:
                info[key] = cast(labels[key])
            except (KeyError, ValueError):
                pass
        found.append(info)
    if not found:
        return {}
    smallest = dict(min(found, key=lambda info: info["kv_cache_tokens"]))
    smallest["engines"] = len(found)
    return smallest


def _headers(base_headers, api_key):
    headers = {"Accept": "application/json", "User-Agent": "llmserve.k3s-vllm_health"}
    headers.update(base_headers or {})
    if api_key:
        headers["Authorization"] = "Bearer %s" % api_key
    return headers


def check_once(fetch, url, model=None, api_key=None, headers=None, completion_probe=True, check_metrics=True,
               request_timeout=10.0):
    """One full check; dict with status, msg, models, latency_ms, metrics, kv_cache, notes, client_address."""
    result = {"status": None, "msg": "", "models": [], "latency_ms": {}, "metrics": {}, "kv_cache": {}, "notes": [],
              "client_address": None}
    plain = _headers(headers, None)
    keyed = _headers(headers, api_key)

    def finish(status, msg):
        result["status"], result["msg"] = status, msg
        return result

    # 1. /health: 200 once the engine is up; vLLM asks no key for it.
    health_url = url + "/health"
    resp = fetch(health_url, "GET", plain, None, request_timeout)
    health_routed = True
    if resp.status is None:
        return finish(*_transport_verdict(health_url, resp))
    result["latency_ms"]["health"] = resp.elapsed_ms
    if resp.status == 404 and not resp.from_vllm():
        # An ingress that routes only /v1 of this model: /v1/models is the readiness signal instead.
        health_routed = False
        result["notes"].append("%s is not routed (404 from the proxy): /v1/models used as the readiness signal"
                               % health_url)
    elif resp.status in (401, 403):
        # An auth middleware in front of everything: try again with the key.
        resp = fetch(health_url, "GET", keyed, None, request_timeout)
        if resp.status is None:
            return finish(*_transport_verdict(health_url, resp))
        if not 200 <= resp.status < 300:
            return finish(*_http_verdict(health_url, resp, "health"))
    elif not 200 <= resp.status < 300:
        return finish(*_http_verdict(health_url, resp, "health"))

    # 2. /v1/models: the key is checked here; lists the served names.
    models_url = url + "/v1/models"
    resp = fetch(models_url, "GET", keyed, None, request_timeout)
    if resp.status is None:
        return finish(*_transport_verdict(models_url, resp))
    result["latency_ms"]["models"] = resp.elapsed_ms
    result["client_address"] = resp.headers.get(CLIENT_ADDRESS_HEADER) or None
    if resp.status in (401, 403):
        status, msg = _http_verdict(models_url, resp, "models")
        return finish(status, msg + (" (none was given)" if not api_key else " (the one given was refused)"))
    if resp.status == 404 and not resp.from_vllm():
        return finish("unreachable", ("%s answered 404 from the proxy (%s): no route to a vLLM server at this "
                                      "URL (model not deployed, or the ingress path is wrong)"
                                      % (models_url, resp.short_body())))
    if not 200 <= resp.status < 300:
        return finish(*_http_verdict(models_url, resp, "models"))
    names = served_models(resp)
    if names is None:
        return finish("unhealthy", "%s did not answer a model list (%s)" % (models_url, resp.short_body()))
    result["models"] = names
    if model and model not in names:
        return finish("model_missing", "%s serves %s, not %r: check the served model name (--served-model-name) "
                                       "or the URL" % (url, ", ".join(names) or "no model", model))
    if not names:
        return finish("model_missing", "%s serves no model" % url)
    target = model or names[0]

    # 3. A one-token completion: the engine really generates.
    if completion_probe:
        completion_url = url + "/v1/completions"
        payload = {"model": target, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0}
        resp = fetch(completion_url, "POST", keyed, payload, request_timeout)
        if resp.status is None:
            if resp.kind == "read_timeout":
                return finish("unhealthy", "%s: a one-token completion got no answer within %ss"
                                           % (completion_url, request_timeout))
            return finish(*_transport_verdict(completion_url, resp))
        result["latency_ms"]["completion"] = resp.elapsed_ms
        if resp.status == 404 and resp.from_vllm():
            return finish("model_missing", "%s: %s (served: %s)"
                          % (completion_url, resp.short_body(), ", ".join(names)))
        if not 200 <= resp.status < 300:
            return finish(*_http_verdict(completion_url, resp, "completion"))
        data = resp.json()
        if not isinstance(data, dict) or not data.get("choices"):
            return finish("unhealthy", "%s answered 200 without choices (%s)" % (completion_url, resp.short_body()))

    # 4. /metrics: queue and KV cache use; informative, never a reason for not ready.
    if check_metrics:
        metrics_url = url + "/metrics"
        resp = fetch(metrics_url, "GET", keyed, None, request_timeout)
        if resp.status is not None and 200 <= resp.status < 300:
            result["latency_ms"]["metrics"] = resp.elapsed_ms
            result["metrics"] = vllm_metrics(resp.body, target)
            result["kv_cache"] = kv_cache_config(resp.body)
            if not result["metrics"]:
                result["notes"].append("%s has no vLLM metrics" % metrics_url)
        else:
            result["notes"].append("%s not readable (%s): no queue figures" % (
                metrics_url, resp.status if resp.status is not None else resp.kind))

    how = "" if health_routed else " (readiness from /v1/models: /health is not routed)"
    probe = (", completion %.0f ms" % result["latency_ms"]["completion"]) if completion_probe else ""
    return finish("ready", "%s ready at %s%s%s" % (target, url, probe, how))


def wait_ready(fetch, url, model=None, api_key=None, headers=None, completion_probe=True, check_metrics=True,
               timeout=0, interval=5, request_timeout=10.0, clock=time.monotonic, sleep=time.sleep):
    """Check until ready, a status waiting cannot fix, or `timeout` seconds (0 = one check).

    Returns the last check plus ready, waited_s, checks and last_status; status is 'timeout' when the
    deadline passed on a transient status (last_status says which).
    """
    started = clock()
    deadline = started + max(0, timeout)
    checks = 0
    while True:
        remaining = deadline - clock()
        per_request = request_timeout if timeout <= 0 else max(1.0, min(request_timeout, remaining))
        result = check_once(fetch, url, model, api_key, headers, completion_probe, check_metrics, per_request)
        checks += 1
        status = result["status"]
        if status == "ready" or status not in TRANSIENT or timeout <= 0:
            break
        if clock() + interval > deadline:
            result["msg"] = "not ready after %ss (%d checks); last check: %s: %s" % (
                timeout, checks, status, result["msg"])
            result["last_status"] = status
            result["status"] = "timeout"
            break
        sleep(interval)
    result.setdefault("last_status", result["status"])
    result["ready"] = result["status"] == "ready"
    result["waited_s"] = round(clock() - started, 1)
    result["checks"] = checks
    return result


def _address(text):
    try:
        return ipaddress.ip_address(str(text).strip().strip("[]"))
    except ValueError:
        return None


def client_address_finding(recorded, node_addresses=(), internal_networks=K3S_INTERNAL_NETWORKS, own_addresses=()):
    """What the client address Traefik recorded says about the ingress: None when it is not cluster-internal.

    recorded: the front door's X-Llmserve-Client-Address (Traefik's X-Real-Ip) in the answer to this check.
    node_addresses: the cluster nodes' addresses (ServiceLB's svclb pods and kube-proxy rewrite a client to the
    node's or a pod's address); internal_networks: the pod and service CIDRs; own_addresses: this machine's.
    Returns {level: warning | note, address, msg}. A check run on a cluster node is inconclusive (note): kube-proxy
    masquerades a node's traffic to its own LoadBalancer address whatever the Service's traffic policy.
    """
    address = _address(recorded) if recorded else None
    if address is None:
        return None
    own = set(a for a in (_address(x) for x in own_addresses or ()) if a is not None)
    if address in own:
        return None  # Traefik saw this very machine: the address reached it unchanged
    nodes = set(a for a in (_address(x) for x in node_addresses or ()) if a is not None)
    networks = [ipaddress.ip_network(n, strict=False) for n in internal_networks or ()]
    inside = [str(n) for n in networks if address.version == n.version and address in n]
    if not inside and address not in nodes:
        return None
    where = ("a cluster node's address" if address in nodes else "in the cluster's network %s" % inside[0])
    if own & nodes:
        return {"level": "note", "address": str(address),
                "msg": "Traefik recorded the client address %s (%s), but this check ran on a cluster node, whose "
                       "requests to its own ingress address kube-proxy always rewrites: run the health check from a "
                       "machine outside the cluster to see what clients get" % (address, where)}
    return {"level": "warning", "address": str(address),
            "msg": "Traefik recorded the client address %s (%s), not this machine's: ServiceLB and kube-proxy rewrite "
                   "the source of every request, so every client shares one address (one rate-limit budget, IP allow "
                   "lists cannot work, client affinity sends everyone to one replica). Fix: %s"
                   % (address, where, CLIENT_ADDRESS_FIX)}


def validate_args(timeout, interval, headers):
    """Errors (list of strings) naming the argument and the fix."""
    errors = []
    if timeout < 0:
        errors.append("timeout is %s: give 0 (one check) or the seconds to wait for ready" % timeout)
    if interval <= 0:
        errors.append("interval is %s: give the seconds between checks, e.g. 5" % interval)
    for key, value in (headers or {}).items():
        if not isinstance(value, str):
            errors.append("headers[%r] is %r: header values are strings" % (key, value))
    return errors
