"""A real OpenTelemetry (OTLP) trace receiver for tests and benchmarks: gRPC (the TraceService of
opentelemetry.proto.collector.trace.v1 on grpcio) and HTTP/protobuf (POST /v1/traces), on 127.0.0.1.

OtlpReceiver() as r: r.grpc_endpoint ('127.0.0.1:P'), r.http_url ('http://127.0.0.1:Q/v1/traces'); r.spans() is every
span received so far, decoded into plain dicts {service, name, trace_id, span_id, parent_id, kind, attributes,
start_ns, end_ns} (ids as hex); r.wait_for(predicate, timeout_s) waits (bounded) until the spans satisfy it.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [_value(v) for v in value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.values}
    return value


def decode(request):
    """The spans of one ExportTraceServiceRequest, as dicts."""
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append({"service": resource.get("service.name"), "resource": resource,
                            "scope": scope_spans.scope.name, "name": span.name,
                            "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(), "kind": span.kind,
                            "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                            "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano})
    return out


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 (the generated servicer's name)
        self.receiver.add(decode(request), "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver(contextlib.AbstractContextManager):
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self._spans, self._lock = [], threading.Condition()
        self.exports = {"grpc": 0, "http": 0}
        self._grpc = self._http = None

    def add(self, spans, protocol):
        with self._lock:
            self._spans.extend(spans)
            self.exports[protocol] += 1
            self._lock.notify_all()

    def __enter__(self):
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("%s:0" % self.host)
        self._grpc.start()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces" or "protobuf" not in (self.headers.get("Content-Type") or ""):
                    self.send_response(404 if self.path != "/v1/traces" else 415)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(decode(request), "http")
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._http = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        return False

    @property
    def grpc_endpoint(self):
        return "%s:%d" % (self.host, self.grpc_port)

    @property
    def http_url(self):
        return "http://%s:%d/v1/traces" % (self.host, self.http_port)

    def spans(self):
        with self._lock:
            return list(self._spans)

    def clear(self):
        with self._lock:
            self._spans = []
            self.exports = {"grpc": 0, "http": 0}

    def wait_for(self, predicate, timeout_s=30):
        """The spans once predicate(spans) is true; AssertionError with what arrived when it is not within timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("spans received within %ss do not match: %s" % (
                        timeout_s, [(s["service"], s["name"], s["trace_id"][:8]) for s in self._spans]))
                self._lock.wait(min(left, 0.5))
            return list(self._spans)
