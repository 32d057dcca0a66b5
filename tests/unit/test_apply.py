"""module_utils/_apply: the apply order of a bundle and the prune list, from tables.

The listed objects are shaped as kubernetes.core.k8s_info returns them (metadata with uid, resourceVersion,
creationTimestamp and managedFields from the field manager llmserve.k3s; status); no cluster runs here.
"""

from __future__ import annotations

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _apply, _bundle


def obj(api, kind, name, namespace="llm-serving", component="ingress", **labels):
    meta = {"name": name, "labels": dict(_bundle.labels_for(component), **labels)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": meta}


def listed(o, **status):
    """The object as the cluster lists it after a server-side apply."""
    meta = dict(o["metadata"], uid="3f0c9a4e-%08d" % abs(hash(o["metadata"]["name"]) % 10 ** 8), resourceVersion="48213",
                creationTimestamp="2026-11-30T09:12:44Z",
                managedFields=[{"manager": "llmserve.k3s", "operation": "Apply", "apiVersion": o["apiVersion"]}])
    return dict(o, metadata=meta, status=status or {})


CRD = obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "llmconfigs.llmserve.io", None, "namespace")
NS = obj("v1", "Namespace", "llm-serving", None, "namespace")
QUOTA = obj("v1", "ResourceQuota", "llm-serving-quota", component="namespace")
PV = obj("v1", "PersistentVolume", "llm-models", None, "storage")
PVC = obj("v1", "PersistentVolumeClaim", "llm-models", component="storage")
DEPLOY = obj("apps/v1", "Deployment", "vllm-a", component="models/a")
SVC = obj("v1", "Service", "vllm-a", component="models/a")
LLMCONFIG = obj("llmserve.io/v1alpha1", "LLMConfig", "a", component="models/a")
ROUTE = obj("traefik.io/v1alpha1", "IngressRoute", "llm-api")
MW = obj("traefik.io/v1alpha1", "Middleware", "llm-rate-limit")
CHART = obj("helm.cattle.io/v1", "HelmChart", "kube-prometheus-stack", "kube-system", "monitoring")
PODMON = obj("monitoring.coreos.com/v1", "PodMonitor", "vllm-a", "monitoring", "monitoring")
DS = obj("apps/v1", "DaemonSet", "nvidia-device-plugin", "kube-system", "gpu")
BUNDLE = {
    "namespace/customresourcedefinition-llmconfigs.llmserve.io.yaml": CRD, "namespace/namespace-llm-serving.yaml": NS,
    "namespace/resourcequota-llm-serving-quota.yaml": QUOTA, "storage/persistentvolume-llm-models.yaml": PV,
    "storage/persistentvolumeclaim-llm-models.yaml": PVC, "gpu/daemonset-nvidia-device-plugin.yaml": DS,
    "models/a/deployment-vllm-a.yaml": DEPLOY, "models/a/service-vllm-a.yaml": SVC, "models/a/llmconfig-a.yaml": LLMCONFIG,
    "ingress/ingressroute-llm-api.yaml": ROUTE, "ingress/middleware-llm-rate-limit.yaml": MW,
    "monitoring/helmchart-kube-prometheus-stack.yaml": CHART, "monitoring/podmonitor-vllm-a.yaml": PODMON,
}
EVERYTHING = list(_bundle.COMPONENT_ORDER)


def test_steps_send_every_object_once_definitions_first():
    steps = _apply.apply_steps(BUNDLE, EVERYTHING)
    assert [s["id"] for s in steps] == ["definitions", "core", "custom", "monitoring"]
    sent = [o for s in steps for o in s["objects"]]
    assert len(sent) == len(BUNDLE) and all(any(o is b for b in BUNDLE.values()) for o in sent)
    assert [f for s in steps for f in s["files"]] and sorted(f for s in steps for f in s["files"]) == sorted(BUNDLE)
    assert steps[0]["files"] == ["namespace/customresourcedefinition-llmconfigs.llmserve.io.yaml", "namespace/namespace-llm-serving.yaml"]
    # Built-in kinds in component order: namespace, storage, gpu, models.
    assert steps[1]["files"] == ["namespace/resourcequota-llm-serving-quota.yaml", "storage/persistentvolume-llm-models.yaml",
                                 "storage/persistentvolumeclaim-llm-models.yaml", "gpu/daemonset-nvidia-device-plugin.yaml",
                                 "models/a/deployment-vllm-a.yaml", "models/a/service-vllm-a.yaml"]
    assert steps[2]["wait_crds"] == ["helmcharts.helm.cattle.io", "ingressroutes.traefik.io", "llmconfigs.llmserve.io",
                                     "middlewares.traefik.io"]
    assert steps[3] == {"id": "monitoring", "name": "monitoring custom resources", "wait_crds": ["podmonitors.monitoring.coreos.com"],
                        "files": ["monitoring/podmonitor-vllm-a.yaml"], "objects": [PODMON]}


def test_a_model_tag_applies_that_model_alone():
    steps = _apply.apply_steps(BUNDLE, ["models/a"])
    assert sorted(f for s in steps for f in s["files"]) == ["models/a/deployment-vllm-a.yaml", "models/a/llmconfig-a.yaml",
                                                            "models/a/service-vllm-a.yaml"]
    assert _apply.apply_steps(BUNDLE, ["models/b"]) == []


def test_a_file_that_is_no_object_is_an_error():
    with pytest.raises(_apply.ApplyError, match="ingress/broken.yaml is not a Kubernetes object"):
        _apply.apply_steps({"ingress/broken.yaml": {"metadata": {}}}, EVERYTHING)


@pytest.mark.parametrize("kind, expected", [("Middleware", "middlewares.traefik.io"), ("IngressRoute", "ingressroutes.traefik.io"),
                                            ("PrometheusRule", "prometheusrules.monitoring.coreos.com"),
                                            ("HelmChartConfig", "helmchartconfigs.helm.cattle.io"),
                                            ("Certificate", "certificates.cert-manager.io"), ("Policy", "policies.example.io"),
                                            ("Ingress", "ingresses.example.io")])
def test_crd_names(kind, expected):
    group = expected.split(".", 1)[1]
    assert _apply.crd_name({"apiVersion": group + "/v1", "kind": kind}) == expected


def test_nothing_to_prune_when_the_cluster_has_the_bundle():
    live = [listed(o) for o in BUNDLE.values()]
    assert _apply.prune_list(live, BUNDLE, EVERYTHING) == []


def test_prune_deletes_what_left_the_bundle_custom_resources_first():
    gone_mw = obj("traefik.io/v1alpha1", "Middleware", "llm-buffering")
    gone_model = [obj("apps/v1", "Deployment", "vllm-b", component="models/b"), obj("v1", "Service", "vllm-b", component="models/b"),
                  obj("llmserve.io/v1alpha1", "LLMConfig", "b", component="models/b")]
    live = [listed(o) for o in list(BUNDLE.values()) + [gone_mw] + gone_model]
    pruned = _apply.prune_list(live, BUNDLE, EVERYTHING)
    assert [(p["component"], p["kind"], p["name"]) for p in pruned] == [
        ("models/b", "LLMConfig", "b"), ("ingress", "Middleware", "llm-buffering"),
        ("models/b", "Deployment", "vllm-b"), ("models/b", "Service", "vllm-b")]
    assert pruned[1] == {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware", "namespace": "llm-serving",
                         "name": "llm-buffering", "component": "ingress"}


def test_scope_limits_the_prune():
    extra = [listed(obj("v1", "Service", "vllm-b", component="models/b")), listed(obj("traefik.io/v1alpha1", "Middleware", "old"))]
    live = [listed(o) for o in BUNDLE.values()] + extra
    assert [p["name"] for p in _apply.prune_list(live, BUNDLE, ["models/a"])] == []
    assert [p["name"] for p in _apply.prune_list(live, BUNDLE, ["models/b"])] == ["vllm-b"]
    assert [p["name"] for p in _apply.prune_list(live, BUNDLE, ["models"])] == ["vllm-b"]
    assert [p["name"] for p in _apply.prune_list(live, BUNDLE, ["ingress"])] == ["old"]


def test_data_and_namespaces_are_kept_unless_asked():
    old_ns = obj("v1", "Namespace", "old-serving", None, "namespace")
    bound = obj("v1", "PersistentVolumeClaim", "llm-models-b", component="storage", **{"llmserve.io/model": "b"})
    pending = obj("v1", "PersistentVolumeClaim", "llm-models-c", component="storage")
    old_pv = obj("v1", "PersistentVolume", "llm-models-old", None, "storage")
    live = [listed(old_ns, phase="Active"), listed(bound, phase="Bound"), listed(pending, phase="Pending"), listed(old_pv, phase="Bound")]
    assert [p["name"] for p in _apply.prune_list(live, BUNDLE, EVERYTHING)] == ["llm-models-c"]
    assert sorted(p["name"] for p in _apply.prune_list(live, BUNDLE, EVERYTHING, prune_protected=True)) == [
        "llm-models-b", "llm-models-c", "llm-models-old", "old-serving"]


def test_objects_without_the_component_label_are_never_pruned():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vllm-api-keys", "namespace": "llm-serving",
                                                                 "labels": {"app.kubernetes.io/managed-by": "llmserve.k3s"}}}
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mine", "namespace": "llm-serving",
                                                                   "labels": {"llmserve.io/component": "ingress"}}}
    bare_model = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "llm-serving", "labels": {
        "app.kubernetes.io/managed-by": "llmserve.k3s", "llmserve.io/component": "models"}}}
    assert _apply.prune_list([listed(secret), listed(foreign), listed(bare_model)], BUNDLE, EVERYTHING) == []


def test_an_object_kept_under_another_api_version_is_not_pruned():
    hpa = obj("autoscaling/v2", "HorizontalPodAutoscaler", "vllm-a", component="models/a")
    bundle = dict(BUNDLE, **{"models/a/horizontalpodautoscaler-vllm-a.yaml": hpa})
    assert _apply.prune_list([listed(dict(hpa, apiVersion="autoscaling/v1"))], bundle, EVERYTHING) == []


@pytest.mark.parametrize("tags, scope", [
    (["all"], list(_bundle.COMPONENT_ORDER)), (["cluster"], list(_bundle.COMPONENT_ORDER)), ([], list(_bundle.COMPONENT_ORDER)),
    (["ingress"], ["ingress"]), (["models"], ["models"]), (["vllm_models", "monitoring"], ["models", "monitoring"]),
    (["llama-3.1-8b"], ["models/llama-3.1-8b"]), (["llama-3.1-8b", "storage"], ["storage", "models/llama-3.1-8b"]),
    (["k3s"], []), (["not-a-model"], []),
])
def test_run_scope(tags, scope):
    assert _apply.run_scope(tags or None, ["llama-3.1-8b", "mixtral-8x7b"]) == scope


def test_every_kind_the_collection_renders_is_listed_for_prune():
    kinds = {(a, k) for a, k, dummy in _apply.KINDS}
    assert {(o["apiVersion"], o["kind"]) for o in BUNDLE.values()} <= kinds
    assert len(kinds) == len(_apply.KINDS)
