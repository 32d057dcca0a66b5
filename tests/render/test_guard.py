"""The guard model on the cluster side (issue 18), through the real render playbook: a catalog model with role: guard
planned and placed like any other (the workstation catalog plus a 1B guard still fits its four GPUs), the front door's
guard section with the guard kept out of the clients' model list, and a bad policy refused in preflight before anything
is written. The gateway's side runs for real in tests/unit/test_frontdoor_guard.py and tests/integration/test_guard.py."""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKSTATION = yaml.safe_load((ROOT / "inventories/workstation/group_vars/all/models.yml").read_text())["llmserve_models"]
GUARD = {"name": "llama-guard-3-1b", "model": "meta-llama/Llama-Guard-3-1B", "role": "guard", "params_b": 1.5,
         "gated": True, "dtype": "bfloat16", "max_model_len": 8192}
CATALOG = WORKSTATION + [GUARD]
SERVED = [m["name"] for m in WORKSTATION if m.get("enabled", True)]
POLICY = {"enabled": True, "model": "llama-guard-3-1b", "models": SERVED[:1], "groups": ["students"],
          "check": ["prompt", "response"], "block": ["S1", "S9", "S11"], "on_error": "deny"}

CASES = {
    "no-model": ({"enabled": True}, "llmserve_guard names no guard model. Fix: set llmserve_guard.model to a catalog model "
                                    "with role: guard (llama-guard-3-1b)"),
    "not-a-guard": ({"enabled": True, "model": SERVED[0]}, "llmserve_guard.model %r has role 'serve'" % SERVED[0]),
    "disabled-guard": ({"enabled": True, "model": "llama-guard-3-1b"}, "llmserve_guard.model 'llama-guard-3-1b' is disabled"),
    "unknown-category": (dict(POLICY, block=["S1", "S15", "violence"]), "llmserve_guard.block has unknown categories 'S15', 'violence'"),
    "unknown-model": (dict(POLICY, models=["gpt-4"]), "llmserve_guard.models names 'gpt-4'"),
    "on-error": (dict(POLICY, on_error="maybe"), "llmserve_guard.on_error is 'maybe'"),
}


def _catalog(case):
    if case == "disabled-guard":
        return WORKSTATION + [dict(GUARD, enabled=False)]
    return CATALOG


PREFETCH = {"bad-" + case: {"extra_vars": {"llmserve_models": _catalog(case), "llmserve_guard": spec[0]}, "tags": "ingress"}
            for case, spec in CASES.items()}
PREFETCH["guard"] = {"extra_vars": {"llmserve_models": CATALOG, "llmserve_guard": POLICY}}
PREFETCH["bad-role"] = {"extra_vars": {"llmserve_models": WORKSTATION + [dict(GUARD, role="moderator")]}, "tags": "ingress"}


@pytest.mark.parametrize("case", sorted(CASES) + ["role"])
def test_a_bad_guard_policy_fails_in_preflight_before_anything_is_written(case, renders):
    dest, result = renders.run(label="bad-" + case, **PREFETCH["bad-" + case])
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    expected = CASES[case][1] if case in CASES else "role: 'moderator' is not a role"
    assert expected in out.replace("\\n", "\n"), out[-3000:]
    assert "Fix" in out or "fix" in out
    assert not dest.exists(), sorted(map(str, dest.rglob("*")))


@pytest.fixture(scope="module")
def guarded(renders):
    return renders.bundle(label="guard", **PREFETCH["guard"])


def test_the_guard_is_planned_placed_and_deployed_like_any_model(guarded):
    """The workstation's three models and the 1B guard (the render plans them, and fails on a catalog that does not
    fit): every model has its Deployment, and all their GPUs together are the workstation's four."""
    folder, objects, output = guarded
    gpus = {}
    for obj in objects.values():
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].startswith("vllm-") and not obj["metadata"]["name"].endswith("-router"):
            (container,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"]
            gpus[obj["metadata"]["name"]] = obj["spec"]["replicas"] * int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert set(gpus) == {"vllm-" + n.replace(".", "-") for n in SERVED} | {"vllm-llama-guard-3-1b"}, gpus
    assert gpus["vllm-llama-guard-3-1b"] == 1 and sum(gpus.values()) == 4, gpus


def test_the_front_door_gets_the_policy_and_hides_the_guard(guarded):
    folder, objects, output = guarded
    (config_map,) = [o for o in objects.values() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "llmserve-frontdoor"]
    config = json.loads(config_map["data"]["config.json"])
    assert config["guard"] == {"model": "llama-guard-3-1b", "models": SERVED[:1], "groups": ["students"],
                               "check": ["prompt", "response"], "block": ["S1", "S9", "S11"], "on_error": "deny",
                               "timeout_s": 10, "stream_check_chars": 400, "max_body_bytes": 1048576, "log_identity": False}
    assert config["models"]["llama-guard-3-1b"]["hidden"] is True
    assert not any(b.get("hidden") for n, b in config["models"].items() if n != "llama-guard-3-1b")


def test_the_guard_alerts_pass_promtool_unit_tests(guarded, tmp_path):
    """The rendered llmserve.guard group alone, against tests/render/data/guard-alerts.test.yml: LlmserveGuardDown
    fires when no front door reaches the guard for 2 minutes (not while one does), LlmserveGuardErrors on failed checks."""
    import shutil

    from prometheus import promtool, rules_file

    folder, objects, output = guarded
    (rule,) = [o for o in objects.values() if o["kind"] == "PrometheusRule" and o["metadata"]["name"] == "llmserve-alerts"]
    rule = dict(rule, spec={"groups": [g for g in rule["spec"]["groups"] if g["name"] == "llmserve.guard"]})
    assert [r["alert"] for r in rule["spec"]["groups"][0]["rules"]] == ["LlmserveGuardDown", "LlmserveGuardErrors"]
    rules_file(rule, tmp_path / "guard-rules.yml")
    shutil.copy(ROOT / "tests/render/data/guard-alerts.test.yml", tmp_path / "guard-alerts.test.yml")
    tested = promtool("test", "rules", tmp_path / "guard-alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout
