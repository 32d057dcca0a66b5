"""Shared slow fixtures of the integration suite: one real vLLM server on CPU for the whole session."""

from __future__ import annotations

import pytest

from vllm_server import VllmServer


@pytest.fixture(scope="session")
def vllm_server():
    """A ready real vLLM OpenAI server (tiny random Llama, served as 'tiny-llama') on 127.0.0.1.

    Built and started once per session (venv and model cached under ~/.cache/llmserve-tests/); stopped by pid.
    """
    with VllmServer("tiny-llama") as server:
        server.wait_ready(300)
        yield server
