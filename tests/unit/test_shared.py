"""The values the collection shares are decided once, in _shared, and the plan fact carries them to every template."""

from __future__ import annotations

import pytest

import plans
from ansible_collections.llmserve.k3s.plugins.filter import llmserve as llmserve_filters
from ansible_collections.llmserve.k3s.plugins.module_utils import (
    _apply, _bundle, _catalog, _diagnose, _gateway, _plan, _report, _shared, _sizing)

PLAN = plans.workstation_plan()


def test_the_plan_carries_the_shared_values():
    assert PLAN["ports"] == _shared.PORTS
    assert PLAN["pods"] == _shared.POD_LABELS
    assert PLAN["labels"]["managed_by"] == {_shared.MANAGED_BY_LABEL: _shared.MANAGED_BY}
    assert PLAN["labels"]["common"] == _shared.LABELS == dict(PLAN["labels"]["part_of"], **PLAN["labels"]["managed_by"])
    assert PLAN["labels"]["managed_by_selector"] == "app.kubernetes.io/managed-by=llmserve.k3s"
    assert PLAN["gpu"] == {"accelerator": "nvidia", "resource": "nvidia.com/gpu", "node_labels": {_shared.GPU_NODE_LABEL: "true"},
                           "node_selector": _shared.GPU_NODE_LABEL + "=true"}
    assert PLAN["vllm_image_tag"] == "v" + _shared.VLLM_VERSION
    assert PLAN["kv_tolerance"] == _shared.KV_TOLERANCE


def test_a_copy_of_the_plan_cannot_change_the_shared_values():
    plan = _plan.build_plan([], [], {}, {})
    plan["ports"]["vllm"] = 1
    plan["pods"]["vllm"]["app.kubernetes.io/name"] = "other"
    plan["labels"]["common"]["x"] = "y"
    assert _shared.PORTS["vllm"] == 8000 and _shared.POD_LABELS["vllm"] == {"app.kubernetes.io/name": "vllm"}
    assert "x" not in _shared.LABELS


def test_each_model_selector_and_path_come_from_the_shared_values():
    assert PLAN["models"]
    for model in PLAN["models"]:
        assert model["selector"] == dict(_shared.POD_LABELS["vllm"], **{"llmserve.io/model": model["name"]})
        assert model["path"] == _shared.model_path(model["name"]) == "/models/%s/v1" % model["name"]
        assert PLAN["ingress"]["paths"][model["name"]] == model["path"]
    assert _gateway.route_prefixes() == [_shared.API_ROOT + "/", _shared.MODELS_ROOT + "/"]


@pytest.mark.parametrize("accelerator, resource", [("nvidia", "nvidia.com/gpu"), ("amd", "amd.com/gpu"),
                                                   ("intel-gaudi", "habana.ai/gaudi")])
def test_the_plan_names_the_accelerators_gpu_resource(accelerator, resource):
    plan = _plan.build_plan([], [], {}, {}, {"accelerator": accelerator})
    assert plan["gpu"]["accelerator"] == accelerator and plan["gpu"]["resource"] == resource


def test_render_dir_and_apply_are_the_plans():
    plan = _plan.build_plan([], [], {}, {}, {"render_dir": "/tmp/bundle", "apply": False})
    assert plan["render_dir"] == "/tmp/bundle" and plan["apply"] is False
    assert _plan.build_plan([], [], {}, {})["apply"] is True


def test_the_ports_are_distinct():
    assert len(set(_shared.PORTS.values())) == len(_shared.PORTS)


def test_python_reads_the_shared_values():
    assert _bundle.MANAGED_BY_LABEL == _shared.MANAGED_BY_LABEL and _bundle.MANAGED_BY == _shared.MANAGED_BY
    assert _apply.MANAGED_BY == _shared.MANAGED_BY
    assert _catalog.GIB == _sizing.GIB == _report.GIB == _shared.GIB == 1024 ** 3
    assert _report.KV_TOLERANCE == _shared.KV_TOLERANCE
    assert _diagnose.GPU_RESOURCE == _shared.GPU_RESOURCES["nvidia"]
    assert not hasattr(_plan, "GIB") and not hasattr(_plan, "MANAGED_BY")


def test_gpu_node_labels_are_the_ones_the_gpu_pods_select():
    labels = llmserve_filters.gpu_node_labels("NVIDIA L40S")
    assert labels == {"llmserve.io/gpu": "true", "llmserve.io/gpu-product": "NVIDIA-L40S"}
    assert PLAN["gpu"]["node_labels"].items() <= labels.items()
    assert llmserve_filters.gpu_node_labels(None)["llmserve.io/gpu-product"] == "unknown"


def test_table():
    assert _shared.table([("A", "BB"), ("ccc", "d")]) == ["A    BB", "ccc  d"]
