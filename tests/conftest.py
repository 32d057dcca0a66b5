"""Shared pytest setup: the collection importable as ansible_collections.llmserve.k3s, tests/lib on the path."""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".venv" / "collections"
for path in (str(COLLECTIONS), str(ROOT / "tests" / "lib")):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
