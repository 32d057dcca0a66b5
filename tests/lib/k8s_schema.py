"""Offline validation of rendered objects: Kubernetes OpenAPI schemas (kubernetes-validate) and CRD schemas.

Strict everywhere: an unknown field is an error, as `kubectl apply --validate=strict` would say.
"""

from __future__ import annotations

import copy
import functools
import json
import pathlib

import jsonschema
import kubernetes_validate
import yaml

import crds as upstream_crds

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Kubernetes minor of the pinned k3s (roles/k3s/defaults/main.yml: k3s_version).
K8S_VERSION = "1.35.0"


# libyaml's parser where PyYAML has it: the same documents, several times faster on the large CRD files.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=_LOADER) if doc]


def load_bundle(root):
    """{relative path: object} for every manifest under root (kustomization.yaml excluded)."""
    root = pathlib.Path(root)
    out = {}
    for path in sorted(root.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = load_yaml_docs(path)
        assert len(docs) == 1, "%s holds %d objects, expected one" % (path, len(docs))
        out[str(path.relative_to(root))] = docs[0]
    return out


def _closed(schema):
    """JSON Schema of a CRD's openAPIV3Schema, with every object schema closed to unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.pop("x-kubernetes-int-or-string", False):
                node.pop("type", None)
                node["anyOf"] = node.get("anyOf") or [{"type": "integer"}, {"type": "string"}]
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
            if node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"]):
                if "properties" in node and "additionalProperties" not in node and not preserve:
                    node["additionalProperties"] = False
            for key in list(node):
                if key.startswith("x-kubernetes-"):
                    node.pop(key)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


def _schemas_of(crds):
    out = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                out[("%s/%s" % (spec["group"], version["name"]), spec["names"]["kind"])] = _closed(schema)
    return out


@functools.lru_cache(maxsize=None)
def _upstream_crd_schemas():
    crds = []
    for path in upstream_crds.crd_files():
        crds += [d for d in load_yaml_docs(path) if d.get("kind") == "CustomResourceDefinition"]
    return _schemas_of(crds)


@functools.lru_cache(maxsize=64)
def _extra_crd_schemas(key):
    return _schemas_of(json.loads(key))


def crd_schemas(extra_crds=()):
    """{(group/version, kind): JSON Schema} from the pinned upstream CRDs (tests/lib/crds.py) plus extra CRD objects."""
    out = dict(_upstream_crd_schemas())
    if extra_crds:
        # Validation calls come once per object with the same bundle CRDs: convert them once.
        out.update(_extra_crd_schemas(json.dumps(list(extra_crds), sort_keys=True, default=str)))
    return out


def validate(obj, extra_crds=()):
    """Error messages for one object ([] when valid). CRs are checked against their CRD, the rest against Kubernetes."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schemas = crd_schemas(extra_crds)
    if key in schemas:
        validator = jsonschema.Draft7Validator(schemas[key])
        return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "<root>", e.message) for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.utils.ValidationError as exc:
        return ["%s: %s" % ("/".join(map(str, exc.path)) or "<root>", exc.message)]
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        return ["no schema for %s %s (neither Kubernetes %s nor a known CRD): %s" % (key + (K8S_VERSION, exc))]
    return []
