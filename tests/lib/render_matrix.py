"""Render every full bundle the tests render (the inventories, tests/render's catalogs, the serving catalog) into one
folder each, to compare two versions of the code byte for byte:

    python tests/lib/render_matrix.py /tmp/before      # on the old commit
    python tests/lib/render_matrix.py /tmp/after       # on the new one
    diff -r /tmp/before /tmp/after

A render the tests expect to fail (test_bad_input.py, test_ingress_preflight.py, labels "bad-...") or that runs only
some tags is left out.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "render"), str(HERE.parents[1] / ".venv" / "collections")]

from playbook import render  # noqa: E402  pylint: disable=wrong-import-position


def matrix():
    """{label: (inventory, extra_vars)} of every full render."""
    conftest = importlib.import_module("conftest")
    runs = {label: (inventory, extra) for label, (inventory, extra) in conftest.SESSION_CATALOGS.items()}
    for module in sorted((HERE.parent / "render").glob("test_*.py")):
        if module.stem in ("test_bad_input", "test_ingress_preflight"):
            continue
        for label, spec in getattr(importlib.import_module(module.stem), "PREFETCH", {}).items():
            if label.startswith("bad") or spec.get("tags") or spec.get("playbook", "render.yml") != "render.yml" or spec.get("env"):
                continue
            runs[module.stem[5:] + "-" + label] = (spec.get("inventory", "inventories/workstation"), spec.get("extra_vars"))
    traefik_stack = importlib.import_module("traefik_stack")
    for mode, extra in traefik_stack.AUTH_MODES.items():
        runs["serving-" + mode] = ("inventories/workstation", dict(extra, llmserve_models=traefik_stack.SERVING_MODELS))
    return runs


def main(dest):
    dest = pathlib.Path(dest).resolve()
    runs = matrix()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = {label: pool.submit(render, dest / label, inventory=inventory, extra_vars=extra)
                   for label, (inventory, extra) in runs.items()}
    failed = [label for label, run in results.items() if run.result().returncode != 0]
    for label in failed:
        print("render %s failed:\n%s" % (label, results[label].result().stdout[-3000:]))
    print("%d bundles in %s" % (len(runs) - len(failed), dest))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
