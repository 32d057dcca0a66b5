"""Bad input fails in preflight, before any file is written, with a message naming the field and the fix.

Each case is a real render into a folder that does not exist yet; after the failed run it must still not exist.
The runs are independent: they all start in the session's render pool when the module starts. The plan reports every
catalog entry's problems and the tracing settings' at once: the cases whose messages name their own entry (not its
place) join their entries into one catalog, and cases refused by the same task with no variable and no message in
common share a run (tests/lib/batches.py); each case's own message must be in its run.
"""

from __future__ import annotations

import pytest

from batches import flat, pack

MODEL = {"name": "m", "model": "org/m", "params_b": 1.0}
KEYS = ["sk-bad-input-key-AAAA-0000-secret", "sk-bad-input-key-BBBB-1111-secret"]


def _models(*changes, prefix="m"):
    """A catalog of one valid model per change (named prefix0, prefix1, ...), each updated with the change (None
    deletes the key)."""
    out = []
    for index, change in enumerate(changes):
        entry = dict(MODEL, name="%s%d" % (prefix, index))
        for key, value in change.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        out.append(entry)
    return {"llmserve_models": out}


# id -> (extra vars, --tags, strings the output must contain)
CASES = {
    "duplicate-name": ({"llmserve_models": [MODEL, dict(MODEL)]}, None,
                       ["llmserve_models[1] (m).name: 'm' clashes with llmserve_models[0] (m)", "unique name"]),
    "names-clash-as-objects": ({"llmserve_models": [dict(MODEL, name="a.b"), dict(MODEL, name="a-b")]}, None,
                               ["llmserve_models[1] (a-b).name", "clashes with llmserve_models[0] (a.b)"]),
    "name-not-dns-1123": (_models({"name": "Llama_3"}), None,
                          ["(Llama_3).name: 'Llama_3' is not a DNS-1123 name", "lower-case letters"]),
    "name-missing": (_models({"name": None}), None, ["llmserve_models[0].name: missing", "DNS-1123 name"]),
    "unknown-quantization": (_models({"quantization": "awq4"}, prefix="quant"), None,
                             ["(quant0).quantization: unknown quantization 'awq4'", "awq_marlin"]),
    "unknown-dtype": (_models({"dtype": "fp16"}, prefix="dtype"), None, ["(dtype0).dtype: unknown dtype 'fp16'", "bfloat16"]),
    "gpus-beyond-the-nodes": (_models({"replicas": 3}, {"replicas": 2}), None,
                              ["(m1).replicas: replica 2 needs 1 GPU(s) on one node", "the nodes have 4",
                               "lower replicas or tensor_parallel_size"]),
    "tensor-parallel-beyond-a-node": (_models({"tensor_parallel_size": 8}), None,
                                      ["(m0).tensor_parallel_size: 8 GPUs per replica, but the largest node has 4",
                                       "set tensor_parallel_size to 4 or less"]),
    "weights-beyond-gpu-memory": (_models({"params_b": 70.0}), None,
                                  ["(m0).tensor_parallel_size: the weights (130.4 GiB) over 1 GPU(s)", "quantization"]),
    "negative-replicas": (_models({"replicas": -1}, prefix="neg"), None, ["(neg0).replicas: -1 is negative", "set 0 or more replicas"]),
    "missing-model-id": (_models({"model": None}, prefix="noid"), None, ["(noid0).model: missing model id", "Hugging Face id"]),
    "unknown-field": (_models({"max_model_length": 4096}, prefix="field"), None,
                      ["(field0).max_model_length: unknown field", "did you mean max_model_len?"]),
    "unknown-autoscaling-field": (_models({"autoscaling": {"enabled": True, "max_replica": 3}}, prefix="scale"), None,
                                  ["(scale0).autoscaling.max_replica: unknown field", "did you mean max_replicas?"]),
    "managed-vllm-flag": (_models({"extra_args": ["--max-model-len=4096"]}, prefix="flag"), None,
                          ["(flag0).extra_args: --max-model-len is set by the role", "catalog field max_model_len"]),
    # vLLM reads '_' as '-' in a flag's name and --flag=value as --flag value; --api-key would replace the internal key.
    "managed-vllm-flag-spellings": (_models({"extra_args": ["--served_model_name", "x", "--gpu_memory_utilization=0.99",
                                                            "--max_model_len", "999999", "--api-key", "weak"]}, prefix="spell"), None,
                                    ["(spell0).extra_args: --served_model_name (vLLM reads it as --served-model-name) is set by the role",
                                     "set the catalog field name instead",
                                     "(spell0).extra_args: --gpu_memory_utilization (vLLM reads it as --gpu-memory-utilization)",
                                     "set the catalog field gpu_memory_utilization instead",
                                     "(spell0).extra_args: --max_model_len (vLLM reads it as --max-model-len)",
                                     "(spell0).extra_args: --api-key is set by the role",
                                     "client API keys are llmserve_api_keys, checked at the gateway"]),
    "named-keys-duplicate-name": ({"llmserve_api_keys": [{"name": "alice", "key": KEYS[0]}, {"name": "alice", "key": KEYS[1]}]}, None,
                                  ["llmserve_api_keys[1].name: 'alice' is used twice (also llmserve_api_keys[0]). "
                                   "Fix: give every key its own name."]),
    "named-key-empty": ({"llmserve_api_keys": [{"name": "alice", "key": KEYS[0]}, {"name": "bob", "key": ""}]}, None,
                        ["llmserve_api_keys[1].key: an empty key. Fix: set a key of 16 or more characters"]),
    "same-key-twice": ({"llmserve_api_keys": [KEYS[0], {"name": "bob", "key": KEYS[0], "groups": ["staff"]}]}, None,
                       ["llmserve_api_keys[1].key: the same key as llmserve_api_keys[0] (key-"]),
    "unknown-router-policy": (_models({"router_policy": "cache-aware", "replicas": 2}, prefix="policy"), None,
                              ["(policy0).router_policy: 'cache-aware' is not a vllm-router policy", "did you mean cache_aware?",
                               "cache_aware, consistent_hash, round_robin"]),
    "router-policy-against-affinity": (
        _models({"router_policy": "round_robin", "session_affinity": True, "replicas": 2}, prefix="affinity"), None,
        ["(affinity0).router_policy: 'round_robin' cannot keep a client on one replica", "use router_policy consistent_hash"]),
    # LoRA adapters: a name clash (adapter names are model names to clients), an architecture vLLM serves without
    # LoRA, a rank above vLLM's --max-lora-rank choices.
    "adapter-name-clash": (_models({"adapters": [{"name": "m1", "source": "org/a"}]}, {}), None,
                           ["(m0).adapters[0].name: 'm1' clashes with llmserve_models[1].name",
                            "give the adapter a name no model or other adapter has"]),
    "adapter-without-lora-support": (_models({"architecture": "falcon-7b", "params_b": None,
                                              "adapters": [{"name": "falcon-a", "source": "org/a"}]}, prefix="falcon"), None,
                                     ["(falcon0).adapters: architecture falcon-7b (vLLM's FalconForCausalLM) has no LoRA support",
                                      "merge the adapter into the weights"]),
    "adapter-rank-too-large": (_models({"adapters": [{"name": "rank-a", "source": "org/a", "rank": 1024}]}, prefix="rank"), None,
                               ["(rank0).adapters[0].rank: 1024 is not a rank vLLM accepts (a whole number from 1 to 512",
                                "at most 512"]),
    "catalog-not-a-list": ({"llmserve_models": {"name": "m"}}, None,
                           ["llmserve_models is a mapping, not a list. Fix: write the catalog as a list of mappings"]),
    "unknown-storage-mode": ({"llmserve_storage_mode": "nfs"}, None,
                             ['llmserve_storage_mode (plan_storage_mode) is "nfs": unknown storage mode', "local-path"]),
    "unknown-storage-mode-model-tag": ({"llmserve_storage_mode": "nfs"}, "llama-3.1-8b",
                                       ['llmserve_storage_mode (plan_storage_mode) is "nfs"']),
    "disabled-model-by-tag": ({}, "llama-3.1-8b-multi",
                              ["--tags names llama-3.1-8b-multi, which llmserve_models has with enabled: false",
                               "set enabled: true"]),
    "bad-namespace": ({"llmserve_namespace": "LLM_serving"}, None,
                      ['llmserve_namespace (llm_namespace_name) is "LLM_serving": not a DNS-1123 label']),
    # Tracing (module_utils/_tracing.py): checked in the plan role, before any role renders.
    "tracing-endpoint-not-otlp": ({"llmserve_tracing": {"enabled": True, "endpoint": "otel-collector:4317"}}, None,
                                  ["llmserve_tracing.endpoint is 'otel-collector:4317': not an OTLP address",
                                   "Write grpc://host:4317 (OTLP/gRPC) or http://host:4318"]),
    "tracing-http-on-grpc-port": ({"llmserve_tracing": {"enabled": True, "endpoint": "http://otel:4317"}}, None,
                                  ["4317 is the OTLP/gRPC port", "Write grpc://otel:4317, or http://otel:4318"]),
    "tracing-sample-rate-above-1": ({"llmserve_tracing": {"enabled": True, "endpoint": "grpc://otel:4317", "sample_rate": 10}}, None,
                                    ["llmserve_tracing.sample_rate is 10: not a number from 0 to 1",
                                     "Fix: e.g. sample_rate: 0.1 for one request in ten"]),
    "tracing-sample-rate-negative": ({"llmserve_tracing": {"enabled": True, "backend": "jaeger", "sample_rate": -0.5}},
                                     "llama-3.1-8b", ["llmserve_tracing.sample_rate is -0.5"]),
    "tracing-legacy-endpoint": ({"llmserve_otlp_traces_endpoint": "tempo.monitoring.svc"}, None,
                                ["llmserve_otlp_traces_endpoint (llmserve_tracing.endpoint) is 'tempo.monitoring.svc'"]),
    "tracing-nowhere": ({"llmserve_tracing": {"enabled": True}}, None,
                        ["nowhere to send spans: endpoint is empty and backend is none", "backend: jaeger"]),
    "bad-cache-size": ({"llmserve_model_cache_size": "lots"}, None, ['llmserve_model_cache_size "lots"', "500Gi"]),
}


# The cases whose messages name their own entry (not its place): their entries join one catalog.
ENTRY_CASES = ("name-not-dns-1123", "unknown-quantization", "unknown-dtype", "negative-replicas", "missing-model-id",
               "unknown-field", "unknown-autoscaling-field", "managed-vllm-flag", "managed-vllm-flag-spellings",
               "unknown-router-policy", "router-policy-against-affinity", "adapter-without-lora-support",
               "adapter-rank-too-large")
# The task that refuses a case (with the run's --tags); the others are the plan's catalog and tracing check.
TASKS = {"unknown-storage-mode": "plan-settings", "unknown-storage-mode-model-tag": "plan-settings",
         "named-keys-duplicate-name": "ingress", "named-key-empty": "ingress", "same-key-twice": "ingress",
         "disabled-model-by-tag": "select", "bad-namespace": "namespace", "bad-cache-size": "storage"}


def _phase(case):
    tags = CASES[case][1]
    return TASKS.get(case, "catalog") + ("@" + tags if tags else "")


RUNS, RUN_OF = pack({case: (spec[0], _phase(case), "tracing" if case.startswith("tracing-") else case,
                            ("llmserve_models",) if case in ENTRY_CASES else ())
                     for case, spec in CASES.items()})
PREFETCH = {label: {"extra_vars": extra, "tags": next(CASES[c][1] for c in CASES if RUN_OF[c] == label)}
            for label, extra in RUNS.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_before_writing(case, renders):
    dest, result = renders.run(label=RUN_OF[case], **PREFETCH[RUN_OF[case]])
    output = flat(result.stdout)  # messages are folded across lines in the output
    assert result.returncode != 0, output[-2000:]
    for expected in CASES[case][2]:
        assert expected in output, "%r not in:\n%s" % (expected, output[-3000:])
    assert not dest.exists(), sorted(str(p) for p in dest.rglob("*"))
    for key in KEYS:  # the identity checks print names and positions, never a key
        assert key not in result.stdout


def test_the_entry_cases_share_one_catalog_and_few_runs():
    assert len({RUN_OF[case] for case in ENTRY_CASES}) == 1
    catalog = RUNS[RUN_OF[ENTRY_CASES[0]]]["llmserve_models"]
    assert len(catalog) == len(ENTRY_CASES)
    assert len({entry.get("name") for entry in catalog}) == len(catalog)
    assert len(RUNS) < len(CASES) * 2 // 3
