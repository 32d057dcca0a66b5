"""The real Traefik with only its file provider, in front of a backend that records the raw request line.

For tests of Traefik's own static settings (entry points, timeouts), where the rendered CRs and the API stand-in
add nothing: one router on each entry point (by default `PathPrefix(/v1/)`, the prefix of the API route; websecure
with TLS, as the k3s chart sets it, and Traefik's default certificate) to RecordingBackend.

    with RecordingBackend() as backend, FileTraefik(backend.url, flags, log_dir) as traefik:
        traefik.wait_ready()
        status, body = raw_request(traefik.web_port, "GET /v1/..%2Fx HTTP/1.1")   # a path no client library touches
        backend.lines    # every request line that reached the backend, as received
"""

from __future__ import annotations

import http.server
import json
import pathlib
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request

from processes import LoggedServer, free_port
from traefik import traefik_binary


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # the server's record is `lines`, not stderr
        pass

    def _any(self):
        backend = self.server.backend
        backend.record(self.requestline)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "events" in query:
            self._stream(int(query["events"][0]), float(query.get("interval", ["1"])[0]))
            return
        body = json.dumps({"path": self.path, "client": self.headers.get("X-Real-Ip")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, events, interval):
        """Server-sent events, one every `interval` seconds, chunked, then [DONE]: a slow streamed answer."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        started = time.monotonic()
        try:
            for number in range(events + 1):
                data = b"data: [DONE]\n\n" if number == events else b"data: %d\n\n" % number
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if number < events:
                    time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.server.backend.record_stream("complete", time.monotonic() - started)
        except OSError as exc:
            self.server.backend.record_stream("cut: %s" % type(exc).__name__, time.monotonic() - started)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _any


class RecordingBackend:
    """An HTTP/1.1 server on 127.0.0.1 that records each request line as it arrived; ?events=N&interval=S streams."""

    def __init__(self):
        self.lines, self.streams = [], []
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.backend = self
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, line):
        with self._lock:
            self.lines.append(line)

    def record_stream(self, outcome, seconds):
        with self._lock:
            self.streams.append((outcome, round(seconds, 1)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        return False


class FileTraefik(LoggedServer):
    """Real Traefik on 127.0.0.1 with `flags` (e.g. _traefik.traefik_arguments) and one route to `backend_url`."""

    label = "traefik"

    def __init__(self, backend_url, flags, log_dir, rule="PathPrefix(`/v1/`)"):
        self.flags = list(flags)
        self.web_port, self.websecure_port, self.api_port = (free_port() for dummy in range(3))
        log_dir = pathlib.Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / ("traefik-%d.log" % self.web_port)
        self.dynamic = log_dir / ("dynamic-%d.yaml" % self.web_port)  # JSON is YAML; .json is not a file type Traefik reads
        self.dynamic.write_text(json.dumps({"http": {
            "routers": {"web": {"rule": rule, "entryPoints": ["web"], "service": "backend"},
                        "websecure": {"rule": rule, "entryPoints": ["websecure"], "service": "backend"}},
            "services": {"backend": {"loadBalancer": {"servers": [{"url": backend_url}]}}}}}))

    def command(self):
        # The entry point addresses of the k3s chart, on local ports; then the flags under test, unchanged.
        return [str(traefik_binary()),
                "--entryPoints.web.address=127.0.0.1:%d/tcp" % self.web_port,
                "--entryPoints.websecure.address=127.0.0.1:%d/tcp" % self.websecure_port,
                "--entryPoints.websecure.http.tls=true",
                "--entryPoints.traefik.address=127.0.0.1:%d/tcp" % self.api_port,
                "--api.insecure=true", "--ping=true", "--log.level=DEBUG", "--accesslog=true",
                "--global.checknewversion=false", "--global.sendanonymoususage=false",
                "--providers.file.filename=%s" % self.dynamic, *self.flags]

    def ready(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/api/http/routers" % self.api_port, timeout=2) as answer:
            routers = json.loads(answer.read())
        return {r["name"] for r in routers if r.get("status") == "enabled"} >= {"web@file", "websecure@file"}

    def wait_ready(self, timeout=30):
        """Until both routers are enabled; RuntimeError with the log if Traefik exited (e.g. an unknown flag)."""
        return super().wait_ready(timeout)


def raw_request(port, request_line, tls=False, timeout=10, headers=None, body=None):
    """Send one request line byte for byte (no client library normalises it); (status, head+body bytes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # Traefik's default certificate
        sock = context.wrap_socket(sock, server_hostname="localhost")
    extra = "".join("%s: %s\r\n" % item for item in (headers or {}).items())
    try:
        sock.sendall(("%s\r\nHost: localhost\r\n%sConnection: close\r\n\r\n" % (request_line, extra)).encode("latin-1")
                     + (body or b""))
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break  # the connection broke (a cut TLS record, a reset): what arrived before is the answer
            if not piece:
                break
            data += piece
    finally:
        sock.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    return status, data


def stream(port, path, tls=False, timeout=120, body=None):
    """GET (or POST `body`) a streamed answer over a raw socket: status, seconds, events, [DONE] seen, and whether
    the chunked body ended cleanly (its final 0-chunk arrived: an answer cut mid-way lacks it)."""
    started = time.monotonic()
    method = "GET" if body is None else "POST"
    headers = {} if body is None else {"Content-Type": "application/json", "Content-Length": str(len(body))}
    status, data = raw_request(port, "%s %s HTTP/1.1" % (method, path), tls=tls, timeout=timeout, headers=headers,
                               body=body)
    elapsed = time.monotonic() - started
    return {"status": status, "seconds": round(elapsed, 1), "events": data.count(b"data: "),
            "done": b"data: [DONE]" in data, "complete": data.endswith(b"0\r\n\r\n")}
