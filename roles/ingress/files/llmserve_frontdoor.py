# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""llmserve gateway (the front door): one OpenAI endpoint for every model, and the one place that says who calls.

Three ports, none of them published except through Traefik:
- auth  (8081)  GET /auth: Traefik's forwardAuth. Resolves the caller's identity (API key -> named identity and groups;
                or the user Traefik's BasicAuth / the SSO proxy established) and answers 200 with X-Llmserve-User,
                X-Llmserve-Groups and X-Llmserve-Signature (HMAC of both with the signing key), which Traefik copies
                onto the request; its limiters count per X-Llmserve-User. Anything else: 401 in OpenAI's format.
                GET /error/<status>: the OpenAI-format page of Traefik's errors middleware (its 429s, 502-504).
- api   (8080)  the OpenAI API. Only an allow list of method + path passes, checked on the raw request target
                (no percent escapes, backslashes, dot or empty segments, query strings), and the path sent on is the
                one checked. A request must carry a valid signed identity (or, standalone, a valid API key). Routes
                by the JSON body's "model" (POST /v1/...), by /models/<name>/v1/..., or by an A/B path's weights;
                GET /v1/models is the union of every model's list. Bodies pass through unchanged, answers stream
                chunk by chunk. The backends get the cluster's internal key, never the caller's.
- admin (9090)  /healthz (liveness), /readyz (readiness: 503 while draining), /metrics.

`workers` > 1: that many worker processes serve the API and auth ports (each binds them with SO_REUSEPORT; the kernel
spreads new connections over them) and share `max_in_flight` and `large_body_slots` out (each gets its part, rounded
up), so the pod's bounds stay what the config says. The first process supervises them: it holds the admin port, asks
each worker for its counters at every scrape and serves their sum (with the counters of workers that ended, so none
goes back), checks the backends' health once for all, starts a worker again when one ends, and on SIGTERM passes the
signal on and exits when every worker has drained. /healthz fails when a worker does not answer within 2 s (its event
loop is stuck, as a single process's /healthz would then not answer).

Memory is bounded by design: bodies above `small_body_bytes` are read only in one of `large_body_slots` (a wait, then
503), the body's "model" is found without building the document (a scanner for large bodies, with pauses for the
event loop), and at most `max_in_flight` requests are proxied at once (503 beyond).
SIGTERM: the API and auth ports stop accepting, answers in progress finish within `drain_s`, then the process exits.
An event loop of uvloop when it is importable (the image has it).

Runs from the pinned vLLM image (aiohttp and uvloop come with vLLM): python3 llmserve_frontdoor.py CONFIG.json
Secrets come from the environment (LLMSERVE_INTERNAL_KEY, LLMSERVE_SIGNING_KEY) and the identities file (key hashes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

from aiohttp import web
from multidict import CIMultiDict

LOG = logging.getLogger("llmserve-frontdoor")
# Headers of one hop (RFC 9110 7.6.1) and the ones aiohttp writes itself.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
       "transfer-encoding", "upgrade", "host", "content-length"}
# Identity headers: set by the gateway's own /auth (through Traefik's forwardAuth) or Traefik's BasicAuth / the SSO
# proxy. A client's own, or one whose name aliases them (X_Forwarded_User), is never forwarded.
IDENTITY = ("x-llmserve-", "x-forwarded-", "x-real-ip", "x-auth-request-")
USER, GROUPS, SIGNATURE = "X-Llmserve-User", "X-Llmserve-Groups", "X-Llmserve-Signature"
REFUSED_BY = "X-Llmserve-Refused-By"

# The OpenAI API the gateway forwards: endpoint -> method. Everything else vLLM or a router serves (/invocations,
# /tokenize, /pooling, /metrics, /health, /v1/load_lora_adapter, /add_worker, ...) is not reachable from outside.
ENDPOINTS = {"chat/completions": "POST", "completions": "POST", "embeddings": "POST", "responses": "POST",
             "rerank": "POST", "score": "POST", "models": "GET"}
SAFE_TARGET = re.compile(r"^/[A-Za-z0-9._~/-]*$")
API_PATH = re.compile(r"^(?:/models/(?P<model>[a-z0-9][-a-z0-9.]*)|(?P<prefix>/[a-z0-9][-a-z0-9]*))?"
                      r"/v1/(?P<endpoint>[a-z]+(?:/[a-z]+)?)$")
# Large bodies are scanned, not parsed: a quote or a bracket outside strings; inside a string, a run of plain bytes and
# at most 64 escapes per step (each step is short, whatever the body holds).
OUTSIDE = re.compile(rb'["\[\]{}]')
STRING_RUN = re.compile(rb'[^"\\]*(?:\\.[^"\\]*){0,64}', re.DOTALL)
KEY_COLON = re.compile(rb'\s*:')
VALUE_QUOTE = re.compile(rb'\s*"')
VALUE_NULL = re.compile(rb'\s*null\b')
TRUE_VALUE = re.compile(rb'\s*true\b')
SCAN_STEPS = 1024

DEFAULTS = {"listen": {"host": "0.0.0.0", "port": 8080}, "auth": {"host": "0.0.0.0", "port": 8081},
            "admin": {"host": "0.0.0.0", "port": 9090}, "auth_mode": "api-key",
            "identities_file": "/etc/llmserve-gateway/identities.json",
            "user_header": "X-Forwarded-User", "groups_header": "X-Forwarded-Groups",
            "max_request_body_bytes": 10485760, "small_body_bytes": 65536, "large_body_slots": 4,
            "slot_wait_s": 30, "body_timeout_s": 60, "max_in_flight": 512, "drain_s": 900,
            "retry_after_s": 1, "connect_timeout_s": 5, "read_timeout_s": 600, "health_interval_s": 10,
            "health_path": "/health", "ab_tests": {}, "default_model": "", "workers": 1}


def load_config(path):
    """The JSON config with defaults filled in; a clear SystemExit naming the field when it is wrong."""
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    config = dict(DEFAULTS, **raw)
    models = config.get("models")
    if not isinstance(models, dict) or not models:
        raise SystemExit("%s: models must map each model name to {url, served_names?}" % path)
    for name, backend in models.items():
        for field in ("url", "fallback_url"):
            if field in backend and not str(backend[field]).startswith(("http://", "https://")):
                raise SystemExit("%s: models.%s.%s must be an http(s) base URL, e.g. http://vllm-x:8000" % (path, name, field))
        if not isinstance(backend, dict) or "url" not in backend:
            raise SystemExit("%s: models.%s.url must be an http(s) base URL, e.g. http://vllm-x:8000" % (path, name))
        backend["url"] = backend["url"].rstrip("/")
        if backend.get("fallback_url"):
            backend["fallback_url"] = backend["fallback_url"].rstrip("/")
        backend.setdefault("served_names", [])
    if config["default_model"] and config["default_model"] not in models:
        raise SystemExit("%s: default_model %r is not one of the models" % (path, config["default_model"]))
    for prefix, choices in config["ab_tests"].items():
        if not re.match(r"^/[a-z0-9][-a-z0-9]*$", prefix) or prefix in ("/models", "/v1") or not choices \
                or any(c.get("model") not in models for c in choices):
            raise SystemExit("%s: ab_tests.%s must be a path such as /ab with [{model, weight}] of known models" % (path, prefix))
    if config["auth_mode"] not in ("api-key", "basic", "forward", "none"):
        raise SystemExit("%s: auth_mode must be api-key, basic, forward or none" % path)
    if not isinstance(config["workers"], int) or isinstance(config["workers"], bool) or not 1 <= config["workers"] <= 64:
        raise SystemExit("%s: workers must be a whole number from 1 to 64" % path)
    check_quotas(path, config.get("quotas"))
    return config


def check_quotas(path, quotas):
    """SystemExit naming the field when the quotas section is wrong (the ingress role checks it before rendering)."""
    if quotas is None:
        return
    if not isinstance(quotas, dict) or not isinstance(quotas.get("rules"), list) \
            or not isinstance(quotas.get("redis"), dict) or not quotas["redis"].get("host"):
        raise SystemExit("%s: quotas must be {rules: [...], redis: {host, port, db, timeout_s}, on_redis_error}" % path)
    if quotas.get("on_redis_error", "allow") not in ("allow", "deny"):
        raise SystemExit("%s: quotas.on_redis_error must be allow or deny" % path)
    for index, rule in enumerate(quotas["rules"]):
        if not isinstance(rule, dict) or not (rule.get("default") or rule.get("group")):
            raise SystemExit("%s: quotas.rules[%d] must name a group (or be the default)" % (path, index))
        if rule.get("per", "user") not in ("user", "group"):
            raise SystemExit("%s: quotas.rules[%d].per must be user or group" % (path, index))
        for limit in LIMITS:
            value = rule.get(limit)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise SystemExit("%s: quotas.rules[%d].%s must be a whole number, 0 or more" % (path, index, limit))


def load_identities(path):
    """{sha256 hex of a key: (name, groups)} and {basic/SSO user: groups} from the identities file (hashes only)."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return {}, {}
    keys = {str(k["sha256"]).lower(): (str(k["name"]), tuple(str(g) for g in k.get("groups") or ())) for k in doc.get("keys") or ()}
    users = {str(u): tuple(str(g) for g in groups or ()) for u, groups in (doc.get("users") or {}).items()}
    return keys, users


def error(status, message, kind="invalid_request_error", code=None, param=None, headers=None):
    """A response in OpenAI's error format, marked as the gateway's (vllm_health tells it from vLLM's own)."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=dict(headers or {}, **{REFUSED_BY: "gateway"}))


def _string_end(body, pos):
    """The index after the string whose opening quote is before pos; yields between steps."""
    steps = 0
    while True:
        run = STRING_RUN.match(body, pos)
        if run.end() >= len(body) or (run.end() == pos and body[pos] != 0x22):
            raise ValueError("a string is not closed")
        pos = run.end()
        if body[pos] == 0x22:
            return pos + 1
        steps += 1
        if steps % SCAN_STEPS == 0:
            yield


def top_level_model(body):
    """The top-level "model" of a JSON object body without building the document (None when absent): a generator that
    yields every few thousand steps, so that the event loop runs between them; the model is its return value.
    ValueError when the body is not a JSON object or its model is not a string."""
    fields = yield from top_level_fields(body)
    return fields[0]


def top_level_fields(body):
    """(model, stream, include_usage) of a JSON object body without building the document, as top_level_model scans:
    the top-level "model" (None when absent), whether "stream" is true, and whether "stream_options" holds
    "include_usage": true (the last of a repeated key counts, as json.loads reads it)."""
    start = len(body) - len(body.lstrip())
    if body[start:start + 1] != b"{":
        raise ValueError("not a JSON object")
    depth, found, stream, include, pos, steps = 0, None, False, False, start, 0
    options_next = in_options = False  # the next { opens stream_options; inside it (depth 2)
    while True:
        token = OUTSIDE.search(body, pos)
        if token is None:
            raise ValueError("the JSON object is not closed")
        char, pos = body[token.start()], token.end()
        if char == 0x22:  # a string: a key when a ':' follows
            pos = yield from _string_end(body, pos)
            colon = KEY_COLON.match(body, pos) if depth == 1 or (depth == 2 and in_options) else None
            if colon:
                key = body[token.start() + 1:pos - 1]
                if b"\\" in key:
                    key = json.loads(body[token.start():pos]).encode("utf-8", "surrogatepass")
                if depth == 2:
                    if key == b"include_usage":
                        include = TRUE_VALUE.match(body, colon.end()) is not None
                    continue
                options_next = False
                if key == b"model":
                    quote = VALUE_QUOTE.match(body, colon.end())
                    if quote is None:
                        if not VALUE_NULL.match(body, colon.end()):
                            raise ValueError("model is not a string")
                        found = None  # "model": null is no model, as json.loads reads it
                        continue
                    pos = yield from _string_end(body, quote.end())
                    found = json.loads(body[quote.end() - 1:pos])
                elif key == b"stream":
                    stream = TRUE_VALUE.match(body, colon.end()) is not None
                elif key == b"stream_options":
                    include, options_next = False, True
        elif char in (0x7B, 0x5B):  # { [
            depth += 1
            in_options, options_next = depth == 2 and char == 0x7B and options_next, False
        else:
            depth -= 1
            if depth < 2:
                in_options = False
            if depth == 0:
                return found, stream, include
        steps += 1
        if steps % SCAN_STEPS == 0:
            yield


# -- backends: a lean HTTP/1.1 client --------------------------------------------------------------------------------
# aiohttp's client cost about 80 us of CPU a request here (cookies, tracing, a timer per read, a payload object); the
# backends are our own (vLLM, vllm-router): plain HTTP/1.1 with keep-alive is all they need.
# Idle connections are reused for this long, below vLLM's own keep-alive (uvicorn closes them after 5 s), so that a
# request is not sent on a connection the backend is about to close; older ones are closed.
KEEPALIVE_S = 4.0
HEAD_LIMIT = 65536
NO_BODY = (204, 304)


class BackendError(Exception):
    """The backend failed. `unsent`: before the request went out (refused, timed out connecting): another URL may take
    it."""

    def __init__(self, message, unsent=False):
        super().__init__(message)
        self.unsent = unsent


class _Reader(asyncio.StreamReader):
    """A StreamReader that notes when data last arrived (the read timeout's watchdog reads it)."""

    last = 0.0

    def feed_data(self, data):
        self.last = time.monotonic()
        super().feed_data(data)


class Origin:
    """One backend base URL: where to connect, what to send as Host, and its idle keep-alive connections."""

    def __init__(self, base):
        parts = urllib.parse.urlsplit(base)
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = ("[%s]" % self.host if ":" in self.host else self.host) + (":%d" % parts.port if parts.port else "")
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl.create_default_context() if self.tls else None
        self.idle = []  # (connection, since)

    async def connect(self, timeout):
        """(reader, writer, reused): an idle connection that is still good, or a new one (BackendError(unsent))."""
        now = time.monotonic()
        while self.idle:
            (reader, writer), since = self.idle.pop()
            if now - since < KEEPALIVE_S and not reader.at_eof() and not writer.is_closing():
                return reader, writer, True
            writer.transport.abort()
        loop = asyncio.get_running_loop()
        reader = _Reader(limit=HEAD_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, dummy = await asyncio.wait_for(loop.create_connection(
                lambda: protocol, self.host, self.port, ssl=self.ssl), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise BackendError("cannot connect to %s:%s: %s" % (self.host, self.port, str(exc) or "timed out"),
                               unsent=True) from None
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop), False

    def sweep(self):
        """Close the idle connections that are too old to be used or that the backend closed."""
        now, kept = time.monotonic(), []
        for (reader, writer), since in self.idle:
            if now - since < KEEPALIVE_S and not reader.at_eof() and not writer.is_closing():
                kept.append(((reader, writer), since))
            else:
                writer.transport.abort()
        self.idle = kept


class Answer:
    """A backend's answer: status, reason, headers (as sent, in order), content_length (None for chunked or until the
    connection closes), then the body through read() or piece() until done; finish() gives the connection back for the
    next request when the answer was read to its end, or closes it."""

    # Where a chunked body's decoder is, when it is not inside a chunk's data (left > 0: bytes of data to come).
    SIZE, CRLF, TRAILERS = -1, -2, -3

    def __init__(self, origin, reader, writer, read_timeout):
        self.origin, self.reader, self.writer = origin, reader, writer
        self.status, self.reason, self.headers = 0, "", []
        self.content_length, self.chunked, self.keep_alive = None, False, True
        self.left, self.done, self.timed_out = 0, False, False
        self.raw = bytearray()  # a chunked body as it came, not decoded yet
        self.read_timeout = read_timeout
        reader.last = time.monotonic()
        self.watchdog = asyncio.get_running_loop().call_later(read_timeout, self._check)

    def _check(self):
        """No data from the backend for read_timeout seconds: abort (the reads then fail); else look again later."""
        idle = time.monotonic() - self.reader.last
        if idle >= self.read_timeout:
            self.timed_out = True
            self.writer.transport.abort()
        else:
            self.watchdog = asyncio.get_running_loop().call_later(self.read_timeout - idle, self._check)

    def _failed(self, exc):
        if self.timed_out:
            return BackendError("no data from the backend for %ss" % self.read_timeout)
        return BackendError("the backend closed the connection or sent a malformed answer (%s)" % (exc.__class__.__name__,))

    async def start(self, method):
        try:
            while True:
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode("utf-8", "surrogateescape").split("\r\n")
                version, status, self.reason = (lines[0].split(" ", 2) + [""])[:3]
                self.status = int(status)
                if not version.startswith("HTTP/1.") or not 100 <= self.status <= 599:
                    raise ValueError("not an HTTP/1 status line")
                if self.status >= 200:
                    break  # 1xx (100 Continue) are interim: the answer follows
            length, connection = None, ""
            for line in lines[1:]:
                key, dummy, value = line.partition(":")
                key, value = key.strip(), value.strip()
                self.headers.append((key, value))
                lower = key.lower()
                if lower == "content-length":
                    length = int(value)
                elif lower == "transfer-encoding":
                    self.chunked = value.lower().endswith("chunked")
                elif lower == "connection":
                    connection = value.lower()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise self._failed(exc) from None
        self.keep_alive = version == "HTTP/1.1" and "close" not in connection
        if method == "HEAD" or self.status in NO_BODY:
            self.content_length, self.done = 0, True
        elif self.chunked:
            self.left = self.SIZE
        elif length is not None:
            self.content_length = self.left = length
            self.done = length == 0
        else:
            self.keep_alive = False  # the body ends when the connection closes

    async def piece(self):
        """The next piece of the body, as soon as some has arrived: of a chunked body, the data of every chunk already
        here (a burst of events goes on in one write). The last piece sets done (it may be b"")."""
        if self.done:
            return b""
        self.reader.last = time.monotonic()
        try:
            if self.chunked:
                while True:
                    data = self._dechunk()
                    if data or self.done:
                        return data
                    more = await self.reader.read(HEAD_LIMIT)
                    if not more:
                        raise ValueError("the body ended early")
                    self.raw += more
            data = await self.reader.read(HEAD_LIMIT if self.content_length is None else min(self.left, HEAD_LIMIT))
            if self.content_length is None:
                self.done = not data
                return data
            if not data:
                raise ValueError("the body ended early")
            self.left -= len(data)
            self.done = self.left == 0
            return data
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise self._failed(exc) from None

    def _dechunk(self):
        """The data of the chunks (or parts of one) complete in raw, taken out of it; done after the last chunk."""
        raw, out, pos = self.raw, [], 0
        while True:
            if self.left > 0:
                take = min(self.left, len(raw) - pos)
                if not take:
                    break
                out.append(raw[pos:pos + take])
                pos += take
                self.left -= take
                if not self.left:
                    self.left = self.CRLF
            elif self.left == self.CRLF:
                if len(raw) - pos < 2:
                    break
                if raw[pos:pos + 2] != b"\r\n":
                    raise ValueError("a chunk does not end with CRLF")
                pos, self.left = pos + 2, self.SIZE
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    if len(raw) - pos > HEAD_LIMIT:
                        raise ValueError("a chunk size line is too long")
                    break
                line, pos = raw[pos:end], end + 2
                if self.left == self.TRAILERS:
                    if not line:
                        # Bytes after the answer's end: the connection is not reused.
                        self.done, self.keep_alive = True, self.keep_alive and pos == len(raw)
                        break
                    continue
                size = int(line.split(b";", 1)[0], 16)
                if size < 0:
                    raise ValueError("a negative chunk size")
                self.left = size or self.TRAILERS
        del raw[:pos]
        return b"".join(out)

    async def read(self):
        """The whole body."""
        if self.content_length is not None and not self.done:
            try:
                data = await self.reader.readexactly(self.left)
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise self._failed(exc) from None
            self.left, self.done = 0, True
            return data
        pieces = []
        while not self.done:
            pieces.append(await self.piece())
        return b"".join(pieces)

    def finish(self):
        self.watchdog.cancel()
        if self.done and self.keep_alive and not self.writer.is_closing():
            self.origin.idle.append(((self.reader, self.writer), time.monotonic()))
        else:
            self.writer.transport.abort()  # an answer not read to its end: the backend sees the client leave


async def send(origin, method, path, headers, body, connect_timeout, read_timeout):
    """Send one request to a backend and read the head of its answer: an Answer (finish() it), or BackendError."""
    reader, writer, reused = await origin.connect(connect_timeout)
    lines = ["%s %s%s HTTP/1.1\r\nHost: %s\r\n" % (method, origin.prefix, path, origin.authority)]
    lines += ["%s: %s\r\n" % item for item in headers.items()]
    if body or method not in ("GET", "HEAD"):
        lines.append("Content-Length: %d\r\n" % len(body))
    head = ("".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
    if head.count(b"\n") != len(lines) + 2 or head.count(b"\r") != len(lines) + 2:
        writer.transport.abort()
        raise ValueError("a header holds a line break")
    answer = Answer(origin, reader, writer, read_timeout)
    try:
        if len(body) < HEAD_LIMIT:
            writer.write(head + body)
        else:
            writer.write(head)
            writer.write(body)
        await writer.drain()
        await answer.start(method)
    except BaseException as exc:
        answer.done = False
        answer.finish()
        if isinstance(exc, (OSError, asyncio.IncompleteReadError)):
            raise BackendError("%s %s" % ("a kept-alive connection failed:" if reused else "sending failed:", exc)) from None
        raise
    return answer


# -- usage and quotas ------------------------------------------------------------------------------------------------
# Tokens are counted from what vLLM reports: a whole answer's "usage", a stream's final usage chunk (asked for by the
# gateway when the client did not, and then taken out of the stream). Quotas are counted in Redis, so that every
# replica and worker counts together and the counts outlive a restart.
USAGE_KEY = b'"usage":'
USAGE_OBJECT = b'"usage":{'
INCLUDE_USAGE = b',"stream_options":{"include_usage":true}}'
STREAMED_USAGE = ("chat/completions", "completions")  # the endpoints whose streams take stream_options
LIMITS = ("tokens_per_day", "tokens_per_hour", "requests_per_minute", "in_flight")
DAY_S, HOUR_S, MINUTE_S = 86400, 3600, 60

# Admission, in one round trip and atomic: every rule of the identity is checked before any counter moves. KEYS: per
# rule its tokens-of-the-day, tokens-of-the-hour, requests-of-the-minute and in-flight keys. ARGV: now (ms), the
# request's id, when its in-flight entry expires (ms), whether to only look (1) or admit (0), then per rule its four
# limits (-1: none). Answer: {index of the rule that refuses, the limit} or {-1, ""}.
ADMIT = """
local now, id, expiry, dry = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local n = #KEYS / 4
for i = 0, n - 1 do
  local k, a = i * 4, 4 + i * 4
  local day, hour, rpm, flight = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if day >= 0 and tonumber(redis.call('GET', KEYS[k + 1]) or '0') >= day then return {i, 'tokens_per_day'} end
  if hour >= 0 and tonumber(redis.call('GET', KEYS[k + 2]) or '0') >= hour then return {i, 'tokens_per_hour'} end
  if rpm >= 0 and tonumber(redis.call('GET', KEYS[k + 3]) or '0') >= rpm then return {i, 'requests_per_minute'} end
  if flight >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 4]) >= flight then return {i, 'in_flight'} end
  end
end
if dry then return {-1, ''} end
for i = 0, n - 1 do
  local k, a = i * 4, 4 + i * 4
  if tonumber(ARGV[a + 3]) >= 0 then
    redis.call('INCR', KEYS[k + 3])
    redis.call('EXPIRE', KEYS[k + 3], 120)
  end
  if tonumber(ARGV[a + 4]) >= 0 then
    redis.call('ZADD', KEYS[k + 4], expiry, id)
    redis.call('PEXPIRE', KEYS[k + 4], expiry - now)
  end
end
return {-1, ''}
"""
ADMIT_SHA = hashlib.sha1(ADMIT.encode()).hexdigest()


class StoreError(Exception):
    """Redis could not be reached, or did not answer in time."""


class RedisClient:
    """A Redis connection (RESP2, parsed as the bytes arrive: no client library in the image, no coroutine per reply):
    commands are written as they come and their replies matched in order (pipelining), so that concurrent requests
    share one connection. A connection that ended is made again on the next call; one that could not be made or
    stopped answering, at most once a second (until then a call fails at once)."""

    RETRY_S = 1.0

    def __init__(self, host, port, db=0, password="", timeout_s=0.5):
        self.host, self.port, self.db, self.password, self.timeout_s = host, int(port), int(db), password, float(timeout_s)
        self.transport = self.connecting = None
        self.pending = collections.deque()  # (future, replies expected, replies so far) of each call, oldest first
        self.failed_at = -self.RETRY_S

    @staticmethod
    def encode(command):
        parts = [b"*%d\r\n" % len(command)]
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8", "surrogateescape")
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    async def _connect(self):
        loop = asyncio.get_running_loop()
        transport, dummy = await loop.create_connection(lambda: RespProtocol(self), self.host, self.port)
        self.transport = transport
        hello = ([("AUTH", self.password)] if self.password else []) + ([("SELECT", self.db)] if self.db else [])
        if hello:
            for command, answer in zip(hello, await self._send(hello)):
                if isinstance(answer, ReplyError):
                    self.reset("Redis refused %s: %s" % (command[0], answer))
                    raise ConnectionError("Redis refused %s: %s" % (command[0], answer))

    def deliver(self, answer):
        """A reply, to the oldest call waiting; the call's future gets its replies when the last has come."""
        future, count, replies = self.pending[0]
        replies.append(answer)
        if len(replies) == count:
            self.pending.popleft()
            if not future.done():
                future.set_result(replies)

    def reset(self, exc=None, backoff=False):
        """Close the connection; every call waiting fails. The next call connects again: at once after a connection
        that ended (Redis restarted), a second later after one that stopped answering."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()
        pending, self.pending = self.pending, collections.deque()
        for future, dummy, dummy in pending:
            if not future.done():
                future.set_exception(StoreError("Redis: %s" % (exc or "connection closed")))
        if backoff:
            self.failed_at = time.monotonic()

    async def call(self, *commands):
        """The replies of the commands (each a tuple), sent in one write; StoreError when Redis is not reachable or
        slower than timeout_s. An error reply comes back as a ReplyError in its place."""
        if self.transport is None:
            if time.monotonic() - self.failed_at < self.RETRY_S:
                raise StoreError("Redis was unreachable less than %.0fs ago" % self.RETRY_S)
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(asyncio.wait_for(self._connect(), self.timeout_s))
            connecting = self.connecting
            try:
                await asyncio.shield(connecting)
            except (OSError, asyncio.TimeoutError, ConnectionError, StoreError) as exc:
                self.failed_at = time.monotonic()
                raise StoreError("cannot connect to Redis at %s:%d: %s" % (self.host, self.port, exc or "timed out")) from None
            finally:
                if self.connecting is connecting:
                    self.connecting = None
            if self.transport is None:
                raise StoreError("Redis connection lost")
        return await self._send(commands)

    async def _send(self, commands):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((future, len(commands), []))
        self.transport.write(b"".join(self.encode(c) for c in commands))
        # A timer, not wait_for (a task per call): past timeout_s the connection is dropped and every call waiting fails.
        timer = loop.call_later(self.timeout_s, self._late, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _late(self, future):
        if not future.done():
            self.reset("no answer within %ss" % self.timeout_s, backoff=True)

    def close(self):
        self.reset()


class RespProtocol(asyncio.Protocol):
    """Redis' replies, parsed from the bytes as they come and handed to the client in order."""

    def __init__(self, client):
        self.client, self.buffer, self.transport = client, bytearray(), None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        pos = 0
        try:
            while True:
                parsed = resp_value(self.buffer, pos)
                if parsed is None:
                    break
                answer, pos = parsed
                self.client.deliver(answer)
        except (ValueError, IndexError) as exc:  # not RESP, or a reply no call waits for
            if self.client.transport is self.transport:
                self.client.reset("a malformed answer (%s)" % exc.__class__.__name__)
            return
        del self.buffer[:pos]

    def connection_lost(self, exc):
        if self.client.transport is self.transport:
            self.client.reset(exc or "Redis closed the connection")


def resp_value(buf, pos):
    """(value, position after it) of the RESP2 value at pos, or None when it has not all arrived. An error reply is a
    ReplyError; a null, None."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, rest, after = buf[pos], bytes(buf[pos + 1:end]), end + 2
    if kind == 0x2B:  # +
        return rest.decode("utf-8", "replace"), after
    if kind == 0x2D:  # -
        return ReplyError(rest.decode("utf-8", "replace")), after
    if kind == 0x3A:  # :
        return int(rest), after
    if kind == 0x24:  # $
        size = int(rest)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            return None
        return bytes(buf[after:after + size]).decode("utf-8", "replace"), after + size + 2
    if kind == 0x2A:  # *
        size = int(rest)
        if size < 0:
            return None, after
        items = []
        for dummy in range(size):
            parsed = resp_value(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ValueError("not a RESP reply")


class ReplyError(str):
    """An error reply of Redis (a string)."""


def window_left(now, size):
    """Seconds until the calendar window of `size` seconds (UTC) that holds `now` ends."""
    return int(size - now % size) or size


class Quotas:
    """The quota rules of the config, their counters in Redis, and what happens when Redis cannot be reached."""

    def __init__(self, config, password, metrics):
        self.metrics = metrics
        metrics.store_up = 1
        self.rules = [r for r in config["rules"] if not r.get("default")]
        self.default = [r for r in config["rules"] if r.get("default")]
        self.by_group = {r["group"]: r for r in self.rules}
        self.on_error = config.get("on_redis_error", "allow")
        redis = config["redis"]
        self.redis = RedisClient(redis["host"], redis.get("port", 6379), redis.get("db", 0), password, redis.get("timeout_s", 0.5))
        self.expire_s = 900  # an in-flight entry's life when its release never comes (the gateway died)

    def rules_of(self, groups):
        """Every rule that binds an identity: the rule of each of its groups that has one, else the default."""
        found = [self.by_group[g] for g in groups if g in self.by_group]
        return found or self.default

    @staticmethod
    def subject(rule, user):
        group = "" if rule.get("default") else rule["group"]
        return "llmserve:quota:" + (("g:" + group) if rule.get("per") == "group" else ("u:%s:%s" % (group, user)))

    def keys(self, rules, user, now):
        day, hour, minute = int(now // DAY_S), int(now // HOUR_S), int(now // MINUTE_S)
        keys = []
        for rule in rules:
            base = self.subject(rule, user)
            keys += ["%s:tokens:d%d" % (base, day), "%s:tokens:h%d" % (base, hour), "%s:requests:m%d" % (base, minute),
                     "%s:in_flight" % base]
        return keys

    async def _eval(self, keys, args):
        (answer,) = await self.redis.call(("EVALSHA", ADMIT_SHA, len(keys), *keys, *args))
        if isinstance(answer, ReplyError) and answer.startswith("NOSCRIPT"):
            (answer,) = await self.redis.call(("EVAL", ADMIT, len(keys), *keys, *args))
        if isinstance(answer, ReplyError):
            raise StoreError("Redis refused the quota script: %s" % answer)
        return answer

    async def check(self, user, groups, ticket_id, dry=False):
        """None when the identity may go on (and, unless dry, its request is counted in), else (rule, limit, retry
        after s). StoreError when Redis cannot say."""
        rules = self.rules_of(groups)
        if not rules:
            return None
        now = time.time()
        args = [int(now * 1000), ticket_id, int((now + self.expire_s) * 1000), int(dry)]
        for rule in rules:
            args += [int(rule[limit]) if rule.get(limit) is not None else -1 for limit in LIMITS]
        try:
            index, limit = await self._eval(self.keys(rules, user, now), args)
        except StoreError:
            self.failed()
            raise
        self.metrics.store_up = 1
        if index < 0:
            return None
        retry = {"tokens_per_day": window_left(now, DAY_S), "tokens_per_hour": window_left(now, HOUR_S),
                 "requests_per_minute": window_left(now, MINUTE_S), "in_flight": 1}[limit]
        return rules[index], limit, retry

    async def record(self, user, groups, ticket_id, tokens, admitted):
        """Add an answer's tokens to every rule of the identity and free its in-flight place."""
        rules = self.rules_of(groups)
        now = time.time()
        keys = self.keys(rules, user, now)
        commands = []
        for i, rule in enumerate(rules):
            if tokens and (rule.get("tokens_per_day") is not None or rule.get("tokens_per_hour") is not None):
                commands += [("INCRBY", keys[4 * i], tokens), ("EXPIRE", keys[4 * i], 2 * DAY_S),
                             ("INCRBY", keys[4 * i + 1], tokens), ("EXPIRE", keys[4 * i + 1], 2 * HOUR_S)]
            if admitted and rule.get("in_flight") is not None:
                commands.append(("ZREM", keys[4 * i + 3], ticket_id))
        if not commands:
            return
        try:
            await self.redis.call(*commands)
            self.metrics.store_up = 1
        except StoreError as exc:
            self.failed()
            LOG.warning("quota store: %s tokens of %s not counted: %s", tokens, user, exc)

    def failed(self):
        self.metrics.store_up = 0
        self.metrics.store_errors += 1

    async def ping(self):
        try:
            (answer,) = await self.redis.call(("PING",))
            self.metrics.store_up = int(answer == "PONG")
        except StoreError:
            self.failed()


class UsageLog:
    """The usage log: one JSON line per request ({"usage": {...}}, a timestamp first), written in batches (at most
    every 0.5 s) rather than a write per request."""

    EVERY_S = 0.5

    def __init__(self, stream=None):
        self.stream, self.lines, self.timer = stream, [], None

    def add(self, record):
        self.lines.append(json.dumps({"usage": record}, separators=(",", ":")))
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.EVERY_S, self.flush)

    def flush(self):
        self.timer = None
        if self.lines:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
            lines, self.lines = self.lines, []
            stream = self.stream or sys.stderr
            stream.write("".join("%s USAGE %s\n" % (stamp, line) for line in lines))
            stream.flush()


class Account:
    """One request's usage: who, which model (as the client named it), the tokens vLLM reported, and its quota ticket."""

    __slots__ = ("user", "groups", "group", "model", "prompt", "completion", "strip", "ticket", "admitted", "settled")

    def __init__(self, user, groups):
        self.user, self.groups = user, groups
        self.group = groups[0] if groups else ""
        self.model, self.prompt, self.completion = "", 0, 0
        self.strip = self.admitted = self.settled = False
        self.ticket = None

    def take(self, usage):
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
            completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
            if isinstance(prompt, int) and isinstance(completion, int):
                self.prompt, self.completion = max(prompt, 0), max(completion or 0, 0)


def usage_of_answer(raw):
    """The top-level "usage" object of a whole JSON answer, found from its end (vLLM writes it after the choices or the
    embeddings, so that the answer is not parsed whole); None when it has none. A "usage": inside a string would be
    escaped (\\"usage\\":), so the last unescaped one preceded by , or { is the object's own."""
    pos = len(raw)
    while True:
        pos = raw.rfind(USAGE_KEY, 0, pos)
        if pos < 0:
            return None
        before = raw[:pos].rstrip()[-1:]
        if before in (b",", b"{"):
            try:
                value, dummy = json.JSONDecoder().raw_decode(raw[pos + len(USAGE_KEY):].decode("utf-8", "replace").lstrip())
            except ValueError:
                return None
            return value if isinstance(value, dict) else None


def sse_split(buffer):
    """([complete SSE events, each with its blank line], the bytes of the next event begun) of a stream's buffer."""
    events, start = [], 0
    while True:
        end = buffer.find(b"\n\n", start)
        if end < 0:
            return events, buffer[start:]
        events.append(buffer[start:end + 2])
        start = end + 2


def event_data(event):
    """The JSON of an SSE event's data lines, or None."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    try:
        return json.loads(b"\n".join(lines)) if lines else None
    except ValueError:
        return None


def terminal(event):
    """A stream chunk that finishes a choice (vLLM then stamps the system fingerprint on it)."""
    return b'"finish_reason":' in event and b'"finish_reason":null' not in event


class UsageStream:
    """An SSE answer passing through: the usage of its usage chunk taken into the account; when the gateway asked for
    that chunk (account.strip), it is taken out, and the chunks that finish a choice, held from the first of them until
    it, get the system fingerprint vLLM put on the usage chunk instead: the client gets the stream it asked for."""

    def __init__(self, account):
        self.account, self.buffer, self.held = account, b"", []

    def feed(self, data):
        events, self.buffer = sse_split(self.buffer + data)
        return b"".join(self.event(event) for event in events)

    def event(self, event):
        if USAGE_OBJECT in event:
            doc = event_data(event)
            if isinstance(doc, dict):
                self.account.take(doc.get("usage") or (doc.get("response") or {}).get("usage"))
                if self.account.strip and doc.get("choices") == []:
                    fingerprint = doc.get("system_fingerprint")
                    held, self.held = self.held, []
                    return b"".join(stamped(e, fingerprint) if fingerprint and terminal(e) else e for e in held)
        if self.account.strip and (self.held or terminal(event)):
            self.held.append(event)
            return b""
        return event

    def end(self):
        held, self.held, rest, self.buffer = self.held, [], self.buffer, b""
        return b"".join(held) + rest


def stamped(event, fingerprint):
    """The chunk with "system_fingerprint" as vLLM writes it on a finishing chunk of a stream without usage (last)."""
    if b'"system_fingerprint":' in event:
        return event
    end = event.rstrip().rfind(b"}")
    return event[:end] + b',"system_fingerprint":' + json.dumps(fingerprint).encode() + event[end:]


def with_usage_asked(body):
    """The request body with stream_options.include_usage true: appended as the object's last key (a JSON parser keeps
    the last of a repeated key, as Python's json and vLLM's request parsing do). The client's own stream_options, which
    did not ask for usage, has nothing else that applies without it."""
    end = body.rstrip().rfind(b"}")
    return body[:end] + INCLUDE_USAGE + body[end + 1:]


def label(value):
    """A Prometheus label value, escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- the guard model ---------------------------------------------------------------------------------------------------
# A classifier model in front of the others (Llama Guard 3's contract): the gateway sends it the conversation in the
# prompt format of Llama Guard 3's model card, as a raw completion constrained to the verdict's form; it answers "safe",
# or "unsafe" and the violated categories on the next line.
GUARD_CATEGORIES = {"S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex-Related Crimes",
                    "S4": "Child Sexual Exploitation", "S5": "Defamation", "S6": "Specialized Advice", "S7": "Privacy",
                    "S8": "Intellectual Property", "S9": "Indiscriminate Weapons", "S10": "Hate",
                    "S11": "Suicide & Self-Harm", "S12": "Sexual Content", "S13": "Elections",
                    "S14": "Code Interpreter Abuse"}
GUARDED = {"chat/completions": "chat", "completions": "text", "responses": "responses"}
VERDICT_FORM = "safe|unsafe\nS([1-9]|1[0-4])(,S([1-9]|1[0-4]))*"
VERDICT = re.compile(r"^\s*(?:(safe)|unsafe[ \t]*\r?\n[ \t]*(S(?:1[0-4]|[1-9])(?:[ \t]*,[ \t]*S(?:1[0-4]|[1-9]))*))\s*$")
GUARD_TEMPLATE = (
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in '%(role)s' messages in conversations according our safety policy with the "
    "below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n%(categories)s\n<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n%(conversation)s\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST %(role)s message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


class GuardError(Exception):
    """The guard did not answer in time, failed, or answered something that is not a verdict."""


def text_of(content):
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text"))
    return ""


def conversation_of(doc, kind):
    """[(role, text)] of a request body, roles "User" and "Agent" (Llama Guard's), turns of one role merged."""
    turns = []
    if kind == "chat":
        items = doc.get("messages") or []
    elif kind == "text":
        prompt = doc.get("prompt")
        items = [{"role": "user", "content": "\n".join(p for p in prompt if isinstance(p, str)) if isinstance(prompt, list) else prompt}]
    else:
        given = doc.get("input")
        items = [{"role": "user", "content": given}] if isinstance(given, str) else (given or [])
        if isinstance(doc.get("instructions"), str):
            items = [{"role": "system", "content": doc["instructions"]}] + list(items)
    for item in items:
        if not isinstance(item, dict):
            continue
        role = "Agent" if item.get("role") == "assistant" else "User"
        text = text_of(item.get("content"))
        if not text:
            continue
        if turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n\n" + text)
        else:
            turns.append((role, text))
    return turns


def guard_prompt(turns, role):
    """The prompt Llama Guard 3's model card gives: the categories, the conversation, and the question about the last
    message of `role` (User: the prompt; Agent: the answer). The tokenizer adds <|begin_of_text|>."""
    categories = "\n".join("%s: %s." % item for item in GUARD_CATEGORIES.items())
    conversation = "\n\n".join("%s: %s" % turn for turn in turns)
    return GUARD_TEMPLATE % {"role": role, "categories": categories, "conversation": conversation}


def parse_verdict(text):
    """("safe", []) or ("unsafe", [categories]); GuardError for anything else."""
    match = VERDICT.match(text or "")
    if not match:
        raise GuardError("the guard's answer is not a verdict: %r" % (text or "")[:80])
    if match.group(1):
        return "safe", []
    return "unsafe", [c.strip() for c in match.group(2).split(",")]


class Guard:
    """The policy of the config's `guard` section, and the calls to the guard model."""

    def __init__(self, config, door):
        self.model, self.door = config["model"], door
        self.models, self.groups = set(config.get("models") or ()), set(config.get("groups") or ())
        self.check = set(config.get("check") or ("prompt",))
        self.block = set(config.get("block") or GUARD_CATEGORIES)
        self.on_error = config.get("on_error", "deny")
        self.timeout_s = float(config.get("timeout_s", 10))
        self.every = int(config.get("stream_check_chars", 400))
        self.max_body = int(config.get("max_body_bytes", 1048576))
        self.log_identity = bool(config.get("log_identity"))

    def applies(self, model, groups, endpoint):
        return (endpoint in GUARDED and model != self.model and (not self.models or model in self.models)
                and (not self.groups or bool(self.groups.intersection(groups))))

    async def verdict(self, turns, role, stage, model, group):
        """(verdict, categories) of the last `role` turn; GuardError when the guard cannot say. Counted."""
        started = time.monotonic()
        body = {"model": self.model, "prompt": guard_prompt(turns, role), "max_tokens": 24, "temperature": 0,
                "structured_outputs": {"regex": VERDICT_FORM}}
        backend = self.door.models[self.model]
        headers = {"Content-Type": "application/json"}
        if self.door.internal_key:
            headers["Authorization"] = "Bearer " + self.door.internal_key
        try:
            answer = await asyncio.wait_for(send(self.door.origins[backend["url"]], "POST", "/v1/completions", headers,
                                                 json.dumps(body).encode(), self.door.config["connect_timeout_s"],
                                                 self.timeout_s), self.timeout_s)
            try:
                raw = await asyncio.wait_for(answer.read(), self.timeout_s)
            finally:
                answer.finish()
            if answer.status != 200:
                raise GuardError("the guard answered %d" % answer.status)
            found = parse_verdict(json.loads(raw)["choices"][0]["text"])
        except (BackendError, asyncio.TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            self.door.metrics.guarded(stage, "error", "", model, group, time.monotonic() - started)
            raise GuardError(str(exc) or exc.__class__.__name__) from None
        except GuardError:
            self.door.metrics.guarded(stage, "error", "", model, group, time.monotonic() - started)
            raise
        self.door.metrics.guarded(stage, found[0], ",".join(found[1]), model, group, time.monotonic() - started)
        return found

    def blocked(self, found):
        """The categories that block in a verdict ([] when it lets the text through)."""
        return [c for c in found[1] if c in self.block] if found[0] == "unsafe" else []

    def refusal(self, categories):
        names = ", ".join("%s %s" % (c, GUARD_CATEGORIES.get(c, "")) for c in categories)
        return error(400, "The prompt was refused by the content filter (%s)." % names, code="content_filter",
                     param="messages")

    def unavailable(self):
        return error(503, "The content filter is unavailable; retry shortly.", kind="server_error", code="guard_unavailable",
                     headers={"Retry-After": str(int(self.door.config["retry_after_s"]))})

    def who(self, user):
        return user if self.log_identity else "(identity not logged)"


def filtered_answer(raw, kind, replace):
    """A whole answer with the choices `replace` names emptied and finished by the content filter."""
    doc = json.loads(raw)
    for choice in doc.get("choices") or ():
        if choice.get("index") in replace:
            if kind == "chat":
                choice["message"] = {"role": "assistant", "content": ""}
            else:
                choice["text"] = ""
            choice["finish_reason"] = "content_filter"
            if "stop_reason" in choice:
                choice["stop_reason"] = None
    return json.dumps(doc).encode()


class GuardStream:
    """A streamed answer under response checks: events are held until the text they carry has been checked (every
    `every` characters of new text, and at the end): no text reaches the client before the guard has seen it. An
    unsafe verdict ends the stream with a chunk whose finish_reason is content_filter, then [DONE]."""

    def __init__(self, guard, turns, kind, model, group):
        self.guard, self.turns, self.kind, self.model, self.group = guard, turns, kind, model, group
        self.buffer, self.held, self.text, self.checked, self.last = b"", [], {}, {}, None
        self.stopped, self.blocked = False, {}

    def _take(self, event):
        doc = event_data(event) if event.startswith(b"data: {") else None
        if not isinstance(doc, dict):
            return
        self.last = doc
        for choice in doc.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if self.kind == "chat" else choice.get("text")
            if isinstance(piece, str) and piece:
                index = choice.get("index", 0)
                self.text[index] = self.text.get(index, "") + piece

    async def feed(self, data, final=False):
        """What may go to the client now: the events held so far, once the text they carry has been checked. The checks
        fall every `every` characters of a choice's text, event by event, whatever pieces the answer came in (final:
        the end of the answer, the rest is checked and let go)."""
        if self.stopped:
            return b""
        events, self.buffer = sse_split(self.buffer + data)
        out = []
        for event in events:
            self._take(event)
            self.held.append(event)
            due = [i for i, t in self.text.items() if len(t) - self.checked.get(i, 0) >= self.guard.every]
            if due:
                blocked = await self._check(due)
                if blocked:
                    return b"".join(out) + self._stop(blocked)
            if not any(len(t) > self.checked.get(i, 0) for i, t in self.text.items()):
                out += self.held
                self.held = []
        if final:
            rest = [i for i, t in self.text.items() if len(t) > self.checked.get(i, 0)]
            if rest:
                blocked = await self._check(rest)
                if blocked:
                    return b"".join(out) + self._stop(blocked)
            out += self.held + [self.buffer]
            self.held, self.buffer = [], b""
        return b"".join(out)

    async def _check(self, due):
        blocked = {}
        for index in due:
            try:
                found = await self.guard.verdict(self.turns + [("Agent", self.text[index])], "Agent", "response",
                                                 self.model, self.group)
            except GuardError as exc:
                LOG.warning("guard: the answer could not be checked (%s): %s", exc,
                            "ending it" if self.guard.on_error == "deny" else "letting it through")
                if self.guard.on_error == "deny":
                    blocked[index] = ["unchecked"]
                self.checked[index] = len(self.text[index])
                continue
            self.checked[index] = len(self.text[index])
            categories = self.guard.blocked(found)
            if categories:
                blocked[index] = categories
        return blocked

    def _stop(self, blocked):
        self.stopped, self.held, self.buffer, self.blocked = True, [], b"", blocked
        last = self.last or {}
        out = []
        for index in sorted(blocked):
            chunk = {"id": last.get("id", ""), "object": last.get("object", "chat.completion.chunk"),
                     "created": last.get("created", 0), "model": last.get("model", "")}
            if self.kind == "chat":
                chunk["choices"] = [{"index": index, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}]
            else:
                chunk["choices"] = [{"index": index, "text": "", "logprobs": None, "finish_reason": "content_filter"}]
            out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        return b"".join(out) + b"data: [DONE]\n\n"


class Metrics:
    """Counters and gauges in Prometheus text format (no client library needed in the image)."""

    def __init__(self, models, user_series=1000):
        self.requests = {}
        self.refusals = {}
        self.up = {m: 0 for m in models}
        self.in_flight = {m: 0 for m in models}
        self.seconds = {}
        self.buffered = 0
        # Usage: (user, group, model, code) -> requests; (user, group, model, kind) -> tokens; (group, limit) -> quota
        # refusals. At most user_series users get a label of their own (a bounded number of series); the rest "_other".
        self.usage_requests, self.usage_tokens, self.quota_refusals = {}, {}, {}
        self.user_series, self.users = int(user_series), set()
        self.store_up, self.store_errors = None, 0  # the quota store's state (None: no quotas)
        # The guard: (stage, verdict, categories, model, group) -> verdicts; stage -> (seconds, calls); its model.
        self.guard_verdicts, self.guard_seconds, self.guard_model = {}, {}, None

    def user_label(self, user):
        if user not in self.users:
            if len(self.users) >= self.user_series:
                return "_other"
            self.users.add(user)
        return user

    def used(self, account, code):
        """A request's usage: counted by identity, its first group and the model as the client named it."""
        user = self.user_label(account.user)
        key = (user, account.group, account.model, str(code))
        self.usage_requests[key] = self.usage_requests.get(key, 0) + 1
        for kind, tokens in (("prompt", account.prompt), ("completion", account.completion)):
            if tokens:
                key = (user, account.group, account.model, kind)
                self.usage_tokens[key] = self.usage_tokens.get(key, 0) + tokens

    def guarded(self, stage, verdict, categories, model, group, seconds):
        key = (stage, verdict, categories, model, group)
        self.guard_verdicts[key] = self.guard_verdicts.get(key, 0) + 1
        total, n = self.guard_seconds.get(stage, (0.0, 0))
        self.guard_seconds[stage] = (total + seconds, n + 1)

    def quota_refused(self, group, limit):
        self.quota_refusals[group, limit] = self.quota_refusals.get((group, limit), 0) + 1

    def count(self, model, code, seconds):
        key = (model, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        total, n = self.seconds.get(model, (0.0, 0))
        self.seconds[model] = (total + seconds, n + 1)

    def refuse(self, reason):
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def snapshot(self):
        """What a worker tells its supervisor (JSON): its counters and gauges."""
        return {"requests": [[m, c, n] for (m, c), n in self.requests.items()], "refusals": self.refusals,
                "seconds": self.seconds, "in_flight": self.in_flight, "buffered": self.buffered,
                "usage_requests": [list(k) + [n] for k, n in self.usage_requests.items()],
                "usage_tokens": [list(k) + [n] for k, n in self.usage_tokens.items()],
                "quota_refusals": [list(k) + [n] for k, n in self.quota_refusals.items()],
                "store_up": self.store_up, "store_errors": self.store_errors,
                "guard_verdicts": [list(k) + [n] for k, n in self.guard_verdicts.items()], "guard_seconds": self.guard_seconds}

    def add(self, snapshot, gauges=True):
        """Add a worker's snapshot (its gauges too unless it has ended)."""
        for model, code, n in snapshot["requests"]:
            self.requests[model, code] = self.requests.get((model, code), 0) + n
        for reason, n in snapshot["refusals"].items():
            self.refusals[reason] = self.refusals.get(reason, 0) + n
        for model, (total, n) in snapshot["seconds"].items():
            before = self.seconds.get(model, (0.0, 0))
            self.seconds[model] = (before[0] + total, before[1] + n)
        for stage, (total, n) in snapshot.get("guard_seconds", {}).items():
            before = self.guard_seconds.get(stage, (0.0, 0))
            self.guard_seconds[stage] = (before[0] + total, before[1] + n)
        for field in ("usage_requests", "usage_tokens", "quota_refusals", "guard_verdicts"):
            counters = getattr(self, field)
            for row in snapshot.get(field, ()):
                key = tuple(row[:-1])
                counters[key] = counters.get(key, 0) + row[-1]
        self.store_errors += snapshot.get("store_errors", 0)
        if gauges and snapshot.get("store_up") is not None:
            # Down when any worker cannot reach the store.
            self.store_up = snapshot["store_up"] if self.store_up is None else min(self.store_up, snapshot["store_up"])
        if gauges:
            for model, n in snapshot["in_flight"].items():
                self.in_flight[model] = self.in_flight.get(model, 0) + n
            self.buffered += snapshot["buffered"]

    def render(self):
        out = ["# HELP llmserve_frontdoor_requests_total Requests by routed model ('' when none) and status code.",
               "# TYPE llmserve_frontdoor_requests_total counter"]
        out += ['llmserve_frontdoor_requests_total{model="%s",code="%s"} %d' % (m, c, v) for (m, c), v in sorted(self.requests.items())]
        out += ["# HELP llmserve_frontdoor_refusals_total Requests the gateway refused, by reason.",
                "# TYPE llmserve_frontdoor_refusals_total counter"]
        out += ['llmserve_frontdoor_refusals_total{reason="%s"} %d' % (r, v) for r, v in sorted(self.refusals.items())]
        out += ["# HELP llmserve_frontdoor_request_duration_seconds Time until the last byte of the response.",
                "# TYPE llmserve_frontdoor_request_duration_seconds summary"]
        for m, (total, n) in sorted(self.seconds.items()):
            out += ['llmserve_frontdoor_request_duration_seconds_sum{model="%s"} %.6f' % (m, total),
                    'llmserve_frontdoor_request_duration_seconds_count{model="%s"} %d' % (m, n)]
        out += ["# HELP llmserve_frontdoor_backend_up 1 when the model's backend answered its health check.",
                "# TYPE llmserve_frontdoor_backend_up gauge"]
        out += ['llmserve_frontdoor_backend_up{model="%s"} %d' % (m, v) for m, v in sorted(self.up.items())]
        out += ["# HELP llmserve_frontdoor_in_flight Requests being proxied now.", "# TYPE llmserve_frontdoor_in_flight gauge"]
        out += ['llmserve_frontdoor_in_flight{model="%s"} %d' % (m, v) for m, v in sorted(self.in_flight.items())]
        out += ["# HELP llmserve_frontdoor_buffered_body_bytes Request body bytes held now.",
                "# TYPE llmserve_frontdoor_buffered_body_bytes gauge", "llmserve_frontdoor_buffered_body_bytes %d" % self.buffered]
        out += ["# HELP llmserve_usage_requests_total Requests by identity (user), its first group, model as named and "
                "status code.", "# TYPE llmserve_usage_requests_total counter"]
        out += ['llmserve_usage_requests_total{user="%s",group="%s",model="%s",code="%s"} %d'
                % (label(u), label(g), label(m), c, v) for (u, g, m, c), v in sorted(self.usage_requests.items())]
        out += ["# HELP llmserve_usage_tokens_total Tokens vLLM reported, by identity, its first group, model and kind "
                "(prompt, completion).", "# TYPE llmserve_usage_tokens_total counter"]
        out += ['llmserve_usage_tokens_total{user="%s",group="%s",model="%s",kind="%s"} %d'
                % (label(u), label(g), label(m), k, v) for (u, g, m, k), v in sorted(self.usage_tokens.items())]
        if self.store_up is not None:
            out += ["# HELP llmserve_quota_refusals_total Requests refused for a quota, by the quota's group and limit.",
                    "# TYPE llmserve_quota_refusals_total counter"]
            out += ['llmserve_quota_refusals_total{group="%s",limit="%s"} %d' % (label(g), lim, v)
                    for (g, lim), v in sorted(self.quota_refusals.items())]
            out += ["# HELP llmserve_quota_store_up 1 when the quota store (Redis) answered the last call.",
                    "# TYPE llmserve_quota_store_up gauge", "llmserve_quota_store_up %d" % self.store_up,
                    "# HELP llmserve_quota_store_errors_total Calls to the quota store that failed or timed out.",
                    "# TYPE llmserve_quota_store_errors_total counter", "llmserve_quota_store_errors_total %d" % self.store_errors]
        if self.guard_model is not None:
            out += ["# HELP llmserve_guard_verdicts_total The guard model's verdicts, by stage (prompt, response), verdict "
                    "(safe, unsafe, error), categories, model and group.", "# TYPE llmserve_guard_verdicts_total counter"]
            out += ['llmserve_guard_verdicts_total{stage="%s",verdict="%s",category="%s",model="%s",group="%s"} %d'
                    % (st, v, c, label(m), label(g), n) for (st, v, c, m, g), n in sorted(self.guard_verdicts.items())]
            out += ["# HELP llmserve_guard_duration_seconds Time the guard took to answer, by stage.",
                    "# TYPE llmserve_guard_duration_seconds summary"]
            for stage, (total, n) in sorted(self.guard_seconds.items()):
                out += ['llmserve_guard_duration_seconds_sum{stage="%s"} %.6f' % (stage, total),
                        'llmserve_guard_duration_seconds_count{stage="%s"} %d' % (stage, n)]
            out += ["# HELP llmserve_guard_up 1 when the guard model's backend answered its health check.",
                    "# TYPE llmserve_guard_up gauge", "llmserve_guard_up %d" % self.up.get(self.guard_model, 0)]
        return "\n".join(out) + "\n"


class Refused(Exception):
    """A refusal on the way to the backend, carrying the response to send."""

    def __init__(self, response, reason):
        super().__init__(reason)
        self.response, self.reason = response, reason


class FrontDoor:
    def __init__(self, config, environ=None, checks_health=True):
        environ = os.environ if environ is None else environ
        self.config = config
        self.checks_health = checks_health  # a worker's supervisor checks the backends for all
        self.models = config["models"]
        # Body "model" -> catalog model: the catalog names and every served name (LoRA adapters) of a backend.
        self.names = {}
        for model, backend in self.models.items():
            if backend.get("hidden"):
                continue  # the guard model, unless the admin offers it: not a name clients may send
            for served in [model] + list(backend["served_names"]):
                self.names.setdefault(served, model)
        usage = config.get("usage") or {}
        self.metrics = Metrics(self.models, usage.get("user_series", 1000))
        # Usage is counted when asked for, and always under quotas (they are counted in tokens).
        self.usage_on = bool(usage.get("enabled") or config.get("quotas"))
        self.usage_log = bool(usage.get("log"))
        self.quotas = Quotas(config["quotas"], environ.get("LLMSERVE_REDIS_PASSWORD", ""), self.metrics) \
            if config.get("quotas") else None
        self.settling = set()  # usage being recorded after an answer that ended early
        self.usage_lines = UsageLog()
        self.guard = Guard(config["guard"], self) if config.get("guard") else None
        self.metrics.guard_model = self.guard.model if self.guard else None
        self.keys, self.users = load_identities(config["identities_file"])
        self.internal_key = environ.get("LLMSERVE_INTERNAL_KEY", "")
        # Every replica signs with the cluster's key; a process started without one signs for itself alone.
        self.signing_key = (environ.get("LLMSERVE_SIGNING_KEY") or secrets.token_hex(32)).encode()
        self.large_slots = asyncio.Semaphore(int(config["large_body_slots"]))
        self.in_flight_total = 0
        self.draining = False
        # Each backend base URL (a model's, its fallback) and its kept-alive connections.
        self.origins = {url: Origin(url) for backend in self.models.values()
                        for url in (backend["url"], backend.get("fallback_url")) if url}
        # (method, raw target) -> route, for the targets that passed the allow list (a bounded set: models x endpoints).
        self.routes = {}
        self.tracing = Tracing(config["tracing"]) if config.get("tracing") else None

    # -- plumbing ---------------------------------------------------------------------------------------------
    async def lifetime(self, _app=None):
        """aiohttp cleanup context: the health loop (and the sweep of idle backend connections) lives as long as the
        app."""
        async def loop():
            while True:
                if self.checks_health:
                    await self.check_health()
                if self.quotas is not None:
                    await self.quotas.ping()
                for origin in self.origins.values():
                    origin.sweep()
                await asyncio.sleep(self.config["health_interval_s"])
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        for origin in self.origins.values():
            origin.sweep()
            for (dummy, writer), dummy in origin.idle:
                writer.transport.abort()
            origin.idle = []
        if self.settling:
            await asyncio.wait(list(self.settling), timeout=2)
        self.usage_lines.flush()
        if self.quotas is not None:
            self.quotas.redis.close()
        if self.tracing is not None:
            self.tracing.close()

    async def fetch(self, base, path, headers):
        """(status, body) of a GET to a backend; BackendError when it fails."""
        answer = await send(self.origins[base], "GET", path, headers, b"", self.config["connect_timeout_s"],
                            self.config["read_timeout_s"])
        try:
            return answer.status, await answer.read()
        finally:
            answer.finish()

    def known(self):
        return sorted(self.names)

    async def check_health(self):
        async def one(model, backend):
            try:
                status, dummy = await asyncio.wait_for(self.fetch(backend["url"], self.config["health_path"], {}), 5)
                self.metrics.up[model] = int(status == 200)
            except (BackendError, asyncio.TimeoutError):
                self.metrics.up[model] = 0
        await asyncio.gather(*(one(m, b) for m, b in self.models.items()))

    # -- identity ---------------------------------------------------------------------------------------------
    def sign(self, user, groups):
        return hmac.digest(self.signing_key, ("%s\n%s" % (user, groups)).encode(), "sha256").hex()

    def identify(self, headers, peer):
        """(user, groups) of a request as Traefik hands it to /auth, or None: who is calling, by the auth mode."""
        mode = self.config["auth_mode"]
        if mode == "api-key":
            value = headers.get("Authorization", "")
            if not value.startswith("Bearer ") or len(value) > 4096:
                return None
            # Keys are found by their SHA-256 (the file holds no key): the lookup compares digests, so its timing
            # tells nothing about the key's bytes.
            return self.keys.get(hashlib.sha256(value[7:].encode("utf-8", "surrogateescape")).hexdigest())
        if mode in ("basic", "forward"):
            user = headers.get(self.config["user_header"], "").strip()
            if not user:
                return None
            groups = set(self.users.get(user, ()))
            if mode == "forward":
                groups.update(g.strip() for g in headers.get(self.config["groups_header"], "").split(",") if g.strip())
            return user, tuple(sorted(groups))
        return "address:" + (headers.get("X-Real-Ip") or peer or "unknown"), ()

    def identity_headers(self, user, groups):
        joined = ",".join(groups)
        return {USER: user, GROUPS: joined, SIGNATURE: self.sign(user, joined)}

    def verified(self, request):
        """The signed identity Traefik copied from /auth, or (standalone) the one the request's own key gives."""
        user, signature = request.headers.get(USER), request.headers.get(SIGNATURE)
        if user is not None and signature is not None:
            groups = request.headers.get(GROUPS, "")
            if hmac.compare_digest(signature, self.sign(user, groups)):
                return user, groups
            return None
        found = self.identify(request.headers, request.remote)
        return (found[0], ",".join(found[1])) if found else None

    async def auth(self, request):
        """Traefik's forwardAuth: 200 with the identity headers, or 401 in OpenAI's format."""
        found = self.identify(request.headers, request.remote)
        if found is None:
            self.metrics.refuse("unauthenticated")
            return self.unauthenticated()
        return web.Response(status=200, headers=self.identity_headers(*found))

    def unauthenticated(self):
        if self.config["auth_mode"] == "api-key":
            return error(401, "Incorrect or missing API key. Send the header 'Authorization: Bearer <key>' with a key "
                              "your administrator gave you.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return error(401, "Not authenticated: sign in through %s." % ("the campus login" if self.config["auth_mode"] == "forward"
                                                                      else "basic authentication"), code="unauthenticated")

    async def error_page(self, request):
        """The page Traefik's errors middleware serves for its own refusals (rate and in-flight limits, no backend)."""
        status = int(request.match_info["status"])
        retry = {"Retry-After": str(int(self.config["retry_after_s"]))}
        if status == 429 and self.quotas is not None:
            # The errors middleware also replaces the gateway's own 429 (a quota): Traefik passes the request's
            # headers on, so the identity's quota is looked at again (nothing counted).
            identity = self.verified(request)
            if identity is not None:
                try:
                    refused = await self.quotas.check(identity[0], split_groups(identity[1]), "page", dry=True)
                except StoreError:
                    refused = None
                if refused is not None:
                    return self.over_quota(*refused)
        if status == 429:
            return error(429, "Rate limit reached: too many requests, or too many at once, from your key or address. "
                              "Retry after the time in the Retry-After header.", kind="requests",
                         code="rate_limit_exceeded", headers=retry)
        if status == 503 and self.quotas is not None and self.quotas.on_error == "deny" and self.metrics.store_up == 0:
            # The gateway's own 503 under on_redis_error deny, replaced by the errors middleware: said as it was.
            return self.quota_unavailable()
        if status == 503:
            return error(503, "The service is unavailable: no backend can take the request now.", kind="server_error",
                         code="service_unavailable", headers=retry)
        if status == 504:
            return error(504, "The backend did not answer in time.", kind="server_error", code="gateway_timeout")
        return error(status, "The gateway could not reach the service (status %d)." % status, kind="server_error",
                     code="bad_gateway")

    # -- the API ----------------------------------------------------------------------------------------------
    def route(self, request):
        """(model or None, prefix kind, path to send) of an allow-listed request, or raise Refused."""
        target = request.raw_path
        known = self.routes.get((request.method, target))
        if known is not None:
            return known
        if "?" in target or "#" in target:
            raise Refused(error(400, "Query strings are not part of this API: send parameters in the JSON body.",
                                code="invalid_path"), "invalid_path")
        segments = target.split("/")[1:]
        if not SAFE_TARGET.match(target) or any(s in ("", ".", "..") for s in segments):
            raise Refused(error(400, "Invalid request path: percent escapes, backslashes, dot segments and empty segments "
                                     "are refused.", code="invalid_path"), "invalid_path")
        match = API_PATH.match(target)
        endpoint = match and match.group("endpoint")
        if not match or endpoint not in ENDPOINTS:
            raise Refused(error(404, "Unknown API path %s. This endpoint serves %s under /v1/ and /models/<name>/v1/."
                                % (target, ", ".join("%s /v1/%s" % (m, e) for e, m in ENDPOINTS.items())),
                                code="not_found"), "not_found")
        if request.method != ENDPOINTS[endpoint]:
            raise Refused(error(405, "Use %s for /v1/%s." % (ENDPOINTS[endpoint], endpoint), code="method_not_allowed",
                                headers={"Allow": ENDPOINTS[endpoint]}), "method_not_allowed")
        name, prefix = match.group("model"), match.group("prefix")
        if name is not None and (name not in self.models or self.models[name].get("hidden")):
            raise Refused(error(404, "The model `%s` does not exist. Models: %s." % (name, ", ".join(sorted(self.models))),
                                code="model_not_found"), "model_not_found")
        if prefix is not None and prefix not in self.config["ab_tests"]:
            raise Refused(error(404, "Unknown API path %s." % target, code="not_found"), "not_found")
        self.routes[request.method, target] = found = name, prefix, "/v1/" + endpoint
        return found

    async def read_body(self, request):
        """The raw body within the limits: small ones at once, large ones in one of the large-body slots."""
        limit = self.config["max_request_body_bytes"]
        length = request.content_length
        if length is not None and length > limit:
            raise Refused(error(413, "Request body of %d bytes is larger than the limit of %d bytes." % (length, limit),
                                code="request_too_large"), "request_too_large")

        def too_large():
            return Refused(error(413, "Request body is larger than the limit of %d bytes." % limit, code="request_too_large"),
                           "request_too_large")

        async def read():
            chunks, size = [], 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large()
                chunks.append(chunk)
                self.metrics.buffered += len(chunk)
            return b"".join(chunks)
        if request.content.is_eof():
            # The whole body came with the head: taken as it is (nothing to wait for, no timer to set).
            body = request.content.read_nowait()
            if len(body) > limit:
                raise too_large()
            self.metrics.buffered += len(body)
            return body
        try:
            return await asyncio.wait_for(read(), self.config["body_timeout_s"])
        except asyncio.TimeoutError:
            raise Refused(error(408, "The request body did not arrive within %ss." % self.config["body_timeout_s"],
                                code="request_timeout"), "request_timeout") from None

    async def inspect(self, body):
        """(model, stream, include_usage) of the body: its top-level "model" (None when absent), whether it asks for a
        stream, and whether its stream_options ask for usage; Refused when the body is not a JSON object."""
        try:
            if len(body) <= self.config["small_body_bytes"]:
                doc = json.loads(body)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                found = doc.get("model")
                if found is not None and not isinstance(found, str):
                    raise ValueError("model is not a string")
                options = doc.get("stream_options")
                return found, doc.get("stream") is True, isinstance(options, dict) and options.get("include_usage") is True
            scan = top_level_fields(body)
            while True:
                next(scan)
                await asyncio.sleep(0)
        except StopIteration as done:
            return done.value
        except (ValueError, UnicodeDecodeError):
            raise Refused(error(400, "The request body is not a JSON object with a string 'model'.", code="invalid_json"),
                          "invalid_json") from None

    async def handle_api(self, request):
        """The API port's one handler: an `Expect: 100-continue` answered first, as aiohttp's router would."""
        expect = request.headers.get("Expect")
        if expect and request.version == (1, 1):
            if expect.lower() != "100-continue":
                return error(417, "Unknown Expect: %s" % expect, code="expectation_failed")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return await self.handle(request)

    async def handle(self, request):
        started = time.monotonic()
        model, status = "", 499
        slot = account = identity = None
        span = self.tracing.start(request) if self.tracing is not None else None
        try:
            name, prefix, path = self.route(request)
            identity = self.verified(request)
            if identity is None:
                self.metrics.refuse("unauthenticated")
                raise Refused(self.unauthenticated(), "unauthenticated")
            if self.in_flight_total >= self.config["max_in_flight"]:
                raise Refused(error(503, "The gateway is at its limit of requests in flight; retry shortly.", kind="server_error",
                                    code="overloaded", headers={"Retry-After": str(int(self.config["retry_after_s"]))}),
                              "overloaded")
            self.in_flight_total += 1
            try:
                if self.usage_on:
                    account = Account(identity[0], split_groups(identity[1]))
                    if self.quotas is not None and path != "/v1/models":
                        await self.admit(account)
                if path == "/v1/models":
                    response = await (self.list_models(request) if name is None else self.proxy(request, name, path, b"", identity))
                    model = name or ""
                    status = response.status
                    return response
                length = request.content_length
                if length is None or length > self.config["small_body_bytes"]:
                    try:
                        await asyncio.wait_for(self.large_slots.acquire(), self.config["slot_wait_s"])
                    except asyncio.TimeoutError:
                        raise Refused(error(503, "The gateway is busy with large request bodies; retry shortly.",
                                            kind="server_error", code="overloaded",
                                            headers={"Retry-After": str(int(self.config["retry_after_s"]))}), "busy") from None
                    slot = self.large_slots
                body = await self.read_body(request)
                held = len(body)
                try:
                    wanted = stream = include = None
                    if name is None or account is not None:
                        wanted, stream, include = await self.inspect(body)
                    if prefix is not None:
                        choices = self.config["ab_tests"][prefix]
                        name = random.choices([c["model"] for c in choices], [c["weight"] for c in choices])[0]
                    elif name is None:
                        name = self.pick(wanted)
                    model = name
                    if account is not None:
                        # The model as the client named it (an adapter's name) when it is one of this backend's.
                        account.model = wanted if self.names.get(wanted) == name else name
                        if stream and not include and path[4:] in STREAMED_USAGE:
                            body, account.strip = with_usage_asked(body), True
                    guarded = None
                    if self.guard is not None and self.guard.applies(name, split_groups(identity[1]), path[4:]):
                        guarded = await self.check_prompt(body, path[4:], name, identity)
                    response = await self.proxy(request, name, path, body, identity, slot, account, guarded)
                    slot = None  # released by proxy once the body is sent
                    status = response.status
                    return response
                finally:
                    self.metrics.buffered -= held
            finally:
                self.in_flight_total -= 1
        except Refused as refused:
            self.metrics.refuse(refused.reason)
            status = refused.response.status
            return refused.response
        except ClientGone as gone:
            status = gone.status
            return gone.response
        finally:
            if slot is not None:
                slot.release()
            self.metrics.count(model, status, time.monotonic() - started)
            if span is not None:
                self.tracing.end(span, model, self.models[model]["url"] if model in self.models else "", status, identity)
            if account is not None and not account.settled:
                # Refused, or an answer that ended early: its usage and quota place, settled beside the answer.
                task = asyncio.ensure_future(self.settle(account, status))
                self.settling.add(task)
                task.add_done_callback(self.settling.discard)

    async def check_prompt(self, body, endpoint, name, identity):
        """The guard's verdict on the prompt (when the policy checks prompts): Refused with 400 content_filter when it
        blocks, 503 guard_unavailable when the guard cannot say under on_error deny. What the answer's check needs
        (the conversation), or None when answers are not checked."""
        guard, kind = self.guard, GUARDED[endpoint]
        if len(body) > guard.max_body:
            raise Refused(error(413, "Request body of %d bytes is larger than the content filter takes (%d bytes)."
                                % (len(body), guard.max_body), code="request_too_large"), "request_too_large")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused(error(400, "The request body is not JSON.", code="invalid_json"), "invalid_json") from None
        turns = conversation_of(doc if isinstance(doc, dict) else {}, kind)
        groups = split_groups(identity[1])
        group = groups[0] if groups else ""
        if "prompt" in guard.check and turns:
            try:
                found = await guard.verdict(turns, "User", "prompt", name, group)
            except GuardError as exc:
                LOG.warning("guard: the prompt could not be checked (%s): %s", exc,
                            "refusing" if guard.on_error == "deny" else "letting it through")
                if guard.on_error == "deny":
                    raise Refused(guard.unavailable(), "guard_unavailable") from None
                found = ("safe", [])
            blocked = guard.blocked(found)
            if blocked:
                LOG.info("guard: prompt refused, model %s, categories %s, %s", name, ",".join(blocked),
                         guard.who(identity[0]))
                raise Refused(guard.refusal(blocked), "content_filter")
        if "response" in guard.check and kind != "responses":
            return turns, kind, group
        return None

    async def check_answer(self, raw, guarded, name):
        """A whole answer, its choices checked: those the guard blocks (or, under on_error deny, cannot check) are
        emptied with finish_reason content_filter."""
        turns, kind, group = guarded
        try:
            doc = json.loads(raw)
            choices = [(c.get("index", 0), (c.get("message") or {}).get("content") if kind == "chat" else c.get("text"))
                       for c in doc.get("choices") or ()]
        except (ValueError, AttributeError):
            return raw
        replace = []
        for index, text in choices:
            if not isinstance(text, str) or not text:
                continue
            try:
                blocked = self.guard.blocked(await self.guard.verdict(turns + [("Agent", text)], "Agent", "response", name, group))
            except GuardError as exc:
                LOG.warning("guard: an answer could not be checked (%s)", exc)
                blocked = ["unchecked"] if self.guard.on_error == "deny" else []
            if blocked:
                LOG.info("guard: answer replaced, model %s, categories %s", name, ",".join(blocked))
                replace.append(index)
        return filtered_answer(raw, kind, replace) if replace else raw

    async def admit(self, account):
        """The identity's quotas, before anything is read or sent: Refused (429 insufficient_quota, Retry-After) when
        one is spent; with the store unreachable, on_redis_error says (allow: go on uncounted; deny: 503)."""
        account.ticket = secrets.token_hex(8)
        try:
            refused = await self.quotas.check(account.user, account.groups, account.ticket)
        except StoreError as exc:
            LOG.warning("quota store: %s (%s)", exc, "serving uncounted" if self.quotas.on_error == "allow" else "refusing")
            if self.quotas.on_error == "allow":
                return
            self.metrics.quota_refused("", "store_unavailable")
            raise Refused(self.quota_unavailable(), "quota_unavailable") from None
        if refused is not None:
            self.metrics.quota_refused(refused[0].get("group", "default"), refused[1])
            raise Refused(self.over_quota(*refused), "insufficient_quota")
        account.admitted = True

    def quota_unavailable(self):
        return error(503, "Usage quotas cannot be checked now; retry shortly.", kind="server_error", code="quota_unavailable",
                     headers={"Retry-After": str(int(self.config["retry_after_s"]))})

    @staticmethod
    def over_quota(rule, limit, retry):
        who = "your group `%s`" % rule["group"] if rule.get("per") == "group" else (
            "each member of group `%s`" % rule["group"] if not rule.get("default") else "users without a group quota")
        what = limit.replace("_", " ")
        return error(429, "You exceeded your quota: %s %s for %s. It resets in %d s; ask your administrator for more."
                     % (rule[limit], what, who, retry), kind="insufficient_quota", code="insufficient_quota",
                     headers={"Retry-After": str(int(retry))})

    async def settle(self, account, status):
        """A request's usage: metrics, the usage log, and its tokens and in-flight place in the quota store. Once."""
        if account.settled:
            return
        account.settled = True
        self.metrics.used(account, status)
        if self.usage_log:
            self.usage_lines.add({"user": account.user, "groups": list(account.groups), "model": account.model,
                                  "status": status, "prompt_tokens": account.prompt, "completion_tokens": account.completion})
        if self.quotas is not None and (account.admitted or account.prompt or account.completion):
            await self.quotas.record(account.user, account.groups, account.ticket,
                                     account.prompt + account.completion, account.admitted)

    def pick(self, wanted):
        if (wanted is None or wanted == "") and self.config["default_model"]:
            wanted = self.config["default_model"]  # vLLM serves a request without "model" with its own model
        if wanted is None or wanted == "":
            raise Refused(error(400, "Missing 'model': name one of %s." % ", ".join(self.known()), code="missing_model",
                                param="model"), "missing_model")
        if wanted not in self.names:
            raise Refused(error(404, "The model `%s` does not exist. Models: %s." % (wanted, ", ".join(self.known())),
                                code="model_not_found", param="model"), "model_not_found")
        return self.names[wanted]

    def forward_headers(self, request, identity, name=None):
        headers = {k: v for k, v in request.headers.items() if forwarded(k)}
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = prior + ", " + peer if prior else peer
        if self.internal_key:
            headers["Authorization"] = "Bearer " + self.internal_key
        if name and self.models[name].get("client_affinity") and "x-session-id" not in {k.lower() for k in headers}:
            # The model's vllm-router (consistent_hash) keeps one session key on one replica: the caller's identity
            # unless the client names its own session.
            headers["X-Session-ID"] = identity[0]
        if self.tracing is not None:
            self.tracing.inject(request, headers)
        return headers

    async def proxy(self, request, name, path, body, identity, slot=None, account=None, guarded=None):
        backend = self.models[name]
        headers = self.forward_headers(request, identity, name)
        self.metrics.in_flight[name] += 1
        try:
            urls = [backend["url"]] + ([backend["fallback_url"]] if backend.get("fallback_url") else [])
            for attempt, base in enumerate(urls):
                try:
                    upstream = await send(self.origins[base], request.method, path, headers, body,
                                          self.config["connect_timeout_s"], self.config["read_timeout_s"])
                    break
                except BackendError as exc:
                    if not exc.unsent or attempt == len(urls) - 1:
                        raise
                    # Nothing was sent: the next URL (the model's own Service behind its router) may take it.
                    LOG.warning("model %s: backend %s failed before answering: %s", name, base, exc)
            if slot is not None:
                slot.release()  # the body is sent: its slot is free for the next large body
                slot = None
            try:
                return await self.relay(request, upstream, name, account, guarded)
            finally:
                upstream.finish()
        except BackendError as exc:
            LOG.warning("model %s: backend failed: %s", name, exc)
            return error(502, "The backend of model `%s` is not reachable." % name, kind="server_error", code="backend_unavailable")
        finally:
            if slot is not None:
                slot.release()
            self.metrics.in_flight[name] -= 1

    async def relay(self, request, upstream, name, account=None, guarded=None):
        headers = [(k, v) for k, v in upstream.headers if k.lower() not in HOP]
        if upstream.content_length is not None and upstream.content_length <= self.config["max_request_body_bytes"]:
            # A whole answer of known length (not a stream): read it, then send status, headers and body at once.
            raw = await upstream.read()
            if account is not None:
                if 200 <= upstream.status < 300:
                    account.take(usage_of_answer(raw))
                await self.settle(account, upstream.status)  # counted before the client has the answer
            if guarded is not None and upstream.status == 200:
                raw = await self.check_answer(raw, guarded, name)
            return web.Response(status=upstream.status, reason=upstream.reason or None, body=raw,
                                headers=CIMultiDict(headers))
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason or None)
        for key, value in headers:
            response.headers.add(key, value)
        checked = GuardStream(self.guard, *guarded[:2], name, guarded[2]) if guarded is not None and upstream.status == 200 else None
        if upstream.content_length is not None and checked is None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        usage = UsageStream(account) if account is not None and upstream.status == 200 else None
        # Each chunk is written as it arrives (SSE: one event at a time), never collected.
        try:
            while True:
                chunk = await upstream.piece()
                if upstream.done:
                    break  # the last piece goes out with the end of the answer, in one write
                if usage is not None:
                    chunk = usage.feed(chunk)
                if checked is not None:
                    chunk = await checked.feed(chunk)
                    if checked.stopped:
                        LOG.info("guard: stream ended, model %s, categories %s", name,
                                 ",".join(c for cs in checked.blocked.values() for c in cs))
                        break
                if not chunk:
                    continue
                await response.write(chunk)
        except ConnectionResetError:
            # The client left before the answer ended; finish() closes the backend connection, and vLLM aborts the
            # request.
            LOG.info("model %s: the client closed the connection before the answer ended", name)
            raise ClientGone(response, 499) from None
        except BackendError as exc:
            # The backend broke off an answer already begun: cutting the client's connection is the only way left to
            # say so (an OpenAI client then reports an incomplete answer rather than a short one).
            LOG.warning("model %s: the backend broke off the answer: %s", name, exc)
            if request.transport is not None:
                request.transport.close()
            raise ClientGone(response, 502) from None
        if checked is not None and checked.stopped:
            pass  # the content filter's end of the stream is the last piece
        else:
            if usage is not None:
                chunk = usage.feed(chunk) + usage.end()
            if checked is not None:
                chunk = await checked.feed(chunk, final=True)
        if account is not None:
            await self.settle(account, upstream.status)  # counted before the client has the end of the answer
        try:
            await response.write_eof(chunk)
        except ConnectionResetError:
            if chunk:
                LOG.info("model %s: the client closed the connection before the answer ended", name)
                raise ClientGone(response, 499) from None
            # else the whole answer was written: a client that closes after the last event ends normally
        return response

    async def list_models(self, request):
        """The union of every backend's /v1/models, asked with the internal key."""
        headers = {"Authorization": "Bearer " + self.internal_key} if self.internal_key else {}

        async def one(backend):
            try:
                return await self.fetch(backend["url"], "/v1/models", headers)
            except BackendError as exc:
                return None, str(exc).encode()
        listed = [n for n, b in self.models.items() if not b.get("hidden")]
        answers = await asyncio.gather(*(one(self.models[n]) for n in listed))
        data, seen = [], set()
        for (status, raw), name in zip(answers, listed):
            if status != 200:
                LOG.warning("model %s: /v1/models answered %s", name, status)
                continue
            for entry in json.loads(raw).get("data", []):
                if entry.get("id") not in seen:
                    seen.add(entry.get("id"))
                    data.append(entry)
        if not data and any(status != 200 for status, dummy in answers):
            return error(503, "No model backend answered.", kind="server_error", code="backend_unavailable")
        # The address Traefik recorded for this client: health.yml warns when it is a cluster-internal one.
        client = request.headers.get("X-Real-Ip") or (request.headers.get("X-Forwarded-For") or request.remote or "").split(",")[0].strip()
        return web.json_response({"object": "list", "data": data}, headers={"X-Llmserve-Client-Address": client})

    async def healthz(self, _request):
        return web.json_response({"status": "ok", "backends": self.metrics.up})

    async def readyz(self, _request):
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_page(self, _request):
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")


# -- tracing (config "tracing": docs/tracing.md) ---------------------------------------------------------------------
SPAN = "llmserve.span"


class Tracing:
    """The front door's span of each request ("llmserve.gateway"): a child of the caller's W3C trace context (Traefik's
    span), sent over OTLP by the OpenTelemetry SDK the vLLM image carries. The SDK is imported here, only when the
    config has `tracing`: with tracing off nothing is imported, nothing is sent and no header is added. The backend
    gets a new traceparent whose parent is this span (the router's and vLLM's spans are its children). Sampling follows
    the caller's decision; a request that comes without a trace starts one at sample_rate. The identity is recorded
    only with record_identity."""

    def __init__(self, config):
        # pylint: disable=import-outside-toplevel
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        if config.get("protocol", "grpc") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=config["endpoint"], insecure=True)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter(endpoint=config["endpoint"])
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.get("service_name") or "llmserve-gateway"}),
            sampler=ParentBased(TraceIdRatioBased(float(config.get("sample_rate", 1.0)))))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("llmserve.gateway")
        self.propagator = TraceContextTextMapPropagator()
        self.in_context, self.kind = trace.set_span_in_context, trace.SpanKind.SERVER
        self.error = trace.Status(trace.StatusCode.ERROR)
        self.record_identity = bool(config.get("record_identity"))

    def start(self, request):
        """The request's span, begun now; kept on the request for forward_headers."""
        span = self.tracer.start_span("llmserve.gateway", context=self.propagator.extract(request.headers), kind=self.kind,
                                      attributes={"http.request.method": request.method, "url.path": request.path})
        request[SPAN] = span
        return span

    def inject(self, request, headers):
        """The caller's traceparent and tracestate replaced by this span's context (flags keep the sampling decision)."""
        span = request.get(SPAN)
        if span is None:
            return
        for key in [k for k in headers if k.lower() in ("traceparent", "tracestate")]:
            del headers[key]
        self.propagator.inject(headers, context=self.in_context(span))

    def end(self, span, model, backend, status, identity):
        if span.is_recording():
            span.set_attribute("llmserve.model", model)
            span.set_attribute("http.response.status_code", int(status))
            if backend:
                span.set_attribute("llmserve.backend", backend)
            if self.record_identity and identity is not None:
                span.set_attribute("enduser.id", identity[0])
                span.set_attribute("llmserve.groups", identity[1])
            if status >= 500:
                span.set_status(self.error)
        span.end()

    def close(self):
        """Sends what is queued (bounded wait), then stops the exporter."""
        self.provider.force_flush(2000)
        self.provider.shutdown()


class ClientGone(Exception):
    """An answer that began and could not end: the response already sent, and the status to count."""

    def __init__(self, response, status):
        super().__init__("answer cut")
        self.response, self.status = response, status


def split_groups(joined):
    return tuple(g for g in joined.split(",") if g)


def identity_like(name):
    """A header naming an identity (or aliasing one with '_' or '.'): never taken from a client, never forwarded."""
    return re.sub(r"[_.]", "-", name.lower()).startswith(IDENTITY)


_FORWARDED = {}


def forwarded(name):
    """Whether a client's header goes on to the backend (not of one hop, not the key, not an identity); remembered for
    the first names seen (clients send the same few), worked out each time for the others."""
    kept = _FORWARDED.get(name)
    if kept is None:
        lower = name.lower()
        kept = lower not in HOP and lower != "authorization" and not identity_like(name)
        if len(_FORWARDED) < 1024:
            _FORWARDED[name] = kept
    return kept


def apps(config, environ=None, worker=False):
    """The API, auth and admin apps, sharing one FrontDoor (a worker's admin app is its supervisor's)."""
    door = FrontDoor(config, environ, checks_health=not worker)
    # The body limit is enforced by read_body (OpenAI-style 413); aiohttp's own limit stays out of the way.
    # Every path goes to one handler: aiohttp's low-level server, without an application's router (its route lookup cost
    # a tenth of the work a request takes). The body limit is enforced by read_body (OpenAI-style 413).
    api = web.Server(door.handle_api, access_log=None)
    auth = web.Application()
    auth.router.add_get("/auth", door.auth)
    auth.router.add_get(r"/error/{status:\d{3}}", door.error_page)
    return door, api, auth, admin_app(door)


def admin_app(view):
    admin = web.Application()
    admin.router.add_get("/healthz", view.healthz)
    admin.router.add_get("/readyz", view.readyz)
    admin.router.add_get("/metrics", view.metrics_page)
    return admin


async def start_site(app, where, config, reuse_port=None):
    if isinstance(app, web.Server):
        runner = web.ServerRunner(app, shutdown_timeout=float(config["drain_s"]))
    else:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=float(config["drain_s"]))
    await runner.setup()
    await web.TCPSite(runner, where["host"], int(where["port"]), reuse_port=reuse_port).start()
    return runner


def stop_on_signals():
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    return stopping


async def serve(config, control=None):
    """One process serving everything, or (control: its socket to the supervisor) a worker: API and auth ports only."""
    door, api, auth, admin = apps(config, worker=control is not None)
    stopping = stop_on_signals()
    lifetime = contextlib.asynccontextmanager(door.lifetime)(None)
    await lifetime.__aenter__()
    runners = [await start_site(api, config["listen"], config, reuse_port=control is not None or None),
               await start_site(auth, config["auth"], config, reuse_port=control is not None or None)]
    if control is None:
        runners.append(await start_site(admin, config["admin"], config))
        answering = None
    else:
        answering = asyncio.create_task(answer_supervisor(door, control, stopping))
    LOG.info("listening on %s:%s (auth %s, admin %s), models %s, event loop %s", config["listen"]["host"],
             config["listen"]["port"], config["auth"]["port"], config["admin"]["port"], ", ".join(sorted(config["models"])),
             type(asyncio.get_running_loop()).__module__)
    await stopping.wait()
    # SIGTERM (pod deletion, after the preStop pause): stop accepting on the API and auth ports, let answers in
    # progress finish within drain_s, then close; the admin port answers (readyz: draining) until the end.
    door.draining = True
    LOG.info("draining: %d requests in flight", door.in_flight_total)
    await asyncio.gather(*(runner.cleanup() for runner in runners[:2]))
    for runner in runners[2:]:
        await runner.cleanup()
    if answering is not None:
        answering.cancel()
    await lifetime.__aexit__(None, None, None)
    LOG.info("drained")


async def answer_supervisor(door, sock, stopping):
    """A worker's side of its control socket: "ready" once it listens, then its metrics for each numbered question. The
    supervisor gone (the socket closed): drain and exit."""
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"ready\n")
    while True:
        line = await reader.readline()
        if not line:
            if not stopping.is_set():
                LOG.warning("the supervisor is gone: draining")
                stopping.set()
            return
        writer.write(json.dumps(dict(door.metrics.snapshot(), seq=int(line))).encode() + b"\n")


class Worker:
    """One worker process of the supervisor, and its control socket."""

    START_S = 60

    def __init__(self, index):
        self.index, self.proc, self.reader, self.writer = index, None, None, None
        self.last = None  # its last snapshot: what /metrics counts for it when it does not answer, or has ended
        self.seq, self.started, self.lock = 0, 0.0, asyncio.Lock()

    async def start(self, argv, env):
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(argv + ["--worker", str(self.index), str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), env=env)
        finally:
            theirs.close()
        self.started, self.last = time.monotonic(), None
        self.reader, self.writer = await asyncio.open_connection(sock=ours)
        try:
            ready = await asyncio.wait_for(self.reader.readline(), self.START_S)
        except asyncio.TimeoutError:
            ready = b""
        if ready != b"ready\n":
            self.proc.kill()
            raise RuntimeError("worker %d did not start (exit status %s)" % (self.index, self.proc.wait()))

    async def snapshot(self, timeout):
        """Its counters now (numbered questions: a late answer to an earlier one is skipped)."""
        async with self.lock:
            self.seq += 1
            self.writer.write(b"%d\n" % self.seq)
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.reader.readline()
                    if not line:
                        raise ConnectionError("worker %d has gone" % self.index)
                    answer = json.loads(line)
                    if answer.pop("seq") == self.seq:
                        self.last = answer
                        return answer


class Supervisor:
    """`workers` worker processes on the API and auth ports; the admin port's one view of them all."""

    ASK_S = 2.0

    def __init__(self, config, path, environ=None):
        environ = os.environ if environ is None else environ
        self.config, self.draining = config, False
        # Health checks of the backends, once for every worker; the models' names for the metrics.
        self.door = FrontDoor(config, environ)
        self.env = dict(environ)
        # Workers must sign identities alike: without the cluster's key, one made here for all of them.
        self.env["LLMSERVE_SIGNING_KEY"] = self.door.signing_key.decode()
        self.argv = [sys.executable, os.path.abspath(__file__), path]
        self.workers = [Worker(i) for i in range(int(config["workers"]))]
        self.retired = Metrics(config["models"])  # the counters of workers that have ended

    async def ask_all(self):
        """How many workers answered within ASK_S (each answer updates its last snapshot)."""
        answers = await asyncio.gather(*(w.snapshot(self.ASK_S) for w in self.workers if w.proc.poll() is None),
                                       return_exceptions=True)
        return sum(1 for a in answers if not isinstance(a, BaseException))

    async def healthz(self, _request):
        answered = await self.ask_all()
        status = "ok" if answered == len(self.workers) else "unresponsive"
        return web.json_response({"status": status, "backends": self.door.metrics.up, "workers": answered},
                                 status=200 if status == "ok" else 503)

    async def readyz(self, _request):
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not any(w.proc.poll() is None for w in self.workers):
            return web.json_response({"status": "no worker"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_page(self, _request):
        await self.ask_all()
        total = Metrics(self.config["models"])
        total.add(self.retired.snapshot(), gauges=False)
        for worker in self.workers:
            if worker.last is not None:
                total.add(worker.last)
        total.up, total.guard_model = self.door.metrics.up, self.door.metrics.guard_model
        return web.Response(text=total.render(), content_type="text/plain", charset="utf-8")

    async def restart(self, worker):
        """A worker that ended (not asked to): its counters kept, a new one in its place (a second's pause when it
        ended young, so that a crash at start does not loop hot)."""
        LOG.warning("worker %d ended (exit status %s): starting it again", worker.index, worker.proc.returncode)
        if worker.last is not None:
            self.retired.add(worker.last, gauges=False)
        worker.last = None
        if time.monotonic() - worker.started < 10:
            await asyncio.sleep(1)
        while not self.draining:
            try:
                await worker.start(self.argv, self.env)
                return
            except (OSError, RuntimeError) as exc:
                LOG.error("%s; trying again", exc)
                await asyncio.sleep(1)

    async def run(self):
        stopping = stop_on_signals()
        try:
            await asyncio.gather(*(w.start(self.argv, self.env) for w in self.workers))
        except (OSError, RuntimeError) as exc:
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is None:
                    worker.proc.kill()
            raise SystemExit("the front door's workers did not start: %s" % exc) from None
        lifetime = contextlib.asynccontextmanager(self.door.lifetime)(None)
        await lifetime.__aenter__()
        admin = await start_site(admin_app(self), self.config["admin"], self.config)
        LOG.info("%d workers on %s:%s (auth %s), admin %s", len(self.workers), self.config["listen"]["host"],
                 self.config["listen"]["port"], self.config["auth"]["port"], self.config["admin"]["port"])
        restarting = {}
        while not stopping.is_set():
            for worker in self.workers:
                if worker.proc.poll() is not None and worker.index not in restarting:
                    restarting[worker.index] = asyncio.create_task(self.restart(worker))
            restarting = {i: t for i, t in restarting.items() if not t.done()}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.5)
        # SIGTERM: every worker drains (its API and auth ports close, answers in progress finish); the admin port
        # answers (readyz: draining, metrics of the draining workers) until the last has exited.
        self.draining = self.door.draining = True
        for task in restarting.values():
            task.cancel()
        LOG.info("draining %d workers", len(self.workers))
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        while any(w.proc.poll() is None for w in self.workers):
            await asyncio.sleep(0.2)
        await admin.cleanup()
        await lifetime.__aexit__(None, None, None)
        LOG.info("drained")


def main(argv):
    worker = argv[2:3] == ["--worker"] and len(argv) == 5
    logging.basicConfig(level=os.environ.get("LLMSERVE_FRONTDOOR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s " + ("worker %s " % argv[3] if worker else "") + "%(message)s")
    if len(argv) != 2 and not worker:
        raise SystemExit("usage: %s CONFIG.json" % argv[0])
    config = load_config(argv[1])
    if worker:
        # Its part of the pod's bounds (rounded up), so that all workers together hold what the config allows.
        for cap in ("max_in_flight", "large_body_slots"):
            config[cap] = -(-int(config[cap]) // config["workers"])
        work = serve(config, control=socket.socket(fileno=int(argv[4])))
    elif config["workers"] > 1:
        work = Supervisor(config, argv[1]).run()
    else:
        work = serve(config)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(work)


def event_loop_factory():
    """uvloop's event loop when it is importable (the vLLM image has it): its transports and timers cost a fraction of
    asyncio's own on every request. None: asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main(sys.argv)
