"""Shared slow fixtures of the integration suite: one real vLLM server on CPU for the whole session, and the real
serving path (Traefik, front door, vllm-router, four vLLMs) for test_serving*.py."""

from __future__ import annotations

import concurrent.futures
import contextlib

import pytest

from traefik_stack import (ADDRESSES, AUTH_MODES, BASIC_USER, HOST, SERVING_KEY, SERVING_MODELS, EchoBackend,
                           ServingStack, find, frontdoor_for, make_secrets, render_serving)
from vllm_router import VllmGroup, VllmRouter
from vllm_server import VllmServer


@pytest.fixture(scope="session")
def vllm_server():
    """A ready real vLLM OpenAI server (tiny random Llama, served as 'tiny-llama') on 127.0.0.1.

    Built and started once per session (venv and model cached under ~/.cache/llmserve-tests/); stopped by pid.
    """
    with VllmServer("tiny-llama") as server:
        server.wait_ready(300)
        yield server


# --- The serving path (test_serving*.py): real Traefik + front door + vllm-router + vLLM, shared by the session. ---

@pytest.fixture(scope="session")
def serving_bundles(tmp_path_factory):
    """{'api-key': bundle, 'basic': bundle}: the serving catalog through the real render playbook, both at once."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = {mode: pool.submit(render_serving, tmp_path_factory.mktemp("serving-" + mode), mode) for mode in AUTH_MODES}
    return {mode: run.result() for mode, run in runs.items()}


@pytest.fixture(scope="session")
def serving_pki(tmp_path_factory):
    """The ingress role's self-signed CA and host certificate, and the basic-auth users file (role tasks + filter)."""
    return make_secrets(tmp_path_factory.mktemp("serving-pki"), HOST, [BASIC_USER])


@pytest.fixture(scope="session")
def serving_vllms():
    """Four real vLLM servers on CPU (the most this machine runs at once): tiny-a, tiny-b, and two replicas of
    tiny-multi, each on its own loopback address, all with the API key (as the rendered pods run in api-key mode)."""
    specs = {"tiny-a": "tiny-a", "tiny-b": "tiny-b", "tiny-multi-0": "tiny-multi", "tiny-multi-1": "tiny-multi"}
    with VllmGroup({k: (name, ADDRESSES[k]) for k, name in specs.items()}, api_key=SERVING_KEY, max_model_len=512) as servers:
        yield servers


@pytest.fixture(scope="session")
def serving_router(serving_bundles, serving_vllms):
    """The real vllm-router with the rendered Deployment's arguments (policy cache_aware, the catalog default) over
    tiny-multi's two replicas (--worker-urls: its Kubernetes service discovery cannot run here)."""
    (deployment,) = find(serving_bundles["api-key"], "Deployment", "vllm-tiny-multi-router")
    replicas = [serving_vllms["tiny-multi-0"].url, serving_vllms["tiny-multi-1"].url]
    with VllmRouter.from_deployment(deployment, replicas, ADDRESSES["router"]) as router:
        router.wait_ready(120, headers={"Authorization": "Bearer " + SERVING_KEY})
        yield router


@pytest.fixture(scope="session")
def serving(serving_bundles, serving_pki, serving_vllms, serving_router, tmp_path_factory):
    """api-key mode: real Traefik (rendered CRs, via the API stand-in) -> front door (rendered config) -> vLLM, or
    vllm-router -> two vLLMs."""
    bundle = serving_bundles["api-key"]
    urls = {"tiny-a": serving_vllms["tiny-a"].url, "tiny-b": serving_vllms["tiny-b"].url, "tiny-multi": serving_router.url}
    with frontdoor_for(bundle, urls, True, ADDRESSES["frontdoor"]) as door:
        services = {"llmserve-frontdoor": [(ADDRESSES["frontdoor"], door.config["listen"]["port"])]}
        with ServingStack(bundle, serving_pki, HOST, services, tmp_path_factory.mktemp("traefik-api-key")) as stack:
            stack.frontdoor, stack.vllms, stack.router, stack.bundle = door, serving_vllms, serving_router, bundle
            stack.client.headers["Authorization"] = "Bearer " + SERVING_KEY
            yield stack


@pytest.fixture(scope="session")
def serving_basic(serving_bundles, serving_pki, tmp_path_factory):
    """basic mode, from the second render: real Traefik (BasicAuth from the role's Secret) -> front door -> echo
    backends that show what arrives (the user header Traefik sets)."""
    bundle = serving_bundles["basic"]
    names = [m["name"] for m in SERVING_MODELS]
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in names}
        door = stack.enter_context(frontdoor_for(bundle, {n: e.url for n, e in echoes.items()}, False, ADDRESSES["frontdoor"]))
        services = {"llmserve-frontdoor": [(ADDRESSES["frontdoor"], door.config["listen"]["port"])]}
        serving = stack.enter_context(ServingStack(bundle, serving_pki, HOST, services,
                                                   tmp_path_factory.mktemp("traefik-basic")))
        serving.frontdoor, serving.bundle = door, bundle
        yield serving
