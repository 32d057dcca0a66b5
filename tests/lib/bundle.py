"""Lookups in a rendered bundle ({relative path: object}, as k8s_schema.load_bundle returns it)."""

from __future__ import annotations

MODEL_LABEL = "llmserve.io/model"


def of_kind(objects, kind):
    """{path: object} of one kind."""
    return {path: obj for path, obj in objects.items() if obj["kind"] == kind}


def one(objects, kind, name):
    """The object of that kind and name; fails when there is not exactly one."""
    found = [obj for obj in objects.values() if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, "%d %s named %s in the bundle" % (len(found), kind, name)
    return found[0]


def model_names(objects):
    """Names of the model components (models/<name>/...)."""
    return sorted({path.split("/")[1] for path in objects if path.startswith("models/")})


def model_objects(objects, name, part="model"):
    """{kind: object} of one model's component: the model's own objects, or (part="router") those of its vllm-router."""
    out = {}
    for path, obj in objects.items():
        is_router = ((obj.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component") == "router"
        if path.startswith("models/%s/" % name) and is_router == (part == "router"):
            assert obj["kind"] not in out, "two %s in models/%s" % (obj["kind"], name)
            out[obj["kind"]] = obj
    return out


def container(deployment):
    """The vllm container of a model Deployment."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["vllm"]
    return containers[0]


def env(deployment):
    """{name: value} of the vllm container's environment."""
    return {item["name"]: item.get("value") for item in container(deployment).get("env", [])}


def arg(deployment, flag):
    """The value after `flag` in the vllm container's args (None when absent)."""
    args = container(deployment)["args"]
    return args[args.index(flag) + 1] if flag in args else None


def volumes(deployment):
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}


def mounts(deployment):
    return {m["name"]: m for m in container(deployment).get("volumeMounts", [])}
