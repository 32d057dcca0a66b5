# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply exactly the bundle, and prune what it no longer has: pure logic over the bundle's objects and listed ones.

The render step writes DIR/<component>/<kind>-<name>.yaml (see _bundle). Here:
- apply_steps(): the bundle's objects of the components in scope, in dependency order: CRDs and Namespaces first,
  then built-in kinds in component order, then custom resources, each group after its CRDs are established
  (the Prometheus Operator's CRDs come with the monitoring chart of the bundle, so theirs come last).
- prune_list(): the managed objects the cluster has (listed by label) that the bundle no longer has, within the
  run's scope, never a Namespace, PersistentVolume or bound claim unless asked.
"""

from __future__ import annotations

import os

from ansible_collections.llmserve.k3s.plugins.module_utils._bundle import (
    COMPONENT_LABEL, COMPONENT_ORDER, MANAGED_BY, MANAGED_BY_LABEL, MODEL_LABEL)
# Every kind a template of the collection can render: what a full run lists to find objects to prune
# (a render test fails when a template renders a kind missing here).
KINDS = (
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", False),
    ("v1", "Namespace", False),
    ("v1", "PersistentVolume", False),
    ("v1", "PersistentVolumeClaim", True),
    ("v1", "ResourceQuota", True),
    ("v1", "LimitRange", True),
    ("v1", "ServiceAccount", True),
    ("v1", "ConfigMap", True),
    ("v1", "Service", True),
    ("rbac.authorization.k8s.io/v1", "Role", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False),
    ("networking.k8s.io/v1", "NetworkPolicy", True),
    ("node.k8s.io/v1", "RuntimeClass", False),
    ("apps/v1", "Deployment", True),
    ("apps/v1", "DaemonSet", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler", True),
    ("policy/v1", "PodDisruptionBudget", True),
    ("helm.cattle.io/v1", "HelmChart", True),
    ("helm.cattle.io/v1", "HelmChartConfig", True),
    ("traefik.io/v1alpha1", "IngressRoute", True),
    ("traefik.io/v1alpha1", "Middleware", True),
    ("traefik.io/v1alpha1", "TraefikService", True),
    ("cert-manager.io/v1", "Certificate", True),
    ("monitoring.coreos.com/v1", "PodMonitor", True),
    ("monitoring.coreos.com/v1", "ServiceMonitor", True),
    ("monitoring.coreos.com/v1", "PrometheusRule", True),
    ("llmserve.io/v1alpha1", "LLMConfig", True),
)
# Groups whose CRDs a chart of the bundle installs (kube-prometheus-stack): applied after everything else.
LATE_GROUPS = ("monitoring.coreos.com",)
# Kept unless prune_protected: data (volumes, bound claims) and whole namespaces.
PROTECTED = ("Namespace", "PersistentVolume", "PersistentVolumeClaim")


class ApplyError(ValueError):
    """A bundle that cannot be applied as it is."""


def group_of(api_version):
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def builtin(api_version):
    """Kinds every Kubernetes API server has (no CRD to wait for)."""
    group = group_of(api_version)
    return group == "" or "." not in group or group.endswith(".k8s.io")


def crd_name(obj):
    """The CRD that defines a custom resource: <plural>.<group> (plural: the lower-case kind + s, as every CRD here)."""
    kind = obj["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + ("es" if kind.endswith("s") else "s")
    return "%s.%s" % (plural, group_of(obj["apiVersion"]))


def component_of(rel):
    """'models/llama-3.1-8b/deployment-x.yaml' -> 'models/llama-3.1-8b'; 'ingress/x.yaml' -> 'ingress'."""
    return os.path.dirname(rel)


def in_scope(component, scope):
    """scope: components a run rendered ('models' means every model; 'models/<name>' that model alone)."""
    return any(component == s or component.startswith(s + "/") for s in scope or ())


def identity(obj):
    meta = obj.get("metadata") or {}
    return (group_of(obj.get("apiVersion", "")), obj.get("kind"), meta.get("namespace") or "", meta.get("name"))


def _rank(rel):
    top = rel.split("/", 1)[0]
    return COMPONENT_ORDER.index(top) if top in COMPONENT_ORDER else len(COMPONENT_ORDER)


def apply_steps(bundle, scope):
    """bundle: {relative path: object}. Returns [{id, name, wait_crds, files, objects}] in apply order (empty steps left out).

    Custom resources of a CRD in the same bundle, or of the late groups, wait for their CRDs to be established.
    """
    first, core, custom, late = [], [], {}, []
    for rel in sorted(bundle, key=lambda r: (_rank(r), r)):
        if not in_scope(component_of(rel), scope):
            continue
        obj = bundle[rel]
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
            raise ApplyError("%s is not a Kubernetes object (apiVersion and kind are missing)" % rel)
        if obj["kind"] in ("CustomResourceDefinition", "Namespace"):
            first.append(rel)
        elif builtin(obj["apiVersion"]):
            core.append(rel)
        elif group_of(obj["apiVersion"]) in LATE_GROUPS:
            late.append(rel)
        else:
            custom.setdefault(crd_name(obj), []).append(rel)
    custom_files = sorted((rel for files in custom.values() for rel in files), key=lambda r: (_rank(r), r))
    steps = [("definitions", "definitions and namespaces", [], first),
             ("core", "workloads, services, policies and volumes", [], core),
             ("custom", "custom resources", sorted(custom), custom_files),
             ("monitoring", "monitoring custom resources", sorted({crd_name(bundle[r]) for r in late}), late)]
    return [{"id": sid, "name": name, "wait_crds": crds, "files": files, "objects": [bundle[r] for r in files]}
            for sid, name, crds, files in steps if files]


def _bound(obj):
    return obj.get("kind") == "PersistentVolumeClaim" and ((obj.get("status") or {}).get("phase") == "Bound")


def prune_list(live, bundle, scope, prune_protected=False):
    """Managed objects listed from the cluster that the bundle no longer has, within scope, deletion order.

    live: objects listed by the label app.kubernetes.io/managed-by=llmserve.k3s (k8s_info resources);
    an object without the component label (the Secrets the roles apply from Vault) is never pruned.
    Returns [{apiVersion, kind, namespace, name, component}] (custom resources and workloads before what they need).
    """
    wanted = {identity(obj) for obj in bundle.values()}
    out = []
    for obj in live or []:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not labels.get(COMPONENT_LABEL):
            continue
        component = labels[COMPONENT_LABEL]
        if component == "models":
            if not labels.get(MODEL_LABEL):
                continue
            component = "models/" + labels[MODEL_LABEL]
        if not in_scope(component, scope) or identity(obj) in wanted:
            continue
        if not prune_protected and (obj.get("kind") in ("Namespace", "PersistentVolume") or _bound(obj)):
            continue
        out.append({"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "namespace": meta.get("namespace") or "",
                    "name": meta.get("name"), "component": component})
    order = [kind for dummy, kind, dummy2 in KINDS]
    out.sort(key=lambda o: (-(order.index(o["kind"]) if o["kind"] in order else len(order)), o["component"], o["namespace"], o["name"]))
    return out


def run_scope(run_tags, model_names):
    """The components a run renders, from its --tags: every component for a full run, else what the tags name."""
    tags = set(run_tags or ["all"])
    if tags & {"all", "cluster"}:
        return list(COMPONENT_ORDER)
    by_tag = {"namespace": "namespace", "storage": "storage", "gpu": "gpu", "ingress": "ingress", "monitoring": "monitoring",
              "models": "models", "vllm_models": "models"}
    scope = sorted({by_tag[t] for t in tags if t in by_tag})
    if "models" not in scope:
        scope += ["models/" + name for name in sorted(tags & set(model_names or []))]
    return scope
