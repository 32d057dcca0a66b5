"""module_utils/_plan: the plan fact every role reads (enabled models, derived names, totals), from tables."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.filter import llmserve
from ansible_collections.llmserve.k3s.plugins.module_utils import _plan

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLE = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text(encoding="utf-8"))
DEFAULTS, CLASSES = ROLE["plan_model_defaults"], ROLE["plan_size_classes"]
NODES = [dict(name="workstation", gpu_count=4, gpu_name="NVIDIA L40", gpu_memory_gib=44.99, labels={"llmserve.io/gpu": "true"}),
         dict(name="cpu-node", gpu_count=0, gpu_name="", gpu_memory_gib=None, labels={})]
CATALOG = [
    {"name": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b", "gated": True,
     "max_model_len": 8192},
    {"name": "off.model", "model": "x/y", "params_b": 1.0, "enabled": False},
    {"name": "qwen.small", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5},
]


def _plan_of(**settings):
    return _plan.build_plan(CATALOG, NODES, DEFAULTS, CLASSES, settings)


def test_enabled_models_and_disabled_names():
    plan = _plan_of()
    assert plan["errors"] == []
    assert plan["enabled"] == ["llama-3.1-8b", "qwen.small"]
    assert [m["name"] for m in plan["models"]] == plan["enabled"]
    assert plan["disabled"] == ["off.model"]
    assert [m["name"] for m in plan["catalog"]] == ["llama-3.1-8b", "off.model", "qwen.small"]


def test_gpu_nodes_and_totals():
    plan = _plan_of()
    assert plan["gpu_nodes"] == ["workstation"]
    assert (plan["gpus_total"], plan["gpus_used"]) == (4, 2)


def test_derived_names_hostpath_and_local_path():
    shared = {m["name"]: m for m in _plan_of()["models"]}
    assert {m["claim_name"] for m in shared.values()} == {"llm-models"}
    per_model = {m["name"]: m for m in _plan_of(storage_mode="local-path")["models"]}
    assert per_model["qwen.small"]["claim_name"] == "llm-models-qwen-small"
    assert per_model["llama-3.1-8b"]["k8s_name"] == "vllm-llama-3-1-8b"
    assert per_model["llama-3.1-8b"]["selector"] == {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b"}
    assert per_model["qwen.small"]["path"] == "/models/qwen.small/v1"
    assert _plan_of(storage_mode="local-path")["storage"]["claims"] == ["llm-models-llama-3-1-8b", "llm-models-qwen-small"]


def test_one_internal_secret_in_every_auth_mode_and_no_user_key_in_the_plan():
    for mode in ("api-key", "basic", "forward", "none"):
        plan = _plan_of(auth_mode=mode)
        assert plan["auth"] == {"mode": mode, "internal_secret": "llmserve-internal",
                                "identities_secret": "llmserve-gateway-identities", "hf_token_secret": "hf-token"}
        # The models no longer carry the users' keys in any form (Secret, env or arguments): only the gateway checks them.
        assert not [k for m in plan["catalog"] for k in m if k.startswith("api_key")]


def test_token_and_offline_follow_predownload():
    online = {m["name"]: m for m in _plan_of()["models"]}
    assert online["llama-3.1-8b"]["needs_token"] is True and online["qwen.small"]["needs_token"] is False
    offline = {m["name"]: m for m in _plan_of(predownload=True)["models"]}
    assert offline["llama-3.1-8b"]["needs_token"] is False and offline["llama-3.1-8b"]["offline"] is True


def test_default_model_is_the_setting():
    assert _plan_of()["ingress"]["default_model"] == ""
    assert _plan_of(default_model="qwen.small")["ingress"]["default_model"] == "qwen.small"


def test_catalog_errors_are_carried():
    plan = _plan.build_plan([{"name": "Bad_Name", "model": "x"}], NODES, DEFAULTS, CLASSES)
    assert plan["models"] == [] and any("Bad_Name" in e and "DNS-1123" in e for e in plan["errors"])


def test_measured_weights_replace_the_estimate():
    sizes = {"workstation": {"qwen.small": 1024 ** 3 * 3, "llama-3.1-8b": "not a number"}, "cpu-node": {}}
    measured = _plan.measured_weights(["workstation", "cpu-node"], sizes)
    assert measured == {"qwen.small": 3.0}
    estimated = {m["name"]: m for m in _plan_of()["models"]}["qwen.small"]["weights_gib"]
    planned = {m["name"]: m for m in _plan.build_plan(CATALOG, NODES, DEFAULTS, CLASSES, measured=measured)["models"]}
    assert estimated != 3.0 and planned["qwen.small"]["weights_gib"] == 3.0 and planned["qwen.small"]["weights_measured"]


def test_measured_weights_feed_the_gpu_sizing_of_a_preset_model():
    base = {m["name"]: m for m in _plan_of()["models"]}["llama-3.1-8b"]["sizing"]
    heavier = {m["name"]: m for m in _plan.build_plan(CATALOG, NODES, DEFAULTS, CLASSES, measured={"llama-3.1-8b": 20.0})["models"]}
    sizing = heavier["llama-3.1-8b"]["sizing"]
    assert sizing["weights_gib"] == 20.0
    assert sizing["kv_cache_gib"] < base["kv_cache_gib"] - 4


def test_measured_weights_filter_reads_hostvars():
    hostvars = {"workstation": {"llmserve_model_sizes": {"qwen.small": 2 * 1024 ** 3}}, "other": {}}
    assert llmserve.measured_weights(["workstation", "other"], hostvars) == {"qwen.small": 2.0}


@pytest.mark.parametrize("storage_mode, fit, removed_set, phrases", [
    ("nfs", True, [], ['llmserve_storage_mode (plan_storage_mode) is "nfs": unknown storage mode']),
    ("hostpath", "maybe", [], ['plan_fit is "maybe". Fix: use true']),
    ("longhorn", "declared", ["ingress_frontdoor_port", "vllm_models_port"],
     ["ingress_frontdoor_port is no longer a setting: the plan decides it once (llmserve_plan.ports.frontdoor) for every "
      "role. vllm_models_port is no longer a setting: the plan decides it once (llmserve_plan.ports.vllm)"]),
    ("nfs", "sometimes", ["vllm_models_port"], ["unknown storage mode", "plan_fit is", "vllm_models_port is no longer"]),
])
def test_the_plan_role_settings_every_problem_at_once(storage_mode, fit, removed_set, phrases):
    removed = {"ingress_frontdoor_port": "llmserve_plan.ports.frontdoor", "vllm_models_port": "llmserve_plan.ports.vllm"}
    problems = _plan.setting_problems(storage_mode, fit, removed_set, removed)
    assert len(problems) == len(phrases), problems
    for problem, phrase in zip(problems, phrases):
        assert phrase in problem and "Fix" in problem


@pytest.mark.parametrize("storage_mode", _plan.STORAGE_MODES)
@pytest.mark.parametrize("fit", [True, False, "declared", "True", "false"])
def test_good_plan_role_settings_have_no_problem(storage_mode, fit):
    assert _plan.setting_problems(storage_mode, fit, []) == []
