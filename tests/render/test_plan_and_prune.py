"""One plan, one bundle, exactly what is applied, and what a full run prunes — with the real render playbook.

No Kubernetes API server runs here: "the cluster" below is the earlier render's objects as k8s_info would list
them after an apply (status added), and the apply and prune lists are the collection's own pure code over the
bundle the render wrote (plugins/module_utils/_apply.py, through the same filters the apply tasks call).
"""

from __future__ import annotations

import copy

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.filter import llmserve
from ansible_collections.llmserve.k3s.plugins.module_utils import _apply, _bundle
from playbook import ROOT, run_playbook


AB = {"enabled": True, "path": "/ab", "backends": [{"model": "llama-3.1-8b", "weight": 90}, {"model": "mixtral-8x7b", "weight": 10}]}
EVERYTHING = list(_bundle.COMPONENT_ORDER)


def _catalog_without_mixtral():
    with open(ROOT / "inventories" / "workstation" / "group_vars" / "all" / "models.yml", encoding="utf-8") as handle:
        catalog = yaml.safe_load(handle)["llmserve_models"]
    for entry in catalog:
        if entry["name"] == "mixtral-8x7b":
            entry["enabled"] = False
    return catalog


def _render(renders, label, extra):
    return renders.bundle(extra_vars=dict({"llmserve_storage_mode": "local-path"}, **extra), label=label)[:2]


@pytest.fixture(scope="module")
def before(renders):
    """The workstation with A/B on, the device plugin, the in-flight limit and mixtral enabled (local-path storage)."""
    return _render(renders, "before", {"ingress_ab_test": AB})


@pytest.fixture(scope="module")
def after(renders):
    """The same inventory changed: GPU Operator instead of the device plugin, A/B off, no in-flight limit, mixtral off."""
    return _render(renders, "after", {"llmserve_gpu_stack": "gpu-operator", "ingress_in_flight": {"enabled": False, "amount": 8},
                                      "llmserve_models": _catalog_without_mixtral()})


def _listed(bundle):
    """The bundle's objects as the cluster lists them once applied: claims bound, server fields added."""
    out = []
    for obj in bundle.values():
        live = copy.deepcopy(obj)
        live["metadata"].update(uid="0d6f1c2a-0000-4000-8000-000000000001", resourceVersion="1000")
        live["status"] = {"phase": "Bound"} if obj["kind"] in ("PersistentVolumeClaim", "PersistentVolume") else {}
        out.append(live)
    return [{"resources": out}]


def _names(pruned):
    return sorted((p["component"], p["kind"], p["name"]) for p in pruned)


def test_a_disabled_model_appears_in_no_component(after):
    dest, bundle = after
    texts = {str(p.relative_to(dest)): p.read_text(encoding="utf-8") for p in dest.rglob("*.yaml")}
    assert [path for path, text in texts.items() if "mixtral" in text.lower()] == []
    components = {_apply.component_of(path).split("/")[0] for path in bundle}
    assert {"models", "storage", "ingress", "monitoring", "namespace"} <= components
    quota = bundle["namespace/resourcequota-llm-serving-quota.yaml"]
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"  # the plan's GPU total, whatever the catalog
    claims = sorted(o["metadata"]["name"] for o in bundle.values() if o["kind"] == "PersistentVolumeClaim")
    assert claims == ["llm-models-deepseek-coder-v2-lite", "llm-models-llama-3-1-8b"]


def test_a_disabled_model_is_no_health_target(tmp_path):
    """health.yml against closed ports: the endpoints it checks are the plan's enabled models only."""
    urls = {name: {"service": "http://127.0.0.1:9"} for name in ("llama-3.1-8b", "deepseek-coder-v2-lite", "mixtral-8x7b")}
    result = run_playbook("health.yml", "inventories/workstation", extra_vars={
        "llmserve_models": _catalog_without_mixtral(), "llmserve_health_endpoints": ["service"], "llmserve_health_urls": urls,
        "llmserve_health_timeout": 0, "llmserve_health_completion_probe": False})
    assert result.returncode != 0
    checked = [line for line in result.stdout.splitlines() if "http://127.0.0.1:9" in line and "(item=" in line]
    assert any("llama-3.1-8b service" in line for line in checked) and any("deepseek-coder-v2-lite service" in line for line in checked)
    assert not any("mixtral" in line for line in checked), checked


def test_apply_sends_exactly_the_rendered_files(workstation):
    dest, bundle, dummy = workstation
    read = llmserve.bundle_objects(str(dest))
    assert read == bundle
    steps = llmserve.apply_steps(read, EVERYTHING)
    sent = [(f, o) for s in steps for f, o in zip(s["files"], s["objects"])]
    assert sorted(f for f, dummy2 in sent) == sorted(bundle)
    assert all(o == bundle[f] for f, o in sent)
    assert steps[0]["id"] == "definitions" and {o["kind"] for o in steps[0]["objects"]} == {"CustomResourceDefinition", "Namespace"}
    waited = set()
    for step in steps:
        waited.update(step["wait_crds"])
        for obj in step["objects"]:
            if not _apply.builtin(obj["apiVersion"]):
                assert _apply.crd_name(obj) in waited, (obj["kind"], step["id"])
    assert "podmonitors.monitoring.coreos.com" in steps[-1]["wait_crds"]


def test_full_run_prunes_what_each_component_no_longer_has(before, after):
    pruned = llmserve.prune_list(_listed(before[1]), after[1], EVERYTHING)
    names = _names(pruned)
    for expected in [("gpu", "DaemonSet", "nvidia-device-plugin"),               # device plugin -> GPU Operator
                     ("ingress", "Middleware", "llm-in-flight"),                 # a middleware dropped
                     ("models/mixtral-8x7b", "Deployment", "vllm-mixtral-8x7b"),  # a model removed ...
                     ("models/mixtral-8x7b", "Service", "vllm-mixtral-8x7b"), ("models/mixtral-8x7b", "LLMConfig", "mixtral-8x7b")]:
        assert expected in names, (expected, names)
    # A/B off and the model gone change the front door's config (one ConfigMap, applied again): no ingress object is
    # left behind but the dropped middleware.
    assert [n for c, dummy, n in names if c == "ingress"] == ["llm-in-flight"]
    assert any(c == "monitoring" and "mixtral" in n for c, dummy, n in names), names
    after_ids = {_apply.identity(o) for o in after[1].values()}
    assert not [p for p in pruned if (_apply.group_of(p["apiVersion"]), p["kind"], p["namespace"], p["name"]) in after_ids]
    # Everything that left the bundle goes, except the data: mixtral's bound claim stays unless asked for.
    gone = {_apply.identity(o) for o in before[1].values()} - after_ids
    kept = {i for i in gone if i[1] in _apply.PROTECTED}
    assert kept == {("", "PersistentVolumeClaim", "llm-serving", "llm-models-mixtral-8x7b")}
    assert {(_apply.group_of(p["apiVersion"]), p["kind"], p["namespace"], p["name"]) for p in pruned} == gone - kept
    forced = llmserve.prune_list(_listed(before[1]), after[1], EVERYTHING, True)
    assert ("storage", "PersistentVolumeClaim", "llm-models-mixtral-8x7b") in _names(forced)


def test_a_model_tag_run_prunes_nothing_outside_its_model(before, after):
    live = _listed(before[1])
    assert llmserve.prune_list(live, after[1], _apply.run_scope(["llama-3.1-8b"], ["llama-3.1-8b", "mixtral-8x7b"])) == []
    only = llmserve.prune_list(live, after[1], _apply.run_scope(["mixtral-8x7b"], ["llama-3.1-8b", "mixtral-8x7b"]))
    assert {p["component"] for p in only} == {"models/mixtral-8x7b"}


def test_every_rendered_object_is_labelled_and_of_a_prunable_kind(workstation, multinode, custom, before, after):
    kinds = {(a, k) for a, k, dummy in _apply.KINDS}
    for bundle in (workstation[1], multinode[1], custom[1], before[1], after[1]):
        for path, obj in bundle.items():
            assert (obj["apiVersion"], obj["kind"]) in kinds, path
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "llmserve.k3s", path
            assert labels["llmserve.io/component"] == path.split("/")[0], path
