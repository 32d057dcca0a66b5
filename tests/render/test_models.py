"""What each catalog model becomes: the rules of the model catalog, checked on real renders.

Rendered only: no cluster runs these objects here (no k3s, no GPU); they are validated against the Kubernetes
schema in test_smoke.py and checked for meaning here.
"""

from __future__ import annotations

import pytest

from bundle import arg, container, env, model_names, model_objects, mounts, of_kind, one, volumes
from catalogs import CUSTOM_GPUS, CUSTOM_GPUS_USED, CUSTOM_MODELS
from k8s_schema import validate

from ansible_collections.llmserve.k3s.plugins.module_utils._shared import PORTS

WORKSTATION_MODELS = ["deepseek-coder-v2-lite", "llama-3.1-8b", "mixtral-8x7b"]
MULTINODE_MODELS = ["deepseek-coder-v2-lite", "llama-3.1-8b", "llama-3.1-8b-multi", "mixtral-8x7b"]
GATED = {"llama-3.1-8b", "llama-3.1-8b-multi", "llama-70b-awq"}


@pytest.fixture(scope="module", params=["workstation", "multinode", "custom"])
def bundle(request):
    return request.getfixturevalue(request.param)[1]


def _deployments(objects):
    """The model servers (not the front door, not the routers)."""
    return [o for o in of_kind(objects, "Deployment").values() if o["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"]


def test_every_enabled_model_and_no_disabled_one(workstation, multinode, custom):
    assert model_names(workstation[1]) == WORKSTATION_MODELS
    assert model_names(multinode[1]) == MULTINODE_MODELS
    assert model_names(custom[1]) == ["llama-70b-awq", "llama-auto", "qwen-1.5b"]
    for objects, disabled in ((workstation[1], "llama-3.1-8b-multi"), (custom[1], "switched-off")):
        labelled = [p for p, o in objects.items() if o["metadata"].get("labels", {}).get("llmserve.io/model") == disabled]
        assert labelled == []
        assert disabled not in "\n".join(objects)


def test_each_model_has_deployment_service_and_llmconfig(bundle):
    for name in model_names(bundle):
        objects = model_objects(bundle, name)
        k8s = "vllm-" + name.replace(".", "-")
        assert objects["Deployment"]["metadata"]["name"] == k8s
        assert objects["Service"]["metadata"]["name"] == k8s
        assert objects["LLMConfig"]["metadata"]["name"] == name
        for obj in objects.values():
            assert obj["metadata"]["namespace"] == "llm-serving"
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "vllm"
            assert labels["app.kubernetes.io/instance"] == name
            assert labels["app.kubernetes.io/part-of"] == "llmserve"
            assert labels["app.kubernetes.io/managed-by"] == "llmserve.k3s"
            assert labels["llmserve.io/model"] == name


def test_served_model_name_and_pinned_image(bundle):
    for name in model_names(bundle):
        deployment = model_objects(bundle, name)["Deployment"]
        assert arg(deployment, "--served-model-name") == name
        image = container(deployment)["image"]
        assert image.startswith("docker.io/vllm/vllm-openai:v")
        assert not image.endswith(":latest")


def test_gpu_limits_equal_tensor_parallel_size(bundle):
    for name in model_names(bundle):
        objects = model_objects(bundle, name)
        tp = int(arg(objects["Deployment"], "--tensor-parallel-size"))
        resources = container(objects["Deployment"])["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == tp
        assert int(resources["requests"]["nvidia.com/gpu"]) == tp
        assert objects["LLMConfig"]["spec"]["gpuRequired"] == tp


def test_tensor_parallel_size_from_the_catalog(custom):
    deployment = model_objects(custom[1], "llama-70b-awq")["Deployment"]
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert arg(deployment, "--tensor-parallel-size") == "2"
    # NCCL between the tensor-parallel workers needs more shared memory than a single-GPU replica.
    assert volumes(deployment)["dshm"]["emptyDir"]["sizeLimit"] == "8Gi"
    assert volumes(model_objects(custom[1], "qwen-1.5b")["Deployment"])["dshm"]["emptyDir"]["sizeLimit"] == "2Gi"


def test_gpu_pod_conventions(bundle):
    for deployment in _deployments(bundle):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["nodeSelector"]["llmserve.io/gpu"] == "true"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        variables = env(deployment)
        assert variables["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        assert variables["MALLOC_ARENA_MAX"] == "2"


def test_catalog_node_selector_and_env_are_added(custom):
    deployment = model_objects(custom[1], "llama-70b-awq")["Deployment"]
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {
        "llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40"}
    assert env(deployment)["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert container(deployment)["resources"]["requests"]["cpu"] == "12"
    assert arg(deployment, "--quantization") == "awq_marlin"


def test_health_probes_and_startup_budget(bundle):
    for deployment in _deployments(bundle):
        vllm = container(deployment)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
            assert vllm[probe].get("initialDelaySeconds", 0) <= 30, probe
        startup = vllm["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 180


def _startup_budget(deployment):
    probe = container(deployment)["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_startup_budget_grows_with_the_model(workstation, custom):
    """Weights: llama-3.1-8b bf16 15 GiB < mixtral AWQ 24.5 GiB < deepseek-v2-lite bf16 29 GiB; qwen 1.5B < 70B AWQ."""
    budget = {name: _startup_budget(model_objects(workstation[1], name)["Deployment"]) for name in WORKSTATION_MODELS}
    assert budget["llama-3.1-8b"] < budget["mixtral-8x7b"] < budget["deepseek-coder-v2-lite"]
    small = _startup_budget(model_objects(custom[1], "qwen-1.5b")["Deployment"])
    large = _startup_budget(model_objects(custom[1], "llama-70b-awq")["Deployment"])
    assert small < budget["llama-3.1-8b"] < large


def test_shared_memory_is_a_memory_emptydir(bundle):
    for deployment in _deployments(bundle):
        assert volumes(deployment)["dshm"]["emptyDir"]["medium"] == "Memory"
        assert mounts(deployment)["dshm"]["mountPath"] == "/dev/shm"


def _claims(objects):
    return {o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim").values()}


def test_model_cache_mount_and_hf_home(bundle):
    claims = _claims(bundle)
    for deployment in _deployments(bundle):
        claim = volumes(deployment)["model-cache"]["persistentVolumeClaim"]["claimName"]
        assert claim in claims
        assert mounts(deployment)["model-cache"]["mountPath"] == "/models"
        assert env(deployment)["HF_HOME"] == "/models/huggingface"


def test_storage_mode_hostpath(workstation):
    objects = workstation[1]
    volume = one(objects, "PersistentVolume", "llm-models")
    claim = one(objects, "PersistentVolumeClaim", "llm-models")
    assert volume["spec"]["hostPath"]["path"] == "/var/lib/llm-models"
    assert volume["spec"]["claimRef"] == {"namespace": "llm-serving", "name": "llm-models"}
    assert claim["spec"]["volumeName"] == "llm-models"
    assert claim["spec"]["storageClassName"] == ""
    assert sorted(p for p in objects if p.startswith("storage/")) == [
        "storage/persistentvolume-llm-models.yaml", "storage/persistentvolumeclaim-llm-models.yaml"]


def test_storage_mode_longhorn(multinode):
    objects = multinode[1]
    assert of_kind(objects, "PersistentVolume") == {}
    claim = one(objects, "PersistentVolumeClaim", "llm-models")
    assert claim["spec"]["storageClassName"] == "longhorn"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Ti"
    for deployment in _deployments(objects):
        assert volumes(deployment)["model-cache"]["persistentVolumeClaim"]["claimName"] == "llm-models"


def test_storage_mode_local_path(custom):
    objects = custom[1]
    assert of_kind(objects, "PersistentVolume") == {}
    enabled = [m["name"] for m in CUSTOM_MODELS if m.get("enabled", True)]
    assert _claims(objects) == {"llm-models-" + name.replace(".", "-") for name in enabled}
    for path, claim in of_kind(objects, "PersistentVolumeClaim").items():
        assert path.startswith("storage/")
        assert claim["spec"]["storageClassName"] == "local-path"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for name in enabled:
        deployment = model_objects(objects, name)["Deployment"]
        assert volumes(deployment)["model-cache"]["persistentVolumeClaim"]["claimName"] == "llm-models-" + name.replace(".", "-")


def test_no_surge_whenever_a_replica_needs_gpus(bundle):
    """A rolling update that adds a pod first would wait forever on a node whose GPUs are all taken."""
    for deployment in _deployments(bundle):
        assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] >= 1
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxSurge"] == 0, strategy


def test_strategy_per_replica_count(custom):
    objects = custom[1]
    assert model_objects(objects, "llama-70b-awq")["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    several = model_objects(objects, "qwen-1.5b")["Deployment"]["spec"]
    assert several["replicas"] == 3
    assert several["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_session_affinity_only_where_asked(multinode, custom):
    for objects, sticky in ((multinode[1], set()), (custom[1], {"llama-auto"})):
        for name in model_names(objects):
            service = model_objects(objects, name)["Service"]["spec"]
            if name in sticky:
                assert service["sessionAffinity"] == "ClientIP"
                assert service["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 3600}}
            else:
                assert "sessionAffinity" not in service


def test_service_port_8000_named_http(bundle):
    for name in model_names(bundle):
        objects = model_objects(bundle, name)
        service = objects["Service"]["spec"]
        assert service["type"] == "ClusterIP"
        assert service["ports"] == [{"name": "http", "port": PORTS["vllm"], "targetPort": "http", "protocol": "TCP"}]
        assert service["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
        assert container(objects["Deployment"])["ports"] == [{"name": "http", "containerPort": PORTS["vllm"], "protocol": "TCP"}]
        assert arg(objects["Deployment"], "--port") == str(PORTS["vllm"])


def test_quota_requests_every_gpu_of_the_nodes(workstation, multinode, custom):
    for objects, gpus in ((workstation[1], 4), (multinode[1], 4 + 4 + 2), (custom[1], CUSTOM_GPUS)):
        quota = one(objects, "ResourceQuota", "llm-serving-quota")
        assert quota["metadata"]["namespace"] == "llm-serving"
        assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == str(gpus)
        assert one(objects, "LimitRange", "llm-serving-limits")["spec"]["limits"][0]["type"] == "Container"
        assert one(objects, "Namespace", "llm-serving")


BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 30}]},
    "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                  "policies": [{"type": "Percent", "value": 20, "periodSeconds": 60}]},
}


def test_hpa_only_for_autoscaled_models(bundle):
    autoscaled = {"llama-3.1-8b-multi", "llama-auto"}
    for name in model_names(bundle):
        objects = model_objects(bundle, name)
        assert ("HorizontalPodAutoscaler" in objects) == (name in autoscaled), name
        if name in autoscaled:
            hpa = objects["HorizontalPodAutoscaler"]["spec"]
            assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": objects["Deployment"]["metadata"]["name"]}
            assert hpa["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
            assert hpa["behavior"] == BEHAVIOR
            # The HPA owns the replica count: an apply must not reset it.
            assert "replicas" not in objects["Deployment"]["spec"]


def test_hpa_max_capped_at_free_gpus(multinode, custom):
    # multinode: 10 GPUs; the four models take 1 + 1 + 1 + 2 (the multi model's minimum), 5 stay free.
    hpa = model_objects(multinode[1], "llama-3.1-8b-multi")["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 2 + 5)
    assert hpa["metadata"]["annotations"]["llmserve.io/max-replicas-requested"] == "8"
    hpa = model_objects(custom[1], "llama-auto")["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1 + CUSTOM_GPUS - CUSTOM_GPUS_USED)
    assert hpa["metadata"]["annotations"]["llmserve.io/max-replicas-requested"] == "100"


def test_pdb_where_more_than_one_replica(bundle):
    for name in model_names(bundle):
        objects = model_objects(bundle, name)
        replicas = objects["LLMConfig"]["spec"]["replicaCount"]
        assert ("PodDisruptionBudget" in objects) == (replicas > 1), name
        if replicas > 1:
            pdb = objects["PodDisruptionBudget"]["spec"]
            assert pdb["maxUnavailable"] == 1
            assert pdb["selector"]["matchLabels"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]


def test_hf_token_only_on_gated_models(bundle):
    for name in model_names(bundle):
        deployment = model_objects(bundle, name)["Deployment"]
        gated = name in GATED
        assert ("hf-token" in volumes(deployment)) == gated, name
        assert ("hf-token" in mounts(deployment)) == gated, name
        assert ("HF_TOKEN_PATH" in env(deployment)) == gated, name
        if gated:
            assert volumes(deployment)["hf-token"]["secret"]["secretName"] == "hf-token"
            assert env(deployment)["HF_TOKEN_PATH"] == mounts(deployment)["hf-token"]["mountPath"] + "/token"


def test_every_model_takes_the_internal_key_from_the_environment_only(bundle):
    for name in model_names(bundle):
        ctr = container(model_objects(bundle, name)["Deployment"])
        keyed = [e for e in ctr["env"] if "API_KEY" in e["name"]]
        assert keyed == [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llmserve-internal", "key": "vllm-api-key"}}}]
        # No key in the process arguments (ps on the node), under any spelling vLLM's parser accepts.
        assert not [a for a in ctr["args"] if "api-key" in a.replace("_", "-") or "$(" in a], name


def test_no_secret_value_in_the_bundle(bundle):
    assert of_kind(bundle, "Secret") == {}


def test_one_llmconfig_per_model_valid_against_the_rendered_crd(bundle):
    crd = one(bundle, "CustomResourceDefinition", "llmconfigs.llmserve.io")
    assert crd["spec"]["group"] == "llmserve.io"
    assert crd["spec"]["names"]["shortNames"] == ["llm"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"model", "modelSize", "gpuRequired", "minMemory", "minCPU", "replicaCount", "autoscaling", "maxModelLen"} <= set(schema)
    configs = of_kind(bundle, "LLMConfig")
    assert sorted(c["metadata"]["name"] for c in configs.values()) == model_names(bundle)
    for config in configs.values():
        assert validate(config, [crd]) == []
        deployment = model_objects(bundle, config["metadata"]["name"])["Deployment"]
        requests = container(deployment)["resources"]["requests"]
        assert config["spec"]["minMemory"] == requests["memory"]
        assert config["spec"]["minCPU"] == requests["cpu"]
        assert config["spec"]["model"] == container(deployment)["args"][0]


def test_size_classes_from_the_decision_matrix(workstation, custom):
    sizes = {c["metadata"]["name"]: c["spec"]["modelSize"]
             for c in list(of_kind(workstation[1], "LLMConfig").values()) + list(of_kind(custom[1], "LLMConfig").values())}
    assert sizes == {"llama-3.1-8b": "medium", "mixtral-8x7b": "large", "deepseek-coder-v2-lite": "large",
                     "qwen-1.5b": "small", "llama-70b-awq": "large", "llama-auto": "medium"}
    # Requests follow the class unless the entry says otherwise (llama-70b-awq asks for 12 CPUs).
    requests = {name: container(model_objects(custom[1], name)["Deployment"])["resources"]["requests"]
                for name in ("qwen-1.5b", "llama-auto", "llama-70b-awq")}
    assert (requests["qwen-1.5b"]["cpu"], requests["qwen-1.5b"]["memory"]) == ("2", "8Gi")
    assert (requests["llama-auto"]["cpu"], requests["llama-auto"]["memory"]) == ("4", "16Gi")
    assert (requests["llama-70b-awq"]["cpu"], requests["llama-70b-awq"]["memory"]) == ("12", "32Gi")


def test_catalog_values_reach_vllm(workstation):
    llama = model_objects(workstation[1], "llama-3.1-8b")["Deployment"]
    assert container(llama)["args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert (arg(llama, "--max-model-len"), arg(llama, "--max-num-seqs"), arg(llama, "--dtype")) == ("32768", "256", "bfloat16")
    assert "--enable-prefix-caching" in container(llama)["args"]
    mixtral = model_objects(workstation[1], "mixtral-8x7b")["Deployment"]
    assert (arg(mixtral, "--quantization"), arg(mixtral, "--max-model-len")) == ("awq", "16384")
    deepseek = model_objects(workstation[1], "deepseek-coder-v2-lite")["Deployment"]
    assert arg(deepseek, "--max-model-len") == "65536"
    assert "--trust-remote-code" in container(deepseek)["args"]


def test_placement_fits_the_nodes(multinode):
    """The plan's placement (annotation) never puts more GPUs on a node than it has."""
    capacity = {"gpu-server-1": 4, "gpu-node-2": 4, "gpu-node-3": 2}
    used = dict.fromkeys(capacity, 0)
    for deployment in _deployments(multinode[1]):
        nodes = deployment["metadata"]["annotations"]["llmserve.io/placement"].split(",")
        gpus = container(deployment)["resources"]["limits"]["nvidia.com/gpu"]
        for node in nodes:
            used[node] += gpus
    assert sum(used.values()) == 5
    assert all(used[n] <= capacity[n] for n in capacity), used


def _router_arg(deployment, flag):
    (router,) = deployment["spec"]["template"]["spec"]["containers"]
    assert router["name"] == "router"
    return router["args"][router["args"].index(flag) + 1] if flag in router["args"] else None


def test_a_router_only_where_a_model_has_several_replicas(workstation, multinode, custom):
    """workstation: one replica each, no router; multinode: llama-3.1-8b-multi (2 + HPA, cache_aware);
    custom: qwen-1.5b (3 replicas, cache_aware) and llama-auto (HPA from 1, session_affinity: consistent_hash)."""
    for objects, expected in ((workstation[1], {}), (multinode[1], {"llama-3.1-8b-multi": "cache_aware"}),
                              (custom[1], {"qwen-1.5b": "cache_aware", "llama-auto": "consistent_hash"})):
        found = {}
        for name in model_names(objects):
            router = model_objects(objects, name, part="router")
            if router:
                assert sorted(router) == ["Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"], name
                found[name] = _router_arg(router["Deployment"], "--policy")
        assert found == expected


def test_routers_survive_the_loss_of_one(multinode, renders):
    """Two routers a model by default, spread over the nodes, one kept through a drain; one router gets no PDB."""
    router = model_objects(multinode[1], "llama-3.1-8b-multi", part="router")
    deployment, pdb = router["Deployment"], router["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] == 2
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"] == deployment["spec"]["selector"]
    # The model's own PDB is another object, on the model's pods, not the routers'.
    assert model_objects(multinode[1], "llama-3.1-8b-multi")["PodDisruptionBudget"]["metadata"]["name"] != pdb["metadata"]["name"]
    one = renders.bundle("inventories/multinode", extra_vars={"vllm_models_router_replicas": 1}, tags="llama-3.1-8b-multi",
                         label="one-router")[1]
    single = model_objects(one, "llama-3.1-8b-multi", part="router")
    assert single["Deployment"]["spec"]["replicas"] == 1 and "PodDisruptionBudget" not in single


def test_router_discovers_exactly_its_models_pods(multinode):
    objects = multinode[1]
    model = model_objects(objects, "llama-3.1-8b-multi")
    router = model_objects(objects, "llama-3.1-8b-multi", part="router")
    deployment = router["Deployment"]
    assert [validate(o) for o in router.values()] == [[]] * len(router)
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "docker.io/vllm/vllm-router:v0.1.17" and c["command"] == ["vllm-router"]
    args = c["args"]
    assert "--service-discovery" in args and _router_arg(deployment, "--service-discovery-namespace") == "llm-serving"
    selector = args[args.index("--selector") + 1:args.index("--service-discovery-port")]
    # The selector is the model Service's: every pod of this model, none of another model, not the router itself.
    assert dict(s.split("=", 1) for s in selector) == model["Service"]["spec"]["selector"]
    pod_labels = model["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert model["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert not model["Service"]["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert _router_arg(deployment, "--service-discovery-port") == _router_arg(deployment, "--port") == str(PORTS["vllm"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": PORTS["vllm"], "metrics": PORTS["router_metrics"]}
    assert _router_arg(deployment, "--prometheus-port") == str(PORTS["router_metrics"]) and _router_arg(deployment, "--prometheus-host") == "0.0.0.0"
    # It may read pods of its namespace and nothing else.
    assert router["Role"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert router["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "vllm-llama-3-1-8b-multi-router",
                                                  "namespace": "llm-serving"}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "vllm-llama-3-1-8b-multi-router"
    assert router["Service"]["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert router["Service"]["metadata"]["name"] == "vllm-llama-3-1-8b-multi-router"
