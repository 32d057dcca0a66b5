"""LoRA adapters for real: vLLM 0.32 on CPU started with the rendered arguments (one server for the module), the tiny
Llama and random adapters built here (no download); through real Traefik and the front door; runtime loading and
unloading through the collection's module (llmserve.k3s.vllm_lora), same process.

Not real here: k3s (the Deployment's arguments run as a local process: the pod's `vllm serve MODEL` becomes
`python -m vllm.entrypoints.openai.api_server --model MODEL`, --host/--port are the test's, -O0 added; Kubernetes'
$(VAR) expansion of the ConfigMap slots is done by _lora.expand), the GPU (vLLM's CPU backend).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import textwrap
import urllib.request

import pytest

from frontdoor import INTERNAL_KEY
from lora_adapter import build_adapter
from playbook import render, run_playbook
from traefik_stack import (ADDRESSES, HOST, SERVING_KEY, ServingStack, find, frontdoor_dns, frontdoor_for,
                           frontdoor_services, make_secrets)
from k8s_schema import load_bundle
from vllm_server import VllmServer, ensure_tiny_model

from ansible_collections.llmserve.k3s.plugins.module_utils import _lora

BASE = "tiny-base"
ADAPTER = "tiny-lora"
CATALOG = [{"name": BASE, "model": "org/tiny", "params_b": 0.01, "max_model_len": 256, "max_loras": 2,
            "adapters": [{"name": ADAPTER, "source": "./adapters/tiny-lora"}]}]
PROMPT = "The quick brown fox"


class RenderedVllm(VllmServer):
    """vLLM started with a rendered Deployment's arguments (expanded as Kubernetes does)."""

    def __init__(self, args, **kwargs):
        super().__init__(BASE, env={"VLLM_API_KEY": INTERNAL_KEY, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, **kwargs)
        self.rendered = list(args)

    def command(self):
        args = list(self.rendered)
        args[0:1] = ["--model", str(ensure_tiny_model())]
        for flag, value in (("--host", "127.0.0.1"), ("--port", str(self.port))):
            args[args.index(flag) + 1] = value
        return super().command()[:3] + args + ["-O0"]


def _expanded_args(bundle):
    (deployment,) = find(bundle, "Deployment", "vllm-" + BASE)
    (config_map,) = find(bundle, "ConfigMap", "vllm-%s-lora" % BASE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(config_map["data"])
    return _lora.expand(container["args"], env), env


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """The rendered bundle (model cache = a temp folder holding the adapter, mounted there), and vLLM started with it."""
    cache = tmp_path_factory.mktemp("model-cache")
    build_adapter(cache / "adapters" / "tiny-lora", rank=8, seed=1)
    dest = tmp_path_factory.mktemp("lora-render") / "bundle"
    result = render(dest, extra_vars={"llmserve_models": CATALOG, "llmserve_model_cache_path": str(cache),
                                      "vllm_models_cache_mount": str(cache)})
    assert result.returncode == 0, result.stdout[-4000:]
    bundle = load_bundle(dest)
    args, env = _expanded_args(bundle)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    with RenderedVllm(args) as server:
        server.wait_ready(400)
        yield {"bundle": bundle, "server": server, "cache": cache, "args": args, "tmp": tmp_path_factory.mktemp("lora-run")}


def _call(server, path, body=None):
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + INTERNAL_KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _greedy(server, model):
    answer = _call(server, "/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                               "logprobs": 1, "return_token_ids": True})
    choice = answer["choices"][0]
    return answer, choice.get("token_ids"), choice["logprobs"]["token_logprobs"]


def test_the_rendered_arguments_serve_the_adapter_with_its_parent(lora):
    args = lora["args"]
    assert args[args.index("--max-lora-rank") + 1] == "8"  # read from the adapter's adapter_config.json at render time
    listed = {m["id"]: m for m in _call(lora["server"], "/v1/models")["data"]}
    assert listed[ADAPTER]["parent"] == BASE
    assert listed[ADAPTER]["root"] == str(lora["cache"] / "adapters" / "tiny-lora")


def test_a_completion_naming_the_adapter_is_the_adapters(lora):
    base, base_ids, base_lps = _greedy(lora["server"], BASE)
    tuned, tuned_ids, tuned_lps = _greedy(lora["server"], ADAPTER)
    assert tuned["model"] == ADAPTER and base["model"] == BASE
    # A random adapter may stop at once: compare the first token's id and log-probability, not only the text.
    assert (tuned_ids, tuned_lps) != (base_ids, base_lps)
    assert tuned_ids[0] != base_ids[0] or abs(tuned_lps[0] - base_lps[0]) > 1e-3


@pytest.fixture(scope="module")
def edge(lora, tmp_path_factory):
    """Real Traefik (rendered CRs) -> the front door (rendered config: the adapter in served_names) -> that vLLM."""
    pki = make_secrets(tmp_path_factory.mktemp("lora-pki"), HOST)
    logs = tmp_path_factory.mktemp("lora-hops")
    bundle = lora["bundle"]
    with contextlib.ExitStack() as stack:
        door = stack.enter_context(frontdoor_for(bundle, {BASE: lora["server"].url}, ADDRESSES["frontdoor"], log_dir=logs))
        assert door.config["models"][BASE]["served_names"] == [ADAPTER]
        stack_ = stack.enter_context(ServingStack(bundle, pki, HOST, frontdoor_services(door), logs, dns=frontdoor_dns(bundle, door)))
        stack_.client.headers["Authorization"] = "Bearer " + SERVING_KEY
        yield stack_


@pytest.mark.parametrize("path", ["/v1/completions", "/models/%s/v1/completions" % BASE])
def test_the_adapter_by_name_through_traefik_and_the_front_door(edge, path):
    answer = edge.client.request("POST", path, {"model": ADAPTER, "prompt": PROMPT, "max_tokens": 2, "temperature": 0})
    assert answer.status == 200, answer.body[:500]
    assert json.loads(answer.body)["model"] == ADAPTER


def test_models_list_through_the_edge_has_the_adapter(edge):
    answer = edge.client.request("GET", "/v1/models")
    assert answer.status == 200, answer.body[:500]
    listed = {m["id"]: m for m in json.loads(answer.body)["data"]}
    assert listed[ADAPTER]["parent"] == BASE


def test_an_unknown_adapter_gets_openais_404(edge):
    answer = edge.client.request("POST", "/v1/completions", {"model": "tiny-nope", "prompt": PROMPT, "max_tokens": 1})
    assert answer.status == 404, answer.body[:500]
    assert json.loads(answer.body)["error"]["code"] in ("model_not_found", 404, "404")


def _sync(lora, adapters):
    play = lora["tmp"] / "sync.yml"
    play.write_text(textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - llmserve.k3s.vllm_lora:
                urls: ["{{ url }}"]
                model: "{{ base }}"
                adapters: "{{ adapters }}"
                api_key: "{{ key }}"
        """), encoding="utf-8")
    result = run_playbook(str(play), "inventories/workstation", extra_vars={
        "url": lora["server"].url, "base": BASE, "adapters": adapters, "key": INTERNAL_KEY})
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def test_an_added_adapter_loads_without_a_restart_and_a_removed_one_is_gone(lora):
    server = lora["server"]
    pid = server.proc.pid
    second = build_adapter(lora["cache"] / "adapters" / "tiny-lora-2", rank=8, seed=2)
    first = str(lora["cache"] / "adapters" / "tiny-lora")
    output = _sync(lora, [{"name": ADAPTER, "path": first}, {"name": "tiny-lora-2", "path": str(second)}])
    assert "changed=1" in output
    listed = {m["id"]: m for m in _call(server, "/v1/models")["data"]}
    assert listed["tiny-lora-2"]["parent"] == BASE
    assert _call(server, "/v1/completions", {"model": "tiny-lora-2", "prompt": PROMPT, "max_tokens": 1})["model"] == "tiny-lora-2"
    output = _sync(lora, [{"name": "tiny-lora-2", "path": str(second)}])
    assert "changed=1" in output
    listed = {m["id"] for m in _call(server, "/v1/models")["data"]}
    assert ADAPTER not in listed and "tiny-lora-2" in listed
    assert server.proc.pid == pid and server.proc.poll() is None
    # Back as rendered, for any test after this one.
    _sync(lora, [{"name": ADAPTER, "path": first}])


def test_the_vllm_dashboards_lora_panel_reads_what_vllm_exports(lora):
    """The vLLM dashboard's LoRA panel: its metric, with every label it groups by (model_name and pod come from the
    scrape), is on the real vLLM's /metrics once a request named the adapter; the adapter slots are the rendered
    --max-loras."""
    board = json.loads((pathlib.Path(__file__).resolve().parents[2] / "roles/monitoring/files/dashboards/llmserve-vllm.json")
                       .read_text(encoding="utf-8"))
    (expr,) = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if "lora_requests_info" in t["expr"]]
    grouped = set(re.findall(r"\w+", re.search(r"by \(([^)]*)\)", expr).group(1))) - {"model_name", "pod"}
    _greedy(lora["server"], ADAPTER)
    with urllib.request.urlopen(lora["server"].url + "/metrics", timeout=30) as answer:
        page = answer.read().decode()
    series = re.findall(r"^vllm:lora_requests_info\{([^}]*)\}", page, re.M)
    assert series, page[:2000]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', series[-1]))
    assert grouped <= set(labels), (grouped, labels)
    args = lora["args"]
    assert labels["max_lora"] == args[args.index("--max-loras") + 1]
