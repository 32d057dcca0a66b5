"""Bad ingress, auth and GPU settings fail in preflight, naming the variable, before anything is written or applied.

Choices are refused by the roles' argument specs ("ingress_tls_mode must be one of ..."), cross-field rules by the
preflight checks, which report every problem at once. Each case runs the real playbooks/render.yml (or, for credentials
that only an apply needs, the same with llmserve_apply=true and a kubeconfig that points nowhere: the run must fail
before it would contact a cluster). Cases refused by the same task, with no variable and no message in common, share
a run (tests/lib/batches.py): each case's own message must be in it.
"""

from __future__ import annotations

import json

import pytest
import yaml

from batches import flat, pack
from playbook import render

APPLY = {"llmserve_apply": True, "llmserve_kubeconfig": "/nonexistent/kubeconfig"}
AB = {"enabled": True, "path": "/ab", "backends": [{"model": "llama-3.1-8b", "weight": 50}, {"model": "mixtral-8x7b", "weight": 50}]}
# The task that refuses a case: an argument spec, the plan role's check or a role's preflight check.
SPEC, GPU_SPEC, PLAN, CHECK, GPU = "ingress-spec", "gpu-spec", "plan", "ingress", "gpu"

# id -> (extra vars, the case's own message, the task that refuses it, the messages it makes)
CASES = {
    "rate-average-zero": ({"ingress_rate_limit": {"average": 0, "period": "1s", "burst": 5}},
                          'ingress_rate_limit is {"average": 0, "period": "1s", "burst": 5}', CHECK, "rate"),
    "rate-burst-zero": ({"ingress_rate_limit": {"average": 5, "period": "1s", "burst": 0}},
                        'ingress_rate_limit is {"average": 5, "period": "1s", "burst": 0}: average must be a whole number > 0, '
                        "burst >= 1", CHECK, "rate"),
    "rate-source-gone": ({"ingress_rate_limit": {"average": 5, "period": "1s", "burst": 5, "source": "auth-header"}},
                         "drop source and ip_depth", CHECK, "rate"),
    "address-rate-period": ({"ingress_address_rate_limit": {"average": 5, "period": "often", "burst": 5}},
                            'ingress_address_rate_limit is {"average": 5, "period": "often", "burst": 5}', CHECK, "address-rate"),
    "frontdoor-answer-short": ({"ingress_max_answer_s": 30}, "ingress_max_answer_s 30, ", CHECK, "frontdoor-limits"),
    "frontdoor-small-body-large": ({"ingress_frontdoor_small_body_bytes": 20971520},
                                   "ingress_frontdoor_small_body_bytes 20971520, ", CHECK, "frontdoor-limits"),
    "frontdoor-slots-zero": ({"ingress_frontdoor_large_body_slots": 0}, "ingress_frontdoor_large_body_slots 0, ", CHECK,
                             "frontdoor-limits"),
    "frontdoor-workers-zero": ({"ingress_frontdoor_workers": 0}, "ingress_frontdoor_workers 0 (1 to 64)", CHECK, "frontdoor-limits"),
    "allow-list-range": ({"ingress_ip_allow_list": ["10.0.0.0/8", "10.1.2.300/24"]}, 'hold ["10.1.2.300/24"]', CHECK, "ip"),
    "trusted-ip-host-bits": ({"ingress_trusted_ips": ["192.0.2.1/24"]}, 'hold ["192.0.2.1/24"]', CHECK, "ip"),
    "cert-manager-no-issuer": ({"llmserve_ingress_tls_mode": "cert-manager"},
                               'ingress_tls_mode) is "cert-manager" with ingress_tls_secret "llm-ingress-tls" and '
                               'ingress_cert_manager_issuer ""', CHECK, "tls"),
    "tls-mode-unknown": ({"llmserve_ingress_tls_mode": "letsencrypt"}, "ingress_tls_mode must be one of", SPEC, "tls"),
    "ab-weight-zero": ({"ingress_ab_test": dict(AB, backends=[
        {"model": "llama-3.1-8b", "weight": 0}, {"model": "mixtral-8x7b", "weight": 10}])},
        '[{"model": "llama-3.1-8b", "weight": 0}, {"model": "mixtral-8x7b", "weight": 10}]}: it needs', CHECK, "ab"),
    "ab-unknown-model": ({"ingress_ab_test": dict(AB, backends=[
        {"model": "llama-3.1-8b", "weight": 1}, {"model": "gpt-5", "weight": 1}])},
        '{"model": "gpt-5", "weight": 1}]}: it needs', CHECK, "ab"),
    "ab-disabled-model": ({"ingress_ab_test": dict(AB, backends=[
        {"model": "llama-3.1-8b", "weight": 1}, {"model": "llama-3.1-8b-multi", "weight": 1}])},
        '{"model": "llama-3.1-8b-multi", "weight": 1}]}: it needs a path such as /ab (not /v1 or /models) and two backends, '
        "each {model, weight} with an enabled catalog model", CHECK, "ab"),
    "api-key-without-keys": (dict(APPLY, llmserve_auth_mode="api-key"), "llmserve_api_keys (ingress_api_keys) is empty", CHECK, "auth"),
    "api-key-too-short": (dict(APPLY, llmserve_auth_mode="api-key", llmserve_api_keys=["short"]), "llmserve_api_keys[0]", CHECK,
                          "auth"),
    "basic-without-users": (dict(APPLY, llmserve_auth_mode="basic"),
                            "llmserve_basic_auth_users (ingress_basic_auth_users) is empty", CHECK, "auth"),
    "basic-short-password": ({"llmserve_auth_mode": "basic", "llmserve_basic_auth_users": [{"name": "bob", "password": "x"}]},
                             "llmserve_basic_auth_users[0]", CHECK, "auth"),
    "basic-user-colon": ({"llmserve_auth_mode": "basic", "llmserve_basic_auth_users": [{"name": "a:b", "password": "long-enough-pw"}]},
                         "llmserve_basic_auth_users[0].name: 'a:b' holds ':'", CHECK, "auth"),
    "forward-without-address": ({"llmserve_auth_mode": "forward"}, 'ingress_forward_auth.address is "" while', CHECK, "auth"),
    "auth-mode-unknown": ({"llmserve_auth_mode": "oauth"}, "ingress_auth_mode must be one of", SPEC, "auth"),
    "host-not-dns": ({"llmserve_ingress_host": "LLM_server.local"}, 'llmserve_ingress_host (ingress_host) is "LLM_server.local"',
                     CHECK, "host"),
    "host-is-ip": ({"llmserve_ingress_host": "192.0.2.10"}, 'llmserve_ingress_host (ingress_host) is "192.0.2.10"', CHECK, "host"),
    "default-model-unknown": ({"llmserve_ingress_default_model": "gpt-5"},
                              'llmserve_ingress_default_model (ingress_default_model) is "gpt-5"', CHECK, "default-model"),
    "accelerator-unknown": ({"llmserve_accelerator": "tpu"}, "llmserve_accelerator", GPU_SPEC, "accelerator"),
    # The body limit is also the small bodies' ceiling: both messages.
    "body-limit-zero": ({"ingress_max_request_body_bytes": 0}, "ingress_max_request_body_bytes 0: amount and the body limit", CHECK,
                        ("body", "frontdoor-limits")),
    # The ports are the plan's (llmserve_plan.ports), decided once: a role setting that copied one is refused by name.
    "frontdoor-port-removed": ({"ingress_frontdoor_metrics_port": 8080}, "ingress_frontdoor_metrics_port is no longer a setting",
                               PLAN, "frontdoor-port"),
    "netpol-port-removed": ({"llm_namespace_frontdoor_auth_port": 9090}, "llm_namespace_frontdoor_auth_port is no longer a "
                            "setting: the plan decides it once (llmserve_plan.ports.frontdoor_auth)", PLAN, "netpol-port"),
    "alias-strategy-unknown": ({"ingress_alias_headers_strategy": "drop"}, "ingress_alias_headers_strategy must be one of", SPEC,
                               "alias"),
    "time-slicing-zero": ({"llmserve_gpu_time_slicing_replicas": 0}, "llmserve_gpu_time_slicing_replicas", GPU, "time-slicing"),
}

RUNS, RUN_OF = pack({case: (spec[0], spec[2], spec[3]) for case, spec in CASES.items()})
# Every run starts in the session's render pool when the module starts; the tests read them in turn.
PREFETCH = {label: {"extra_vars": extra} for label, extra in RUNS.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_before_anything_is_written(case, renders):
    message = CASES[case][1]
    label = RUN_OF[case]
    dest, result = renders.run(label=label, **PREFETCH[label])
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    assert message in flat(out), out[-3000:]
    # The refusing task is the case's own: an argument spec, or a preflight check.
    failed = "FAILED!"
    assert failed in out
    task = out.split(failed)[0].split("TASK [")[-1]
    assert ("Validating arguments" in task) == CASES[case][2].endswith("spec"), task[:200]
    # Nothing was written, nothing applied: the failing check is a preflight task of the first play tasks.
    assert not dest.exists(), sorted(map(str, dest.rglob("*")))
    assert "Apply" not in task


def test_the_cases_share_few_runs_and_a_run_holds_one_case_per_message():
    assert len(RUNS) <= len(CASES) // 3
    for label in RUNS:
        members = [case for case in CASES if RUN_OF[case] == label]
        checks = [c for case in members for c in ((CASES[case][3],) if isinstance(CASES[case][3], str) else CASES[case][3])]
        assert len(checks) == len(set(checks)), (label, members)
        assert len({CASES[case][2] for case in members}) == 1, (label, members)


def test_valid_settings_pass_the_same_checks(tmp_path):
    """The counterpart: edge values that are valid render (so the checks above do not refuse everything)."""
    extra = {"ingress_rate_limit": {"average": 1, "period": "1s", "burst": 1},
             "ingress_address_rate_limit": {"average": 1, "period": "1s", "burst": 1, "ip_depth": 0},
             "ingress_max_answer_s": 600, "ingress_frontdoor_small_body_bytes": 10485760, "ingress_frontdoor_prestop_s": 0,
             "ingress_ip_allow_list": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
             "llmserve_ingress_host": "a.b-c.example",
             "ingress_ab_test": dict(AB, backends=[{"model": "llama-3.1-8b", "weight": 50}, {"model": "qwen-small", "weight": 50}]),
             "llmserve_auth_mode": "basic", "llmserve_accelerator": "nvidia", "llmserve_gpu_time_slicing_replicas": 2,
             # Every run plans the catalog first: on half an L40 the seed's mixtral and deepseek do not fit.
             "llmserve_models": [{"name": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
                                  "max_model_len": 8192},
                                 {"name": "qwen-small", "model": "Qwen/Qwen2.5-0.5B-Instruct", "params_b": 0.5}]}
    result = render(tmp_path / "bundle", extra_vars=extra, tags="ingress,gpu")
    assert result.returncode == 0, result.stdout[-3000:]
    # The A/B split is the front door's (no TraefikService any more): its config carries both weights.
    config = yaml.safe_load((tmp_path / "bundle" / "ingress" / "configmap-llmserve-frontdoor.yaml").read_text())["data"]["config.json"]
    assert json.loads(config)["ab_tests"] == {"/ab": extra["ingress_ab_test"]["backends"]}
