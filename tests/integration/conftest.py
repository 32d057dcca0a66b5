"""Shared slow fixtures of the integration suite: one real vLLM server on CPU for the whole session, and the real
serving path (Traefik, front door, vllm-router, four vLLMs) for test_serving*.py."""

from __future__ import annotations

import concurrent.futures
import contextlib

import pytest

from frontdoor import INTERNAL_KEY, identities_file
from traefik_stack import (ADDRESSES, AUTH_MODES, BASIC_USER, HOST, SERVING_KEY, SERVING_MODELS, EchoBackend,
                           ServingStack, find, frontdoor_dns, frontdoor_for, frontdoor_services, make_secrets,
                           render_serving)
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
def serving_logs(tmp_path_factory):
    """One folder for every hop's log of the serving path (Traefik, front doors, router, vLLMs), kept after the run."""
    folder = tmp_path_factory.mktemp("serving-hops")
    print(f"\nserving path logs: {folder}")
    return folder


@pytest.fixture(scope="session")
def serving_vllms(serving_logs):
    """Four real vLLM servers on CPU (the most this machine runs at once): tiny-a, tiny-b, and two replicas of
    tiny-multi, each on its own loopback address, each with the cluster's internal key in VLLM_API_KEY, as the
    rendered pods get it from the llmserve-internal Secret."""
    specs = {"tiny-a": "tiny-a", "tiny-b": "tiny-b", "tiny-multi-0": "tiny-multi", "tiny-multi-1": "tiny-multi"}
    with VllmGroup({k: (name, ADDRESSES[k]) for k, name in specs.items()}, env={"VLLM_API_KEY": INTERNAL_KEY},
                   max_model_len=512, log_dir=serving_logs) as servers:
        yield servers


@pytest.fixture(scope="session")
def serving_router(serving_bundles, serving_vllms, serving_logs):
    """The real vllm-router with the rendered Deployment's arguments (policy cache_aware, the catalog default) over
    tiny-multi's two replicas (--worker-urls: its Kubernetes service discovery cannot run here)."""
    (deployment,) = find(serving_bundles["api-key"], "Deployment", "vllm-tiny-multi-router")
    replicas = [serving_vllms["tiny-multi-0"].url, serving_vllms["tiny-multi-1"].url]
    with VllmRouter.from_deployment(deployment, replicas, ADDRESSES["router"], log_dir=serving_logs) as router:
        router.wait_ready(120, headers={"Authorization": "Bearer " + INTERNAL_KEY})
        yield router


def serving_urls(vllms, router):
    """Each model's backend as the front door config names it; tiny-multi: its router, and for the router's loss the
    model's own Service (played by one replica)."""
    return {"tiny-a": vllms["tiny-a"].url, "tiny-b": vllms["tiny-b"].url,
            "tiny-multi": (router.url, vllms["tiny-multi-0"].url)}


@pytest.fixture(scope="session")
def serving(serving_bundles, serving_pki, serving_vllms, serving_router, serving_logs):
    """api-key mode: real Traefik (rendered CRs, via the API stand-in; its forwardAuth to the gateway) -> two front
    doors (rendered config, the serving keys' identities) -> vLLM, or vllm-router -> two vLLMs."""
    bundle = serving_bundles["api-key"]
    urls = serving_urls(serving_vllms, serving_router)
    with contextlib.ExitStack() as stack:
        doors = [stack.enter_context(frontdoor_for(bundle, urls, ADDRESSES[name], log_dir=serving_logs))
                 for name in ("frontdoor", "frontdoor-1")]
        serving = stack.enter_context(ServingStack(bundle, serving_pki, HOST, frontdoor_services(*doors), serving_logs,
                                                   dns=frontdoor_dns(bundle, doors[0])))
        serving.frontdoor, serving.frontdoors = doors[0], doors
        serving.vllms, serving.router, serving.bundle = serving_vllms, serving_router, bundle
        serving.client.headers["Authorization"] = "Bearer " + SERVING_KEY
        yield serving


@pytest.fixture(scope="session")
def serving_basic(serving_bundles, serving_pki, serving_logs):
    """basic mode, from the second render: real Traefik (BasicAuth from the role's Secret, then the gateway) -> front
    door -> echo backends that show what arrives."""
    bundle = serving_bundles["basic"]
    names = [m["name"] for m in SERVING_MODELS]
    with contextlib.ExitStack() as stack:
        echoes = {n: stack.enter_context(EchoBackend(n, ADDRESSES["echo"])) for n in names}
        door = stack.enter_context(frontdoor_for(bundle, {n: e.url for n, e in echoes.items()}, ADDRESSES["frontdoor"],
                                                 identities=identities_file(users={BASIC_USER["name"]: ["lab"]}),
                                                 log_dir=serving_logs))
        serving = stack.enter_context(ServingStack(bundle, serving_pki, HOST, frontdoor_services(door), serving_logs,
                                                   dns=frontdoor_dns(bundle, door)))
        serving.frontdoor, serving.bundle, serving.echoes = door, bundle, echoes
        yield serving
