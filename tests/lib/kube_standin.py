"""A small read-only Kubernetes API stand-in, enough for Traefik's kubernetescrd provider.

No Kubernetes API server runs here, so the tests serve the rendered objects from this one. What Traefik 3.7's
client-go asks for (measured): 15 informers across all namespaces (the 10 traefik.io kinds, services, configmaps,
secrets with `labelSelector=owner!=helm`, endpointslices, nodes), each one request in the watch-list protocol:

    GET /apis/traefik.io/v1alpha1/ingressroutes?watch=true&sendInitialEvents=true
        &resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true

answered with a chunked stream of ADDED events, then a BOOKMARK whose metadata carries the annotation
`k8s.io/initial-events-end: "true"`, then held open (later changes go out as MODIFIED/ADDED/DELETED events).
Plain list requests (the fallback of older clients) get a List. Nothing can be written: every other method is 405.

    with KubeStandin(objects) as api:      # objects: iterable of dicts (apiVersion, kind, metadata, ...)
        api.url  -> "http://127.0.0.1:PORT"
        api.upsert(obj)                      # pushes MODIFIED (or ADDED) to the open watches
        api.requests                         # every (method, path, query) served, to see what a client asked
"""

from __future__ import annotations

import copy
import http.server
import itertools
import json
import queue
import re
import threading
import time
import urllib.parse

# (group/version path prefix, plural) -> kind, for every kind the stand-in serves.
KINDS = {
    ("api/v1", "services"): "Service",
    ("api/v1", "configmaps"): "ConfigMap",
    ("api/v1", "secrets"): "Secret",
    ("api/v1", "nodes"): "Node",
    ("api/v1", "endpoints"): "Endpoints",
    ("api/v1", "namespaces"): "Namespace",
    ("apis/discovery.k8s.io/v1", "endpointslices"): "EndpointSlice",
}
TRAEFIK_KINDS = ("IngressRoute", "IngressRouteTCP", "IngressRouteUDP", "Middleware", "MiddlewareTCP", "TLSOption",
                 "TLSStore", "TraefikService", "ServersTransport", "ServersTransportTCP")
for _kind in TRAEFIK_KINDS:
    KINDS[("apis/traefik.io/v1alpha1", _kind.lower() + "s")] = _kind
_PLURAL = {kind: key for key, kind in KINDS.items()}
_PATH = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([a-z]+)(?:/([^/]+))?$")


def _api_version(prefix):
    return "v1" if prefix == "api/v1" else prefix.split("/", 1)[1]


def label_selector_matches(selector, labels):
    """Equality-based selectors as the API server reads them: a=b, a==b, a!=b, a, !a, comma-joined (all must hold)."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def send_json(handler, status, body):
    """Answer a BaseHTTPRequestHandler request with a JSON body of known length."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def send_status(handler, code, reason, message):
    """Answer with a Kubernetes API Status object (an error, as the API server words it)."""
    send_json(handler, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code})


class KubeStandin:
    """Serves objects read-only in the Kubernetes API shape on 127.0.0.1 (or another loopback address)."""

    def __init__(self, objects=(), host="127.0.0.1", port=0):
        self._lock = threading.Lock()
        self._rv = itertools.count(100)
        self._objects = {}  # (kind, namespace, name) -> object
        self._watchers = []  # (kind, namespace or None, selector, queue)
        self.requests = []
        self._stopping = threading.Event()
        for obj in objects:
            self._store(obj)
        self._server = http.server.ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- objects -----------------------------------------------------------------------------------------------
    def _store(self, obj):
        kind = obj.get("kind")
        if kind not in _PLURAL:
            return None
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "" if kind in ("Node", "Namespace") else "default")
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("uid", f"standin-{kind.lower()}-{meta['namespace']}-{meta['name']}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        key = (kind, meta["namespace"], meta["name"])
        event = "MODIFIED" if key in self._objects else "ADDED"
        self._objects[key] = obj
        return event, obj

    def upsert(self, obj):
        """Add or replace one object; open watches of its kind get the event."""
        with self._lock:
            stored = self._store(obj)
            if stored is None:
                raise ValueError(f"kind {obj.get('kind')} is not served by the stand-in")
            self._notify(*stored)

    def delete(self, kind, namespace, name):
        with self._lock:
            obj = self._objects.pop((kind, namespace, name))
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            self._notify("DELETED", obj)

    def _notify(self, event, obj):
        meta = obj["metadata"]
        for kind, namespace, selector, events in self._watchers:
            if kind == obj["kind"] and namespace in (None, meta["namespace"]) and \
                    label_selector_matches(selector, meta.get("labels") or {}):
                events.put({"type": event, "object": obj})

    def _select(self, kind, namespace, selector):
        return [copy.deepcopy(o) for (k, ns, dummy), o in sorted(self._objects.items())
                if k == kind and namespace in (None, ns)
                and label_selector_matches(selector, o["metadata"].get("labels") or {})]

    def objects(self, kind):
        with self._lock:
            return self._select(kind, None, "")

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _handler(self):
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the tests read .requests instead
                pass

            def _send_json(self, status, body):
                send_json(self, status, body)

            def _status(self, code, reason, message):
                send_status(self, code, reason, message)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                standin.requests.append(("GET", parsed.path, query))
                if parsed.path == "/version":
                    return self._send_json(200, {"major": "1", "minor": "35", "gitVersion": "v1.35.8+k3s1"})
                match = _PATH.match(parsed.path)
                kind = match and KINDS.get((match.group(1), match.group(3)))
                if not kind:
                    return self._status(404, "NotFound", f"the server could not find the requested resource {parsed.path}")
                namespace, name = match.group(2), match.group(4)
                selector = query.get("labelSelector", "")
                if name:
                    with standin._lock:
                        obj = standin._objects.get((kind, namespace or "", name))
                    if obj is None:
                        return self._status(404, "NotFound", f'{match.group(3)} "{name}" not found')
                    return self._send_json(200, obj)
                if query.get("watch") in ("true", "1"):
                    return self._watch(match.group(1), kind, namespace, selector, query)
                with standin._lock:
                    items = standin._select(kind, namespace, selector)
                    version = str(next(standin._rv))
                return self._send_json(200, {"kind": kind + "List", "apiVersion": _api_version(match.group(1)),
                                             "metadata": {"resourceVersion": version}, "items": items})

            def _chunk(self, event):
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _watch(self, prefix, kind, namespace, selector, query):
                events = queue.Queue()
                with standin._lock:
                    initial = standin._select(kind, namespace, selector) if query.get("sendInitialEvents") == "true" else []
                    version = str(next(standin._rv))
                    watcher = (kind, namespace, selector, events)
                    standin._watchers.append(watcher)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 3600)
                try:
                    for obj in initial:
                        self._chunk({"type": "ADDED", "object": obj})
                    if query.get("sendInitialEvents") == "true" or query.get("allowWatchBookmarks") == "true":
                        bookmark = {"kind": kind, "apiVersion": _api_version(prefix),
                                    "metadata": {"resourceVersion": version}}
                        if query.get("sendInitialEvents") == "true":
                            bookmark["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                        self._chunk({"type": "BOOKMARK", "object": bookmark})
                    while not standin._stopping.is_set() and time.monotonic() < deadline:
                        try:
                            self._chunk(events.get(timeout=0.5))
                        except queue.Empty:
                            continue
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with standin._lock:
                        standin._watchers.remove(watcher)
                self.close_connection = True
                return None

            def _read_only(self):
                standin.requests.append((self.command, self.path, {}))
                self._status(405, "MethodNotAllowed", "the stand-in is read-only")

            do_POST = do_PUT = do_PATCH = do_DELETE = _read_only  # noqa: N815

        return Handler

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
