# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write Kubernetes objects into a manifest bundle: DIR/<component>/<kind>-<name>.yaml + DIR/kustomization.yaml.

Pure logic, stdlib only: objects are written with a small block-style YAML emitter (every value it cannot
write plainly is written as a JSON string, which YAML reads back unchanged).
"""

from __future__ import annotations

import json
import os
import re
import tempfile

from ansible_collections.llmserve.k3s.plugins.module_utils import _shared

HEADER = "# Rendered by llmserve.k3s; edit the inventory and re-render instead of this file.\n"
COMPONENT_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[a-z0-9]([-a-z0-9.]*[a-z0-9])?)*$")
# Apply order for kustomization.yaml: what others depend on comes first.
COMPONENT_ORDER = ("namespace", "storage", "gpu", "models", "ingress", "monitoring")
# Labels the writer puts on every object, so that a full run can find what the bundle no longer has (see _apply).
COMPONENT_LABEL = "llmserve.io/component"
MODEL_LABEL = "llmserve.io/model"
MANAGED_BY_LABEL, MANAGED_BY = _shared.MANAGED_BY_LABEL, _shared.MANAGED_BY


# The arguments of the manifest_bundle module and its controller-side action plugin (one place for both).
ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    component=dict(type="str", required=True),
    objects=dict(type="list", elements="dict", default=[]),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)


class BundleError(ValueError):
    """An object or path that cannot go into the bundle."""


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:@=+-]*( [A-Za-z0-9_./@=+()-]+)*$")
_RESERVED = frozenset("true false yes no on off null y n".split())


def yaml_scalar(value):
    """One YAML scalar: plain where it reads back as the same string, else JSON-quoted (JSON is YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED and not text.endswith(":") and ": " not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _literal_ok(text):
    lines = text.split("\n")
    return ("\n" in text.rstrip("\n") and not text.startswith((" ", "\t")) and "\r" not in text
            and not text.endswith("\n\n") and all(line == line.rstrip() for line in lines))


def _emit(value, indent, out):
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = pad + yaml_scalar(key) + ":"
            if isinstance(item, (dict, list)) and item:
                out.append(head)
                _emit(item, indent + 2 if isinstance(item, dict) else indent, out)
            elif isinstance(item, dict):
                out.append(head + " {}")
            elif isinstance(item, list):
                out.append(head + " []")
            elif isinstance(item, str) and _literal_ok(item):
                out.append(head + (" |" if item.endswith("\n") else " |-"))
                out.extend((pad + "  " + line) if line else "" for line in item.rstrip("\n").split("\n"))
            else:
                out.append(head + " " + yaml_scalar(item))
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = []
                _emit(item, indent + 2, sub)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                out.extend(sub)
            elif isinstance(item, dict):
                out.append(pad + "- {}")
            elif isinstance(item, list):
                out.append(pad + "- []")
            else:
                out.append(pad + "- " + yaml_scalar(item))


def dump(obj):
    """Block-style YAML of a JSON-like object (dicts keep their order)."""
    out = []
    _emit(obj, 0, out)
    return "\n".join(out) + "\n"


def file_name(obj):
    """<kind>-<name>.yaml, lower case; checks the object has what `kubectl apply` needs."""
    if not isinstance(obj, dict):
        raise BundleError("object is not a mapping: %r" % (obj,))
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name")
    if not obj.get("apiVersion") or not kind or not name:
        raise BundleError("object needs apiVersion, kind and metadata.name: %r" % ({k: obj.get(k) for k in ("apiVersion", "kind", "metadata")},))
    return "%s-%s.yaml" % (kind.lower(), name)


def labels_for(component):
    """The labels of every object of a component (label values cannot hold '/': models/<name> is two labels)."""
    top, dummy, model = (component or "").partition("/")
    out = {MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: top}
    if top == "models" and model:
        out[MODEL_LABEL] = model
    return out


def labelled(obj, component):
    """A copy of obj whose metadata.labels carry the component's labels (a label the template set is checked)."""
    if not isinstance(obj, dict):
        return obj
    meta = dict(obj.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    for key, value in labels_for(component).items():
        if labels.get(key, value) != value:
            raise BundleError("%s %s has label %s=%s, but its component %s needs %s"
                              % (obj.get("kind"), meta.get("name"), key, labels[key], component, value))
        labels[key] = value
    meta["labels"] = labels
    return dict(obj, metadata=meta)


def render_files(objects, component=None):
    """{file name: text}; two objects with the same kind and name are an error. With a component, objects are labelled."""
    files = {}
    for obj in objects:
        name = file_name(obj)
        if name in files:
            raise BundleError("two objects would both be written to %s" % name)
        files[name] = HEADER + dump(labelled(obj, component) if component else obj)
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
    wanted = render_files(objects, component) if state == "present" else {}
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
    if state == "absent" and os.path.isdir(compdir) and not check_mode and not os.listdir(compdir):
        os.rmdir(compdir)
    changed = bool(written or removed)
    if not check_mode and os.path.isdir(root):
        changed = _write_if_changed(os.path.join(root, "kustomization.yaml"), kustomization_text(root)) or changed
    return changed, written, removed


def run(params, check_mode=False):
    """The manifest_bundle task: validated params -> result dict (changed, written, removed, files)."""
    if not check_mode:
        os.makedirs(params["dest"], exist_ok=True)
    changed, written, removed = write_component(params["dest"], params["component"], params["objects"], params["state"], check_mode)
    present = params["state"] == "present"
    files = sorted(os.path.join(params["component"], f) for f in render_files(params["objects"])) if present else []
    return dict(changed=changed, written=written, removed=removed, files=files)
