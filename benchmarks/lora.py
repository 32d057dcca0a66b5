"""LoRA adapters on the CPU vLLM (one run, printed): time to first token and tokens/s of the base model and of one
adapter on the same prompts (greedy, streamed, one request at a time), and the time from the runtime-load path
(llmserve.k3s.vllm_lora through ansible-playbook, what `--tags <model>` runs after the rollout) to a new adapter
answering. vLLM 0.32 on CPU with the tiny random Llama and random rank-8 adapters built here; no GPU, no k3s.

Run: make benchmarks, or .venv/bin/python benchmarks/lora.py
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

from frontdoor import INTERNAL_KEY  # noqa: E402
from lora_adapter import build_adapter  # noqa: E402
from playbook import run_playbook  # noqa: E402
from vllm_server import VLLM_VERSION, VllmServer  # noqa: E402

PROMPTS = ["The quick brown fox", "Kubernetes schedules pods", "vLLM serves large language models", "Hello, how are you"]
MAX_TOKENS = 32


def timed(url, model, prompt):
    """(seconds to the first token, tokens/s after it) of one streamed greedy completion."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
                       "ignore_eos": True}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body, headers={
        "Authorization": "Bearer " + INTERNAL_KEY, "Content-Type": "application/json"})
    sent = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(request, timeout=300) as answer:
        for line in answer:
            if line.startswith(b"data: {"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    done = time.perf_counter()
    return first - sent, (tokens - 1) / (done - first) if tokens > 1 and done > first else 0.0


def measure(url, model):
    timed(url, model, "warm up")
    runs = [timed(url, model, p) for p in PROMPTS]
    return statistics.median(r[0] for r in runs) * 1000.0, statistics.median(r[1] for r in runs)


def sync(work, url, adapters):
    play = work / "sync.yml"
    play.write_text(textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - llmserve.k3s.vllm_lora: {urls: ["{{ url }}"], model: tiny-base, adapters: "{{ adapters }}", api_key: "{{ key }}"}
        """), encoding="utf-8")
    result = run_playbook(str(play), "inventories/workstation", extra_vars={"url": url, "adapters": adapters, "key": INTERNAL_KEY})
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:])


def main():
    with tempfile.TemporaryDirectory(prefix="lora-bench.") as tmp:
        work = pathlib.Path(tmp)
        first = build_adapter(work / "adapters" / "tiny-lora", rank=8, seed=1)
        args = ["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2", "--max-cpu-loras", "4", "--lora-modules",
                json.dumps({"name": "tiny-lora", "path": str(first), "base_model_name": "tiny-base"})]
        env = {"VLLM_API_KEY": INTERNAL_KEY, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        with VllmServer("tiny-base", extra_args=args, env=env, log_dir=work) as server:
            server.wait_ready(400)
            print("vLLM %s on CPU, tiny Llama, rank-8 adapter on q_proj/v_proj; %d prompts, %d tokens each, median"
                  % (VLLM_VERSION, len(PROMPTS), MAX_TOKENS))
            print("%-12s %10s %10s" % ("model", "TTFT ms", "tokens/s"))
            for model in ("tiny-base", "tiny-lora"):
                ttft, rate = measure(server.url, model)
                print("%-12s %10.1f %10.1f" % (model, ttft, rate))
            second = build_adapter(work / "adapters" / "tiny-lora-2", rank=8, seed=2)
            started = time.perf_counter()
            sync(work, server.url, [{"name": "tiny-lora", "path": str(first)}, {"name": "tiny-lora-2", "path": str(second)}])
            loaded = time.perf_counter()
            timed(server.url, "tiny-lora-2", PROMPTS[0])
            answered = time.perf_counter()
            print("runtime load: ansible-playbook with llmserve.k3s.vllm_lora %.1f s (Ansible's start-up included), "
                  "first answer of the new adapter %.2f s later, %.1f s in all, pid %d unchanged: %s"
                  % (loaded - started, answered - loaded, answered - started, server.proc.pid, server.proc.poll() is None))


if __name__ == "__main__":
    main()
