"""module_utils/_bundle: file names, the YAML it writes, kustomization.yaml, prune, check mode, no needless rewrites."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _bundle

# Objects as the roles render them (trimmed), with the values YAML readers get wrong when written plainly.
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "vllm-llama-3-1-8b", "namespace": "llm-serving",
                 "labels": {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b"},
                 "annotations": {"llmserve.io/placement": "workstation"}},
    "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
             "selector": {"matchLabels": {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b"}},
             "template": {"metadata": {"labels": {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b"}},
                          "spec": {"runtimeClassName": "nvidia", "nodeSelector": {"llmserve.io/gpu": "true"},
                                   "containers": [{"name": "vllm", "image": "docker.io/vllm/vllm-openai:v0.32.0",
                                                   "args": ["meta-llama/Llama-3.1-8B-Instruct", "--port", "8000",
                                                            "--gpu-memory-utilization", "0.9", "--enable-prefix-caching"],
                                                   "env": [{"name": "MALLOC_ARENA_MAX", "value": "2"}],
                                                   "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}}}],
                                   "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]}}},
}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm-llama-3-1-8b", "namespace": "llm-serving"},
           "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "llm-serving"}}
PVC = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "llm-models", "namespace": "llm-serving"},
       "spec": {"storageClassName": "", "accessModes": ["ReadWriteMany"]}}

TRICKY = ["true", "False", "yes", "no", "on", "off", "y", "n", "null", "~", "", " ", "0755", "0x1F", "1e3", "1_000", "8000",
          "0.9", ".inf", "-.inf", ".nan", "NaN", "2026-11-23", "12:30:45", "-", "--flag", "- item", "a: b", "a:b", "key:",
          "#comment", "a #b", "*alias", "&anchor", "!tag", "%directive", "@at", "`tick", "{x}", "[x]", "'quoted'", '"dq"',
          "=", "<<", "?", "|", ">", "multi\nline\n", "no trailing\nnewline", "  leading spaces", "trailing ", "tab\there",
          "unicode é ✓", "back\\slash", "http://example.invalid/a?b=c", "compute,utility", "llmserve.io/gpu"]


@pytest.mark.parametrize("value", TRICKY)
def test_dump_round_trips_tricky_strings(value):
    obj = {"data": {"k": value}, "list": [value], value or "empty": 1}
    assert yaml.safe_load(_bundle.dump(obj)) == obj


@pytest.mark.parametrize("obj", [DEPLOYMENT, SERVICE, NAMESPACE, PVC, {"a": {}, "b": [], "c": [[1, 2], {}], "d": None,
                                                                       "e": [{"x": [1]}, {"y": {"z": True}}], "f": 1.5}])
def test_dump_round_trips_objects(obj):
    assert yaml.safe_load(_bundle.dump(obj)) == obj


def test_dump_writes_block_style_and_keeps_key_order():
    text = _bundle.dump(SERVICE)
    assert text.splitlines()[:3] == ["apiVersion: v1", "kind: Service", "metadata:"]
    assert "{" not in text


@pytest.mark.parametrize("obj, name", [
    (DEPLOYMENT, "deployment-vllm-llama-3-1-8b.yaml"), (SERVICE, "service-vllm-llama-3-1-8b.yaml"),
    (NAMESPACE, "namespace-llm-serving.yaml"), (PVC, "persistentvolumeclaim-llm-models.yaml"),
    ({"apiVersion": "llmserve.io/v1alpha1", "kind": "LLMConfig", "metadata": {"name": "llama-3.1-8b"}}, "llmconfig-llama-3.1-8b.yaml"),
])
def test_file_name(obj, name):
    assert _bundle.file_name(obj) == name


@pytest.mark.parametrize("obj", [{"kind": "Service", "metadata": {"name": "x"}}, {"apiVersion": "v1", "metadata": {"name": "x"}},
                                 {"apiVersion": "v1", "kind": "Service", "metadata": {}}, "not a mapping"])
def test_file_name_needs_api_version_kind_and_name(obj):
    with pytest.raises(_bundle.BundleError):
        _bundle.file_name(obj)


def test_two_objects_for_one_file_is_an_error():
    with pytest.raises(_bundle.BundleError, match="two objects would both be written to service-vllm-llama-3-1-8b.yaml"):
        _bundle.render_files([SERVICE, dict(SERVICE)])


@pytest.mark.parametrize("component", ["", "/abs", "../up", "models/../x", "Models", "models/", "a//b"])
def test_component_must_be_a_relative_dns_path(tmp_path, component):
    with pytest.raises(_bundle.BundleError, match="component"):
        _bundle.write_component(str(tmp_path), component, [NAMESPACE])


def _resources(root):
    return yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))["resources"]


def test_kustomization_lists_components_in_apply_order(tmp_path):
    for component, objects in (("monitoring", [SERVICE]), ("models/llama-3.1-8b", [DEPLOYMENT]), ("ingress", [NAMESPACE]),
                               ("models/a-model", [SERVICE]), ("storage", [PVC]), ("namespace", [NAMESPACE]), ("extra", [PVC])):
        _bundle.write_component(str(tmp_path), component, objects)
    assert _resources(tmp_path) == [
        "namespace/namespace-llm-serving.yaml", "storage/persistentvolumeclaim-llm-models.yaml",
        "models/a-model/service-vllm-llama-3-1-8b.yaml", "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml",
        "ingress/namespace-llm-serving.yaml", "monitoring/service-vllm-llama-3-1-8b.yaml",
        "extra/persistentvolumeclaim-llm-models.yaml"]


def test_write_then_nothing_to_do(tmp_path):
    changed, written, removed = _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    assert (changed, written, removed) == (True, ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml",
                                                  "models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml"], [])
    files = sorted(tmp_path.rglob("*.yaml"))
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE]) == (False, [], [])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == stamps
    assert yaml.safe_load((tmp_path / "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml").read_text(encoding="utf-8")) == \
        _bundle.labelled(DEPLOYMENT, "models/llama-3.1-8b")
    assert (tmp_path / "models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml").read_text(encoding="utf-8").startswith(_bundle.HEADER)
    assert oct(os.stat(files[0]).st_mode & 0o777) == "0o644"


def test_changed_object_rewrites_only_its_file(tmp_path):
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    service = tmp_path / "models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml"
    before = service.stat().st_mtime_ns, service.stat().st_ino
    bigger = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    bigger["spec"]["replicas"] = 2
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [bigger, SERVICE]) == (
        True, ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml"], [])
    assert (service.stat().st_mtime_ns, service.stat().st_ino) == before


def test_prune_removes_objects_no_longer_rendered(tmp_path):
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT]) == (True, [], ["models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml"])
    assert sorted(p.name for p in (tmp_path / "models/llama-3.1-8b").iterdir()) == ["deployment-vllm-llama-3-1-8b.yaml"]
    assert _resources(tmp_path) == ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml"]


def test_absent_removes_the_component_and_its_entries(tmp_path):
    _bundle.write_component(str(tmp_path), "namespace", [NAMESPACE])
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    changed, written, removed = _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [], state="absent")
    assert (changed, written, sorted(removed)) == (True, [], ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml",
                                                              "models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml"])
    assert not (tmp_path / "models/llama-3.1-8b").exists()
    assert _resources(tmp_path) == ["namespace/namespace-llm-serving.yaml"]
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [], state="absent") == (False, [], [])


def test_check_mode_reports_without_writing(tmp_path):
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT], check_mode=True) == (
        True, ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml"], [])
    assert list(tmp_path.iterdir()) == []
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE], check_mode=True) == (False, [], [])
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [SERVICE], check_mode=True) == (
        True, [], ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml"])
    assert _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [], state="absent", check_mode=True)[0] is True
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_no_temporary_files_left(tmp_path):
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT, SERVICE])
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [SERVICE])
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == []


def test_run_creates_dest_and_lists_files(tmp_path):
    params = {"dest": str(tmp_path / "new" / "bundle"), "component": "models/llama-3.1-8b", "objects": [SERVICE, DEPLOYMENT], "state": "present"}
    result = _bundle.run(params)
    assert result["changed"] is True
    assert result["files"] == ["models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml", "models/llama-3.1-8b/service-vllm-llama-3-1-8b.yaml"]
    assert _bundle.run(params)["changed"] is False
    assert not os.path.exists(str(tmp_path / "other")) and _bundle.run(dict(params, dest=str(tmp_path / "other")), check_mode=True)["changed"]
    assert not os.path.exists(str(tmp_path / "other"))


def test_every_object_carries_its_component_labels(tmp_path):
    _bundle.write_component(str(tmp_path), "models/llama-3.1-8b", [DEPLOYMENT])
    _bundle.write_component(str(tmp_path), "storage", [PVC])
    model = yaml.safe_load((tmp_path / "models/llama-3.1-8b/deployment-vllm-llama-3-1-8b.yaml").read_text(encoding="utf-8"))
    assert model["metadata"]["labels"] == {"app.kubernetes.io/name": "vllm", "llmserve.io/model": "llama-3.1-8b",
                                           "app.kubernetes.io/managed-by": "llmserve.k3s", "llmserve.io/component": "models"}
    claim = yaml.safe_load((tmp_path / "storage/persistentvolumeclaim-llm-models.yaml").read_text(encoding="utf-8"))
    assert claim["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "llmserve.k3s", "llmserve.io/component": "storage"}
    assert "labels" not in PVC["metadata"]  # the caller's object is left as it was


def test_a_label_that_contradicts_the_component_is_an_error(tmp_path):
    with pytest.raises(_bundle.BundleError, match="llmserve.io/model=llama-3.1-8b, but its component models/other needs other"):
        _bundle.write_component(str(tmp_path), "models/other", [DEPLOYMENT])
