"""Test-only action plugin: what the worker process running this task finds already imported, as JSON into `dest`."""

from __future__ import annotations

import json
import sys

from ansible.plugins.action import ActionBase
from ansible.plugins.loader import filter_loader, test_loader

from ansible_collections.llmserve.k3s.plugins.callback.preload import collection_plugins


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # pylint: disable=protected-access  # the loaders' caches are what the preload fills
        report = dict(jinja_filters=len(filter_loader._cached_non_collection_wrappers),
                      jinja_tests=len(test_loader._cached_non_collection_wrappers),
                      collection_plugins=[name for name in collection_plugins() if name in sys.modules],
                      assert_action="ansible_collections.ansible.builtin.plugins.action.assert" in sys.modules)
        with open(self._task.args["dest"], "w", encoding="utf-8") as handle:
            json.dump(report, handle)
        result["changed"] = False
        return result
