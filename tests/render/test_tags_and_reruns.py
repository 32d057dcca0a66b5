"""Tag runs, second runs and catalog changes, with the real render playbook."""

from __future__ import annotations

import shutil

import pytest
import yaml

from k8s_schema import load_bundle, load_yaml_docs
from playbook import ROOT, recap, render


def _catalog():
    """A fresh copy of the workstation inventory's catalog."""
    with open(ROOT / "inventories" / "workstation" / "group_vars" / "all" / "models.yml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)["llmserve_models"]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file()}


def _copy(bundle, tmp_path):
    dest = tmp_path / "bundle"
    shutil.copytree(bundle[0], dest)
    return dest


def _kustomization(folder):
    return load_yaml_docs(folder / "kustomization.yaml")[0]["resources"]


STORAGE_MODES = ("hostpath", "local-path", "longhorn")
# The module's renders into fresh folders (extra vars, --tags), started in the session's pool when the module starts;
# the renders into a copy of a bundle run in the tests themselves.
FRESH = {"model-tag": ({}, "llama-3.1-8b"), "models-tag": ({}, "models"), "namespace-tag": ({}, "namespace"),
         "cluster-tag": ({}, "cluster"), "vllm_models-tag": ({}, "vllm_models"),
         "predownload": ({"llmserve_models_predownload": True}, "llama-3.1-8b")} | {
             "storage-" + mode: ({"llmserve_storage_mode": mode}, "storage") for mode in STORAGE_MODES}


PREFETCH = {label: {"extra_vars": extra, "tags": tags} for label, (extra, tags) in FRESH.items()}


def _fresh(renders, label):
    """(folder, CompletedProcess) of one of the module's fresh renders."""
    return renders.run(label=label, **PREFETCH[label])


def test_model_tag_renders_that_model_alone(renders):
    out, result = _fresh(renders, "model-tag")
    assert result.returncode == 0, result.stdout[-3000:]
    files = _files(out)
    expected = ("deployment-vllm-llama-3-1-8b.yaml", "llmconfig-llama-3.1-8b.yaml", "service-vllm-llama-3-1-8b.yaml")
    assert files == ["kustomization.yaml"] + sorted("models/llama-3.1-8b/" + f for f in expected)
    assert sorted(_kustomization(out)) == files[1:]


def test_models_tag_renders_every_model_and_nothing_else(renders, workstation):
    out, result = _fresh(renders, "models-tag")
    assert result.returncode == 0, result.stdout[-3000:]
    objects = load_bundle(out)
    assert objects == {p: o for p, o in workstation[1].items() if p.startswith("models/")}


def test_namespace_tag_renders_no_model(renders):
    out, result = _fresh(renders, "namespace-tag")
    assert result.returncode == 0, result.stdout[-3000:]
    assert {p.split("/")[0] for p in _files(out)} == {"kustomization.yaml", "namespace"}


def test_model_tag_on_a_full_bundle_touches_only_that_model(tmp_path, workstation):
    folder = _copy(workstation, tmp_path)
    before = _snapshot(folder)
    catalog = _catalog()
    catalog[0]["max_model_len"] = 16384
    assert catalog[0]["name"] == "llama-3.1-8b"
    result = render(folder, extra_vars={"llmserve_models": catalog}, tags="llama-3.1-8b")
    assert result.returncode == 0, result.stdout[-3000:]
    after = _snapshot(folder)
    changed = sorted(p for p in after if after[p] != before.get(p))
    assert changed == ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml", "models/llama-3.1-8b/llmconfig-llama-3.1-8b.yaml"]
    assert sorted(after) == sorted(before)
    assert recap(result.stdout)["changed"] == 1


def test_second_render_changes_nothing(tmp_path, workstation):
    folder = _copy(workstation, tmp_path)
    before = _snapshot(folder)
    result = render(folder)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0
    assert _snapshot(folder) == before


def test_check_mode_changes_nothing(tmp_path, multinode):
    folder = _copy(multinode, tmp_path)
    before = _snapshot(folder)
    result = render(folder, inventory="inventories/multinode", extra_args=["--check"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0
    assert _snapshot(folder) == before


def test_check_mode_reports_a_change_without_writing(tmp_path, workstation):
    folder = _copy(workstation, tmp_path)
    before = _snapshot(folder)
    catalog = _catalog()
    catalog[1]["max_model_len"] = 8192
    result = render(folder, extra_vars={"llmserve_models": catalog}, extra_args=["--check"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 1
    assert _snapshot(folder) == before


def test_removed_and_disabled_models_leave_the_bundle(tmp_path, workstation):
    folder = _copy(workstation, tmp_path)
    kept = {k: v for k, v in _snapshot(folder).items() if "llama-3.1-8b/" in str(k)}
    catalog = [m for m in _catalog() if m["name"] != "mixtral-8x7b"]
    deepseek = next(m for m in catalog if m["name"] == "deepseek-coder-v2-lite")
    deepseek["enabled"] = False
    result = render(folder, extra_vars={"llmserve_models": catalog})
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["llama-3.1-8b"]
    resources = _kustomization(folder)
    assert not [r for r in resources if "mixtral" in r or "deepseek" in r]
    assert sorted(resources) == sorted(p for p in _files(folder) if p != "kustomization.yaml")
    # The removal task, the ingress routes and the monitoring PodMonitors change; llama-3.1-8b does not.
    assert recap(result.stdout)["changed"] == 3
    assert kept and {k: v for k, v in _snapshot(folder).items() if "llama-3.1-8b/" in str(k)} == kept
    for name in ("deepseek-coder-v2-lite", "mixtral-8x7b"):
        assert "changed: [localhost] => (item=%s)" % name in result.stdout


@pytest.mark.parametrize("tags", ["cluster", "vllm_models"])
def test_general_tags_render_every_model(renders, tags, workstation):
    out, result = _fresh(renders, tags + "-tag")
    assert result.returncode == 0, result.stdout[-3000:]
    rendered = {p for p in _files(out) if p.startswith("models/")}
    assert rendered == {p for p in workstation[1] if p.startswith("models/")}


@pytest.mark.parametrize("mode, files", [
    ("hostpath", ["persistentvolume-llm-models.yaml", "persistentvolumeclaim-llm-models.yaml"]),
    ("local-path", ["persistentvolumeclaim-llm-models-deepseek-coder-v2-lite.yaml", "persistentvolumeclaim-llm-models-llama-3-1-8b.yaml",
                    "persistentvolumeclaim-llm-models-mixtral-8x7b.yaml"]),
    ("longhorn", ["persistentvolumeclaim-llm-models.yaml"]),
])
def test_storage_tag_and_mode(renders, mode, files):
    out, result = _fresh(renders, "storage-" + mode)
    assert result.returncode == 0, result.stdout[-3000:]
    assert _files(out) == ["kustomization.yaml"] + ["storage/" + f for f in files]


def test_predownloaded_models_start_offline_without_the_token(renders, workstation):
    out, result = _fresh(renders, "predownload")
    assert result.returncode == 0, result.stdout[-3000:]
    path = "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml"
    offline, online = load_bundle(out)[path], workstation[1][path]
    pod, container = offline["spec"]["template"]["spec"], offline["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}["HF_HUB_OFFLINE"] == "1"
    assert "hf-token" not in [v["name"] for v in pod["volumes"]]
    assert "hf-token" in [v["name"] for v in online["spec"]["template"]["spec"]["volumes"]]
    budget = [c["startupProbe"]["failureThreshold"] for c in (container, online["spec"]["template"]["spec"]["containers"][0])]
    assert budget[0] < budget[1]  # no download to wait for
