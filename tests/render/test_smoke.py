"""Every object of both inventories' bundles validates strictly (Kubernetes schema or CRD schema)."""

from k8s_schema import validate


def _errors(bundle):
    objects = bundle[1]
    crds = [o for o in objects.values() if o["kind"] == "CustomResourceDefinition"]
    return {path: errs for path, obj in objects.items() if (errs := validate(obj, crds))}


def test_workstation_bundle_is_valid(workstation):
    assert len(workstation[1]) >= 10
    assert _errors(workstation) == {}


def test_multinode_bundle_is_valid(multinode):
    assert _errors(multinode) == {}
