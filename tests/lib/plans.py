"""Plans of the inventories made by the planner itself, for tests that compare with what the plan predicts."""

from __future__ import annotations

import yaml

from ansible_collections.llmserve.k3s.plugins.module_utils import _plan
from playbook import ROOT


def workstation_plan():
    """llmserve_plan of inventories/workstation (its GPU facts from group_vars/all/cluster.yml), as the plan role makes it."""
    group_vars = ROOT / "inventories" / "workstation" / "group_vars" / "all"
    cluster = yaml.safe_load((group_vars / "cluster.yml").read_text(encoding="utf-8"))
    models = yaml.safe_load((group_vars / "models.yml").read_text(encoding="utf-8"))["llmserve_models"]
    defaults = yaml.safe_load((ROOT / "roles" / "plan" / "defaults" / "main.yml").read_text(encoding="utf-8"))
    nodes = [{"name": "workstation", "gpu_count": cluster["llmserve_gpu_count"], "gpu_name": cluster["llmserve_gpu_name"],
              "gpu_slices": 1, "gpu_memory_gib": cluster["llmserve_gpu_memory_gib"], "labels": {}}]
    return _plan.build_plan(models, nodes, defaults["plan_model_defaults"], defaults["plan_size_classes"])
