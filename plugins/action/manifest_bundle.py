# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""manifest_bundle in the controller's process.

The bundle always lives on the controller, so there is nothing to ship to a host: writing it here saves a module
process per component (the cost that grows with the catalog). Same arguments, results and check mode as the module.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.llmserve.k3s.plugins.module_utils._bundle import ARGUMENT_SPEC, BundleError, run


def _plain(value):
    """Plain dict/list/str/int/float/bool/None (templating may hand over tagged subclasses)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        params["objects"] = _plain(params["objects"])
        try:
            result.update(run(params, bool(self._task.check_mode)))
        except (BundleError, OSError) as exc:
            raise AnsibleActionFail("manifest_bundle: component %s: %s" % (params["component"], exc)) from exc
        return result
