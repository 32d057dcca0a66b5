#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_sizing
short_description: Predict whether a model fits a GPU under vLLM, and with which settings
version_added: "0.1.0"
description:
  - Predicts what vLLM V1 does at startup, before anything is deployed, from the model's architecture and the GPU
    memory. It returns the weights, activation peak, non-torch memory, the KV cache left on each GPU, how many
    tokens it holds, how many requests of O(max_model_len) run at once, and whether vLLM starts at all.
  - When the model does not fit, RV(reasons) says why and RV(suggestions) what would fit (the largest
    max_model_len, a tensor parallel size, a quantization, an FP8 KV cache).
  - RV(recommended) gives the settings a deployment should use (tensor parallel size, max_model_len,
    max_num_seqs, memory and CPU requests, shared memory, startup probe budget).
  - C(docs/sizing.md) in the collection explains the model, its sources and its measured accuracy.
  - Pure computation; changes nothing. O(config_path) is read on the target host.
options:
  model:
    description:
      - Architecture facts, as in the model's config.json. C(params_b) (total parameters, billions), C(num_layers),
        C(num_kv_heads), C(head_dim), and optionally C(kv_lora_rank) and C(qk_rope_head_dim) (MLA models such as
        DeepSeek-V2), C(num_attention_heads), C(hidden_size), C(intermediate_size), C(vocab_size),
        C(max_position_embeddings), C(tie_word_embeddings), C(num_experts), C(experts_per_token), C(weights_gib)
        (measured weights of the whole model, which overrides the estimate from C(params_b)).
      - With C(vocab_size) and C(hidden_size) given, the weights of a quantized checkpoint keep the embeddings, the
        LM head (unless C(tie_word_embeddings)) and the MoE router (C(num_experts)) in 16 bit.
      - Exactly one of O(model), O(model_preset) and O(config_path).
    type: dict
  model_preset:
    description: A built-in architecture, for example C(llama-3.1-8b), C(mixtral-8x7b), C(deepseek-coder-v2-lite), C(qwen2.5-72b).
    type: str
  config_path:
    description:
      - Path of a Hugging Face C(config.json) on the target, for example under C(/var/lib/llm-models).
      - Read for the layers, heads, head size, hidden and intermediate sizes, C(vocab_size), C(tie_word_embeddings),
        the experts (C(num_local_experts), C(num_experts) or C(n_routed_experts)) and MLA's C(kv_lora_rank); the
        parameter count is estimated from them.
    type: path
  dtype:
    description: Weights and activations dtype (vLLM C(--dtype)).
    type: str
    choices: [auto, bfloat16, float16, float32]
    default: bfloat16
  quantization:
    description: Quantization of the checkpoint (vLLM C(--quantization)); C(none) for 16-bit weights.
    type: str
    choices: [none, awq, awq_marlin, bitsandbytes, compressed-tensors, experts_int8, fbgemm_fp8, fp8, gguf, gptq,
              gptq_marlin, int8, modelopt, mxfp4, w4a16, w8a8]
    default: none
  kv_cache_dtype:
    description: KV cache dtype (vLLM C(--kv-cache-dtype)); C(fp8), C(fp8_e4m3) and C(fp8_e5m2) halve the cache per token.
    type: str
    choices: [auto, fp8, fp8_e4m3, fp8_e5m2]
    default: auto
  vllm_version:
    description:
      - The vLLM release that will serve the model (the image tag without C(v)); its accounting is applied - the
        engine (V0 before 0.8), the batch the memory profile runs, the sampler warm-up (0.11 and later), the
        CUDA-graph estimate (0.21 and later).
      - By default the release the collection deploys (C(vllm_models) accelerator profile).
    type: str
  cudagraph_estimate:
    description:
      - vLLM's C(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS) - whether the estimated CUDA-graph memory is taken out of
        the KV cache budget. Unset, the release's default (on from 0.21); it has no effect before 0.21.
    type: bool
  gpu_memory_gib:
    description:
      - Memory of one GPU as the driver reports it (nvidia-smi memory.total, in GiB; 44.99 for an L40).
      - With O(gpu_name) as well, this value wins and the name gives the part the driver reserves.
    type: float
  gpu_name:
    description:
      - A GPU of the built-in table - C(L40), C(L40S), C(A100-40GB), C(A100-80GB), C(H100), C(H200), C(A10), C(L4),
        C(RTX 3090), C(RTX 4090), C(RTX A6000) - or the name nvidia-smi prints (C(NVIDIA L40)).
      - One of O(gpu_memory_gib) and O(gpu_name) is required.
    type: str
  tensor_parallel_size:
    description: GPUs per replica.
    type: int
    default: 1
  gpu_memory_utilization:
    description: Share of each GPU vLLM may use (vLLM's default).
    type: float
    default: 0.9
  max_model_len:
    description: Context length vLLM must hold for one request; by default the model's C(max_position_embeddings).
    type: int
  max_num_seqs:
    description: Concurrent sequences; by default vLLM's (256, or 1024 on GPUs of 70 GiB and more except the A100).
    type: int
  max_num_batched_tokens:
    description: Tokens per scheduler step, the batch vLLM profiles; by default vLLM's (2048, or 8192 on the GPUs above).
    type: int
  predownload:
    description: The weights are already on the host; the startup budget leaves out the download.
    type: bool
    default: false
author:
  - llmserve.k3s maintainers (@llmserve)
"""

EXAMPLES = r"""
- name: Will Llama 3.1 8B with 32k context fit on an L40?
  llmserve.k3s.gpu_sizing:
    model_preset: llama-3.1-8b
    gpu_name: L40
    max_model_len: 32768
  register: __sizing

- name: Size a model from its config.json on the host
  llmserve.k3s.gpu_sizing:
    config_path: /var/lib/llm-models/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/main/config.json
    gpu_memory_gib: "{{ llmserve_gpu_memory_gib }}"
    quantization: none

- name: Fail with the reason and the fix when it does not fit
  ansible.builtin.assert:
    that: __sizing.fits
    fail_msg: "{{ __sizing.reasons | join('; ') }}. Fix: {{ __sizing.suggestions | join(', or ') }}"
"""

RETURN = r"""
weights_gib:
  description: Weights on each GPU, GiB.
  returned: always
  type: float
  sample: 14.99
activation_gib:
  description: Peak activation of vLLM's profile run on each GPU, GiB.
  returned: always
  type: float
non_torch_gib:
  description: Memory outside PyTorch (cuBLAS, NCCL buffers) on each GPU, GiB.
  returned: always
  type: float
cudagraph_gib:
  description: The CUDA-graph memory estimate taken out of the budget on each GPU, GiB (0 before vLLM 0.21 or when off).
  returned: always
  type: float
edge:
  description: The KV cache left is within the sizing's tolerance (5%, at least 0.75 GiB) of what max_model_len needs;
    such a case is reported as not fitting, with the reason.
  returned: always
  type: bool
vllm:
  description: The vLLM release and engine (v0 or v1) the sizing applied.
  returned: always
  type: dict
kv_cache_gib:
  description: KV cache memory left on each GPU, GiB (negative when nothing is left).
  returned: always
  type: float
  sample: 23.1
kv_bytes_per_token:
  description: KV cache bytes one token takes on one GPU, all layers.
  returned: always
  type: int
  sample: 131072
kv_cache_tokens:
  description: Tokens the KV cache holds (whole blocks of 16).
  returned: always
  type: int
max_concurrency:
  description: Requests of max_model_len tokens the KV cache holds at once.
  returned: always
  type: float
fits:
  description: Whether vLLM starts with these settings (a request of max_model_len fits in the KV cache).
  returned: always
  type: bool
reasons:
  description: Why it does not fit.
  returned: always
  type: list
  elements: str
suggestions:
  description: What would fit - the largest max_model_len, a tensor parallel size, a quantization, an FP8 KV cache.
  returned: always
  type: list
  elements: str
size_class:
  description: small (< 3B parameters), medium (3-10B) or large (> 10B).
  returned: always
  type: str
gpu:
  description: The GPU used (table name, memory as reported, memory CUDA can use), GiB.
  returned: always
  type: dict
recommended:
  description: Settings to deploy with - tensor_parallel_size, max_model_len, max_num_seqs, memory_request,
    memory_limit, cpu_request, shm_size, startup_budget_s.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.k3s.plugins.module_utils._sizing import KV_CACHE_DTYPES, QUANTIZATIONS, SizingError, size
from ansible_collections.llmserve.k3s.plugins.module_utils._values import DTYPES

ARGUMENT_SPEC = dict(
    model=dict(type="dict"),
    model_preset=dict(type="str"),
    config_path=dict(type="path"),
    dtype=dict(type="str", choices=list(DTYPES), default="bfloat16"),
    quantization=dict(type="str", choices=list(QUANTIZATIONS), default="none"),
    kv_cache_dtype=dict(type="str", choices=list(KV_CACHE_DTYPES), default="auto"),
    gpu_memory_gib=dict(type="float"),
    gpu_name=dict(type="str"),
    tensor_parallel_size=dict(type="int", default=1),
    gpu_memory_utilization=dict(type="float", default=0.9),
    max_model_len=dict(type="int"),
    max_num_seqs=dict(type="int"),
    max_num_batched_tokens=dict(type="int", no_log=False),
    predownload=dict(type="bool", default=False),
    vllm_version=dict(type="str"),
    cudagraph_estimate=dict(type="bool"),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("model", "model_preset", "config_path")],
        required_one_of=[("model", "model_preset", "config_path"), ("gpu_memory_gib", "gpu_name")],
        supports_check_mode=True,
    )
    params = dict(module.params)
    download = not params.pop("predownload")
    try:
        result = size(download=download, **params)
    except SizingError as exc:
        module.fail_json(msg="gpu_sizing: %s" % exc)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
