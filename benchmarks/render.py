"""Render wall time (the real `ansible-playbook playbooks/render.yml`) for catalogs of growing size.

Catalogs: the workstation inventory's own, and generated catalogs of 10 and 50 models on generated inventories
of 8-GPU nodes (enough GPUs for every replica). For each: the first render into an empty folder and a second
render that finds nothing to change. Then the workstation inventory's first render with the collection's
ansible.cfg and with the same settings minus the preload callback (plugins/callback/preload.py), alternating,
three times each. Prints tables; `make benchmarks` runs it.
"""

from __future__ import annotations

import math
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

from playbook import config_without_preload, recap, render  # noqa: E402  (tests/lib is put on the path just above)

GPUS_PER_NODE = 8
SIZES = (10, 50)
# What generated entries look like: the presets and plain parameter counts of the three size classes.
SHAPES = [
    {"architecture": "llama-3.1-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "max_model_len": 8192},
    {"params_b": 1.54, "model": "Qwen/Qwen2.5-1.5B-Instruct", "max_model_len": 4096},
    {"architecture": "mixtral-8x7b", "model": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ", "quantization": "awq", "dtype": "float16"},
    {"architecture": "deepseek-coder-v2-lite", "model": "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct", "gated": True},
    {"params_b": 7.0, "model": "mistralai/Mistral-7B-Instruct-v0.3", "extra_args": ["--enforce-eager"],
     "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 2}},
]


def inventory(folder, models):
    """An inventory of ceil(models / 8) nodes with 8 GPUs each and a catalog of `models` entries."""
    nodes = max(1, math.ceil(models / GPUS_PER_NODE))
    hosts = "\n".join("        node-%d: {ansible_host: 192.0.2.%d}" % (i, 10 + i) for i in range(nodes))
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "hosts.yml").write_text("k3s_cluster:\n  children:\n    k3s_server:\n      hosts:\n%s\n" % hosts, encoding="utf-8")
    lines = ["llmserve_gpu_count: %d" % GPUS_PER_NODE, "llmserve_gpu_name: NVIDIA L40", "llmserve_gpu_memory_gib: 44.99",
             "llmserve_models:"]
    for index in range(models):
        entry = dict(SHAPES[index % len(SHAPES)], name="model-%02d" % index)
        lines.append("  - " + _yaml(entry))
    (folder / "group_vars" / "all" / "models.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _yaml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (k, _yaml(v)) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return '"%s"' % value if isinstance(value, str) else str(value)


def timed(dest, inv, env=None):
    start = time.monotonic()
    result = render(dest, inv, env=env)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        sys.exit("render of %s failed:\n%s" % (inv, result.stdout[-3000:]))
    return seconds, recap(result.stdout)["changed"]


def main():
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmserve-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        cases = [("workstation inventory", "inventories/workstation")]
        for size in SIZES:
            cases.append(("generated, %d models" % size, str(inventory(tmp / ("inv-%d" % size), size))))
        for index, (label, inv) in enumerate(cases):
            dest = tmp / ("out-%d" % index)
            first, _changed = timed(dest, inv)
            second, changed = timed(dest, inv)
            models = len([p for p in (dest / "models").iterdir()])
            files = len(list(dest.rglob("*.yaml")))
            rows.append((label, models, files, first, second, changed))
            shutil.rmtree(dest)
    base = rows[0]
    print("Render wall time, ansible-playbook playbooks/render.yml (this machine, one run each)")
    print("%-24s %7s %6s %10s %10s %12s %14s" % ("catalog", "models", "files", "first s", "again s", "s/model", "marginal s/model"))
    for label, models, files, first, second, changed in rows:
        marginal = (first - base[3]) / (models - base[1]) if models != base[1] else float("nan")
        print("%-24s %7d %6d %10.1f %10.1f %12.2f %14s" % (label, models, files, first, second, first / models,
                                                             "-" if math.isnan(marginal) else "%.2f" % marginal))
        if changed:
            sys.exit("the second render of %s reported changed=%d" % (label, changed))
    preload_table()


def preload_table(rounds=3):
    """First renders of the workstation inventory with and without the preload callback, side by side."""
    with tempfile.TemporaryDirectory(prefix="llmserve-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        plain = config_without_preload(tmp)
        times = {"with preload": [], "without": []}
        for index in range(rounds):
            for label, env in (("with preload", None), ("without", {"ANSIBLE_CONFIG": str(plain)})):
                times[label].append(timed(tmp / ("out-%s-%d" % (label.split()[0], index)), "inventories/workstation", env)[0])
    print()
    print("First render of the workstation inventory, with and without the preload callback (%d alternating runs each)" % rounds)
    print("%-14s %10s %10s" % ("ansible.cfg", "median s", "min s"))
    for label, values in times.items():
        print("%-14s %10.1f %10.1f" % (label, sorted(values)[len(values) // 2], min(values)))
    print("ratio without / with: %.2f" % (sorted(times["without"])[rounds // 2] / sorted(times["with preload"])[rounds // 2]))


if __name__ == "__main__":
    main()
