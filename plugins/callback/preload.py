# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load the controller-side plugins once, in the controller, before the tasks run."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
short_description: Load the controller-side plugins once per run instead of once per task
description:
  - Ansible runs every task in a worker process forked from the controller. A plugin the controller has not
    imported yet is imported again by every worker that needs it, and a worker's first template imports all of
    ansible-core's Jinja filters and tests, so each task of a play pays for those imports anew.
  - At the start of every play this callback imports, in the controller, ansible-core's Jinja filters and tests,
    the filter, test, lookup and action plugins of this collection, and the action plugin of every task the play
    names, so the forked workers inherit them.
  - It prints nothing and changes no result. A plugin that cannot be loaded here is left to the worker, which
    reports the error where the task runs.
  - The collection's ansible.cfg enables it; elsewhere add C(llmserve.k3s.preload) to C(callbacks_enabled).
requirements:
  - enable in ansible.cfg (callbacks_enabled = llmserve.k3s.preload)
author:
  - llmserve.k3s maintainers (@llmserve)
"""

import importlib
import pathlib

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import action_loader, filter_loader, test_loader
from ansible.utils.display import Display

display = Display()

COLLECTION = "llmserve.k3s"
# This collection's plugin folders whose modules run in the controller (filters and tests inside templates).
CONTROLLER_KINDS = ("filter", "test", "lookup", "action")


def collection_plugins(root=None):
    """Python module names of this collection's controller-side plugins, from its plugins/ folder."""
    root = pathlib.Path(root or pathlib.Path(__file__).resolve().parents[1])
    package = "ansible_collections.%s.plugins" % COLLECTION
    return ["%s.%s.%s" % (package, kind, path.stem)
            for kind in CONTROLLER_KINDS for path in sorted((root / kind).glob("[a-z]*.py"))]


def play_actions(play):
    """(action, collections) of every task the play holds once its static imports are expanded."""
    found = []
    for block in play.pre_tasks + play.tasks + play.post_tasks + play.handlers:
        for task in block.get_tasks():
            entry = (task.action, tuple(task.collections or ()))
            if task.action and entry not in found:
                found.append(entry)
    return found


def preload(play=None):
    """Import the plugins into this process; returns the names that could not be loaded (left to the workers)."""
    missed = []
    for loader in (filter_loader, test_loader):
        list(loader.all())
    for name in collection_plugins():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker that needs it reports the error with its task
            missed.append(name)
    for action, collections in play_actions(play) if play is not None else ():
        try:
            if action_loader.has_plugin(action, collection_list=list(collections)):
                action_loader.get(action, class_only=True, collection_list=list(collections))
        except Exception:  # noqa: BLE001 - as above
            missed.append(action)
    return missed


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "llmserve.k3s.preload"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play):
        missed = preload(play)
        if missed:
            display.vvv("llmserve.k3s.preload: left to the workers: %s" % ", ".join(missed))
