# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the vllm_models template: the vLLM server's arguments and environment, the router's arguments; thin
wrappers over _vllm_container."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _vllm_container


def _planned(model, filter_name):
    if not isinstance(model, dict) or "name" not in model:
        raise AnsibleFilterError("%s expects a planned model (an item of llmserve_plan.models)" % filter_name)
    return model


def vllm_server_args(model, port=8000, otlp_endpoint=""):
    """`vllm serve` arguments of a planned model; see _vllm_container.server_args."""
    return _vllm_container.server_args(_planned(model, "vllm_server_args"), port, otlp_endpoint)


def vllm_server_env(model, settings):
    """The vLLM container's env list; see _vllm_container.server_env for the settings."""
    return _vllm_container.server_env(_planned(model, "vllm_server_env"), settings)


def vllm_router_args(model, settings):
    """The vllm-router's arguments; see _vllm_container.router_args for the settings."""
    return _vllm_container.router_args(_planned(model, "vllm_router_args"), settings)


def vllm_rollout_strategy(model):
    """The model Deployment's strategy; see _vllm_container.rollout_strategy."""
    return _vllm_container.rollout_strategy(_planned(model, "vllm_rollout_strategy"))


def vllm_startup_failure_threshold(model):
    """The startup probe's failureThreshold (10 s periods over the startup budget)."""
    return _vllm_container.startup_failure_threshold(_planned(model, "vllm_startup_failure_threshold"))


class FilterModule:
    def filters(self):
        return {"vllm_server_args": vllm_server_args, "vllm_server_env": vllm_server_env, "vllm_router_args": vllm_router_args,
                "vllm_rollout_strategy": vllm_rollout_strategy, "vllm_startup_failure_threshold": vllm_startup_failure_threshold}
