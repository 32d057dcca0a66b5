# -*- coding: utf-8 -*-
# Copyright: llmserve.k3s contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Write Kubernetes objects into a manifest bundle: DIR/<component>/<kind>-<name>.yaml + DIR/kustomization.yaml.

Pure logic, stdlib only (plus PyYAML, which ansible-core itself requires).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import yaml

HEADER = "# Rendered by llmserve.k3s; edit the inventory and re-render instead of this file.\n"
COMPONENT_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[a-z0-9]([-a-z0-9.]*[a-z0-9])?)*$")
# Apply order for kustomization.yaml: what others depend on comes first.
COMPONENT_ORDER = ("namespace", "storage", "gpu", "models", "ingress", "monitoring")


class BundleError(ValueError):
    """An object or path that cannot go into the bundle."""


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks (readable ConfigMaps and dashboards)."""


def _str_representer(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(obj):
    return yaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=120)


def file_name(obj):
    """<kind>-<name>.yaml, lower case; checks the object has what `kubectl apply` needs."""
    if not isinstance(obj, dict):
        raise BundleError("object is not a mapping: %r" % (obj,))
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name")
    if not obj.get("apiVersion") or not kind or not name:
        raise BundleError("object needs apiVersion, kind and metadata.name: %r" % ({k: obj.get(k) for k in ("apiVersion", "kind", "metadata")},))
    return "%s-%s.yaml" % (kind.lower(), name)


def render_files(objects):
    """{file name: text}; two objects with the same kind and name are an error."""
    files = {}
    for obj in objects:
        name = file_name(obj)
        if name in files:
            raise BundleError("two objects would both be written to %s" % name)
        files[name] = HEADER + dump(obj)
    return files


def _write_if_changed(path, text):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def _component_key(rel):
    top = rel.split("/", 1)[0]
    rank = COMPONENT_ORDER.index(top) if top in COMPONENT_ORDER else len(COMPONENT_ORDER)
    return (rank, rel)


def kustomization_text(root):
    """kustomization.yaml listing every manifest under root, components in apply order."""
    resources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.endswith(".yaml") and not fname.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, fname), root)
                if rel != "kustomization.yaml":
                    resources.append(rel)
    resources.sort(key=_component_key)
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}
    return HEADER + dump(doc)


def write_component(root, component, objects, state="present", check_mode=False):
    """Make DIR/<component> hold exactly `objects`. Returns (changed, written, removed) with paths relative to root."""
    if not COMPONENT_RE.match(component or ""):
        raise BundleError("component %r is not a relative path of DNS-1123 names" % (component,))
    compdir = os.path.join(root, component)
    wanted = render_files(objects) if state == "present" else {}
    existing = sorted(f for f in os.listdir(compdir) if f.endswith(".yaml")) if os.path.isdir(compdir) else []
    written, removed = [], []
    for fname, text in sorted(wanted.items()):
        path = os.path.join(compdir, fname)
        if check_mode:
            try:
                with open(path, encoding="utf-8") as handle:
                    same = handle.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                written.append(os.path.join(component, fname))
            continue
        os.makedirs(compdir, exist_ok=True)
        if _write_if_changed(path, text):
            written.append(os.path.join(component, fname))
    for fname in existing:
        if fname not in wanted:
            removed.append(os.path.join(component, fname))
            if not check_mode:
                os.remove(os.path.join(compdir, fname))
    if state == "absent" and os.path.isdir(compdir) and not check_mode:
        if not any(f for f in os.listdir(compdir) if not f.endswith(".yaml")):
            shutil.rmtree(compdir)
    changed = bool(written or removed)
    if not check_mode and os.path.isdir(root):
        changed = _write_if_changed(os.path.join(root, "kustomization.yaml"), kustomization_text(root)) or changed
    return changed, written, removed
