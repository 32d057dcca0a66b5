"""A small writable Kubernetes API stand-in for the kubernetes.core modules (k8s, k8s_info) of the apply tasks.

No Kubernetes API server runs here. The kubernetes Python client behind kubernetes.core asks for discovery first
(/version, /api, /api/v1, /apis, /apis/<group>/<version>), then reads and writes objects: GET one or a list (with
labelSelector, equality- and set-based), POST to create, PUT to replace, PATCH (strategic merge or JSON merge patch,
both applied as a JSON merge patch, which is what they do to the maps these tests touch) and DELETE; a write with
dryRun=All (check mode) answers as if done and stores nothing. Secrets are stored as the API server stores them:
stringData becomes base64 data. Only the kinds in RESOURCES are served.

    with KubeApi([namespace, deployment]) as api:
        api.kubeconfig(tmp_path)     -> path of a kubeconfig for it
        api.get("Secret", "llm-serving", "llmserve-internal")
        api.requests                 -> [(method, path, query)], to see what a client did
"""

from __future__ import annotations

import base64
import copy
import http.server
import itertools
import json
import threading
import urllib.parse
import uuid

from kube_standin import send_json, send_status

# (group/version path prefix, plural) -> (kind, namespaced)
RESOURCES = {
    ("api/v1", "namespaces"): ("Namespace", False),
    ("api/v1", "secrets"): ("Secret", True),
    ("apis/apps/v1", "deployments"): ("Deployment", True),
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def selector_matches(selector, labels):
    """labelSelector terms, comma-joined, all must hold: a=b, a==b, a!=b, a, !a, a in (x, y), a notin (x, y)."""
    terms, depth, current = [], 0, ""
    for char in selector or "":
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    for term in (t.strip() for t in terms if t.strip()):
        if " notin " in term or " in " in term:
            key, op, values = term.partition(" notin " if " notin " in term else " in ")
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            if (labels.get(key.strip()) in allowed) != (op.strip() == "in"):
                return False
        elif "!=" in term:
            key, dummy, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, dummy, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target, patch):
    """RFC 7386: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KubeApi:
    def __init__(self, objects=()):
        self._objects = {}
        self._lock = threading.Lock()
        self._rv = itertools.count(1)
        self.requests = []
        for obj in objects:
            self._store(copy.deepcopy(obj))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def kubeconfig(self, folder):
        path = folder / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "users": [{"name": "standin", "user": {"token": "standin"}}]}))
        return str(path)

    def get(self, kind, namespace, name):
        with self._lock:
            obj = self._objects.get((kind, namespace or "", name))
            return copy.deepcopy(obj)

    def _store(self, obj, dry_run=False):
        obj = copy.deepcopy(obj) if dry_run else obj
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        if obj.get("kind") == "Secret":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if not dry_run:
            self._objects[(obj["kind"], meta.get("namespace") or "", meta["name"])] = obj
        return obj

    def _handler(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the tests read .requests instead
                pass

            def _send(self, status, body):
                send_json(self, status, body)

            def _status(self, code, reason, message):
                send_status(self, code, reason, message)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _discovery(self, path):
                if path == "/version":
                    return {"major": "1", "minor": "35", "gitVersion": "v1.35.8+k3s1"}
                if path == "/api":
                    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
                if path == "/apis":
                    groups = sorted({p.split("/")[1] for p, dummy in RESOURCES if p.startswith("apis/")})
                    versions = {g: sorted({p.split("/")[2] for p, dummy in RESOURCES if p.startswith("apis/%s/" % g)}) for g in groups}
                    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                        {"name": g, "versions": [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in versions[g]],
                         "preferredVersion": {"groupVersion": "%s/%s" % (g, versions[g][0]), "version": versions[g][0]}}
                        for g in groups]}
                prefix = path.strip("/")
                if any(p == prefix for p, dummy in RESOURCES):
                    return {"kind": "APIResourceList", "apiVersion": "v1",
                            "groupVersion": "v1" if prefix == "api/v1" else prefix.split("/", 1)[1],
                            "resources": [{"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                                           "kind": kind, "verbs": VERBS}
                                          for (p, plural), (kind, namespaced) in sorted(RESOURCES.items()) if p == prefix]}
                return None

            def _route(self, path):
                """(kind, namespace, name) of an object path, or None."""
                parts = path.strip("/").split("/")
                prefix_len = 2 if parts[0] == "api" else 3
                prefix, rest = "/".join(parts[:prefix_len]), parts[prefix_len:]
                namespace = None
                if len(rest) >= 2 and rest[0] == "namespaces" and (len(rest) > 2 or (prefix, "namespaces") not in RESOURCES):
                    namespace, rest = rest[1], rest[2:]
                if not rest or (prefix, rest[0]) not in RESOURCES or len(rest) > 2:
                    return None
                kind = RESOURCES[(prefix, rest[0])][0]
                return kind, namespace or "", rest[1] if len(rest) == 2 else None

            def _handle(self):
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                api.requests.append((self.command, parsed.path, query))
                dry = query.get("dryRun") == "All"
                if self.command == "GET":
                    found = self._discovery(parsed.path)
                    if found is not None:
                        return self._send(200, found)
                route = self._route(parsed.path)
                if route is None:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                kind, namespace, name = route
                with api._lock:
                    current = api._objects.get((kind, namespace, name)) if name else None
                    if self.command == "GET" and not name:
                        items = [copy.deepcopy(o) for (k, ns, dummy), o in sorted(api._objects.items())
                                 if k == kind and namespace in ("", ns)
                                 and selector_matches(query.get("labelSelector"), o["metadata"].get("labels") or {})]
                        return self._send(200, {"kind": kind + "List", "apiVersion": "v1",
                                                "metadata": {"resourceVersion": str(next(api._rv))}, "items": items})
                    if self.command == "POST":
                        body = self._body()
                        body["metadata"]["namespace"] = namespace or None
                        if (kind, namespace, body["metadata"]["name"]) in api._objects:
                            return self._status(409, "AlreadyExists", '%s "%s" already exists' % (kind, body["metadata"]["name"]))
                        return self._send(201, api._store(body, dry))
                    if current is None:
                        return self._status(404, "NotFound", '%s "%s" not found' % (kind.lower() + "s", name))
                    if self.command == "GET":
                        return self._send(200, copy.deepcopy(current))
                    if self.command == "PUT":
                        body = self._body()
                        body["metadata"]["uid"] = current["metadata"]["uid"]
                        return self._send(200, api._store(body, dry))
                    if self.command == "PATCH":
                        return self._send(200, api._store(merge_patch(current, self._body()), dry))
                    if self.command == "DELETE":
                        if not dry:
                            del api._objects[(kind, namespace, name)]
                        return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return self._status(405, "MethodNotAllowed", self.command)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        return Handler

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
