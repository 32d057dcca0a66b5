# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Will a model fit on a GPU under vLLM, and with which settings? Pure logic, stdlib only.

The model follows how vLLM sizes its KV cache, release by release (docs/sizing.md has the details and the sources):

* worker.determine_num_available_blocks (V0) / gpu_worker.determine_available_memory (V1), with
  utils.memory_profiling: KV budget = CUDA-visible memory x gpu_memory_utilization - weights - peak activation of
  the profile run - non-torch memory (NCCL, cuBLAS, custom all-reduce), and from vLLM 0.21 (when
  VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS is on, its default there) minus the estimated CUDA-graph memory.
* the profile run: V0 runs max_num_batched_tokens, which defaults to max(max_model_len, 2048) unless chunked
  prefill is on (V0 turns it on by itself above 32k context: 512 tokens before 0.7, 2048 from 0.7); V1 runs
  max_num_batched_tokens (2048, or 8192 on GPUs of 70 GiB and more) and, from 0.11, a sampler warm-up on
  max_num_seqs rows of full-vocabulary logits whose peak is larger than the forward pass's on most models.
* kv_cache_interface (FullAttentionSpec / MLAAttentionSpec): page of one layer = block_size x 2 x KV heads per GPU
  x head_dim x dtype bytes; MLA keeps one latent of kv_lora_rank + qk_rope_head_dim (not split by TP).
* kv_cache_utils: blocks = budget // (page x layers); tokens = blocks x block_size; a request of max_model_len
  needs ceil(max_model_len / block_size) blocks, else vLLM stops at startup.

Constants marked "calibrated" were fitted on the cases of tests/unit/fixtures/vllm_startup_cases.yaml marked
split: fit, and are scored on the others (tests/unit/test_sizing_accuracy.py).
"""

from __future__ import annotations

import json
import math
import re

from ansible_collections.llmserve.k3s.plugins.module_utils import _shared, _values
from ansible_collections.llmserve.k3s.plugins.module_utils._presets import PRESETS

GIB = float(_shared.GIB)
BLOCK_SIZE = 16
DTYPE_BYTES = _values.DTYPE_BYTES
QUANTIZATIONS = ("none",) + _values.QUANTIZATIONS
KV_CACHE_DTYPES = _values.KV_CACHE_DTYPES
TP_SIZES = (1, 2, 4, 8)

# nvidia-smi's memory.total (MiB) and the part the driver keeps (MiB) that CUDA never sees: nvidia-smi -q
# "FB Memory Usage / Reserved" where recorded (L40S 609, H100 479, A100-40GB 605), else total minus the
# total_gpu_memory vLLM logged on that GPU (A100-80GB: 79.27 GiB, from two startups at utilization 0.25 and 0.5
# whose KV caches differ by 19.82 GiB, dennislee22/vLLM-benchmarking).
GPUS = {
    "L40": (46068, 609), "L40S": (46068, 609), "A100-40GB": (40960, 605), "A100-80GB": (81920, 745),
    "H100": (81559, 479), "H200": (143771, 600), "A10": (23028, 428), "L4": (23034, 475),
    "RTX 3090": (24576, 430), "RTX 4090": (24564, 400), "RTX A6000": (49140, 459), "RTX 4060": (8192, 0),
}
_GPU_ALIASES = {
    "NVIDIA L40": "L40", "NVIDIA L40S": "L40S", "NVIDIA A100-SXM4-40GB": "A100-40GB", "NVIDIA A100-PCIE-40GB": "A100-40GB",
    "A100": "A100-80GB", "NVIDIA A100-SXM4-80GB": "A100-80GB", "NVIDIA A100 80GB PCIe": "A100-80GB",
    "NVIDIA H100 80GB HBM3": "H100", "NVIDIA H100 PCIe": "H100", "H100-80GB": "H100", "NVIDIA H200": "H200",
    "NVIDIA A10": "A10", "NVIDIA L4": "L4", "NVIDIA GeForce RTX 3090": "RTX 3090", "3090": "RTX 3090",
    "NVIDIA GeForce RTX 4090": "RTX 4090", "4090": "RTX 4090", "NVIDIA RTX A6000": "RTX A6000", "A6000": "RTX A6000",
}
DEFAULT_RESERVED_GIB = 0.45
NVLINK_GPUS = ("H100", "H200", "A100-80GB", "A100-40GB")
# calibrated: non-torch memory of a worker (allocations outside PyTorch: cuBLAS/cuDNN workspaces, NCCL). vLLM 0.6.5
# counted 1.79 GiB on an H100 (PR 10511), fixed in 0.7 (PR 12126: 0.16 GiB); since then about 0.1-0.35 GiB, and
# tensor parallelism adds NCCL and custom all-reduce buffers: about 0.4 GiB on NVLink GPUs, little over PCIe.
NON_TORCH_GIB = 0.13
NON_TORCH_V0_GIB = 0.3
NON_TORCH_TP_GIB = 0.05
NON_TORCH_TP_NVLINK_GIB = 0.41
NON_TORCH_065_DATACENTER_GIB = 1.5
NON_TORCH_065_TP_NVLINK_GIB = 1.8
# calibrated: from 0.17 the default -O2 fuses all-reduce and RMSNorm with FlashInfer (vllm PR 34299, merged after the
# sampler kernel below; TP logs: 0.11 without it, 0.19 with "Enabled custom fusions: allreduce_rms"); the pass allocates
# a FlashInfer IPC workspace outside PyTorch on every tensor-parallel worker, on the GPUs FlashInfer's fused all-reduce
# supports (compute capability 9.0 / 10.0: its size table has no other key). Fitted: the mean, over the split: fit
# cases with it, of the logged non-torch memory less NON_TORCH_GIB and NON_TORCH_TP_NVLINK_GIB.
NON_TORCH_AR_FUSION_GIB = 1.6
AR_FUSION_SINCE = (0, 17)
AR_FUSION_GPUS = ("H100", "H200")
# calibrated: bytes of activation a token of the profile batch keeps at the peak, per (intermediate/tp + 2 hidden) x dtype
ACTIVATION_FACTOR = 2.5
# calibrated: the V1 sampler warm-up (vLLM 0.11 and later) peaks at about this many float32 copies of the
# max_num_seqs x vocabulary logits (logits, probabilities, log-probabilities, sorted values and int64 indices).
SAMPLER_COPIES = 9.6
# calibrated: from 0.17 top-k/top-p run in a Triton kernel without the full-vocabulary sort (vllm PR 33538, the
# default path for batches as large as the warm-up's; a Qwen3-14B sweep drops from 5.64 to 2.23 GiB at 0.17), and
# the warm-up peaks at about this many float32 copies: the median over the split: fit cases of 0.17 and later.
SAMPLER_COPIES_TRITON = 3.86
SAMPLER_TRITON_SINCE = (0, 17)
# The CUDA-graph memory vLLM estimates and subtracts (0.21 and later, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1):
# logged estimates are 0.36-0.65 GiB for dense models (vllm PR 21489, gpustack/runner PR 251).
CUDAGRAPH_ESTIMATE_GIB = 0.45
CUDAGRAPH_ESTIMATE_SINCE = (0, 21)
V1_SINCE = (0, 8)
SAMPLER_WARMUP_SINCE = (0, 11)
# vLLM 0.6.5 counted NCCL/cuBLAS memory of the whole process as non-torch; 0.7 measures the increase only.
NON_TORCH_FIXED_IN = (0, 7)
# What the planner treats as "at the edge": a prediction this close to what max_model_len needs is reported as not
# fitting (the tolerance the accuracy targets are stated in: 5% of the KV cache, at least 0.75 GiB).
EDGE_REL, EDGE_ABS_GIB = 0.05, 0.75
SIZE_CLASSES = ((3, "small"), (10, "medium"))


class SizingError(ValueError):
    """Bad input: the message names the argument, the bad value and the fix."""


def size_class(params_b):
    """The seed's decision matrix: small < 3B, medium 3-10B, large > 10B."""
    for limit, name in SIZE_CLASSES:
        if params_b < limit or (name == "medium" and params_b <= limit):
            return name
    return "large"


def startup_budget_s(weights_gib, download):
    """Seconds the startup probe allows: load from disk, compile and CUDA-graph capture, plus the download if any."""
    budget = 180 + weights_gib * 6 + (weights_gib * 8 if download else 0)
    return int(math.ceil(budget / 30.0) * 30)


def gpu_facts(gpu_name=None, gpu_memory_gib=None):
    """(name from the table or None, nvidia-smi total GiB, CUDA-visible GiB)."""
    key = None
    if gpu_name:
        key = gpu_name if gpu_name in GPUS else _GPU_ALIASES.get(gpu_name)
        if key is None:
            stripped = gpu_name.replace("NVIDIA ", "").replace("GeForce ", "")
            key = stripped if stripped in GPUS else None
        if key is None and gpu_memory_gib is None:
            raise SizingError("gpu_name %r is not in the GPU table (%s). Fix: use one of those names, or set gpu_memory_gib "
                              "to the memory.total nvidia-smi reports, in GiB" % (gpu_name, ", ".join(sorted(GPUS))))
    if key is not None:
        total_mib, reserved_mib = GPUS[key]
        total = gpu_memory_gib if gpu_memory_gib is not None else total_mib / 1024.0
        return key, total, total - reserved_mib / 1024.0
    if gpu_memory_gib is None:
        raise SizingError("neither gpu_memory_gib nor gpu_name is set. Fix: set gpu_memory_gib (e.g. 44.99 for an L40) or gpu_name")
    if not isinstance(gpu_memory_gib, (int, float)) or isinstance(gpu_memory_gib, bool) or gpu_memory_gib <= DEFAULT_RESERVED_GIB:
        raise SizingError("gpu_memory_gib is %r. Fix: set the GPU memory nvidia-smi reports, in GiB, e.g. 44.99" % (gpu_memory_gib,))
    return None, float(gpu_memory_gib), float(gpu_memory_gib) - DEFAULT_RESERVED_GIB


def parse_version(version):
    """(major, minor, patch) of a vLLM version such as v0.32.0, 0.6.5.dev or 0.10.1.1."""
    if isinstance(version, tuple):
        return version
    text = str(version if version is not None else _shared.VLLM_VERSION).strip().lstrip("v")
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise SizingError("vllm_version %r is not a vLLM version. Fix: write it as 0.32.0 (the image tag without v)" % (version,))
    return tuple(int(x or 0) for x in match.groups())


def engine_of(version, engine=None):
    """V0 before 0.8, V1 from 0.8 (the default there; V0 was removed in 0.11)."""
    if engine is not None:
        if engine not in ("v0", "v1"):
            raise SizingError("engine %r is unknown. Fix: use v0 or v1" % (engine,))
        return engine
    return "v0" if version[:2] < V1_SINCE else "v1"


def _experts(arch):
    return int(arch.get("num_experts") or 1)


def estimate_params_b(arch):
    """Parameters from the architecture when the config does not say (embeddings + attention + MLP per layer)."""
    hidden, layers = arch["hidden_size"], arch["num_layers"]
    heads, kv_heads, head_dim = arch["num_attention_heads"], arch["num_kv_heads"], arch["head_dim"]
    embed = arch.get("vocab_size", 32000) * hidden * (1 if arch.get("tie_word_embeddings") else 2)
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    experts = _experts(arch)
    mlp = 3 * hidden * arch.get("intermediate_size", 4 * hidden) * experts + (hidden * experts if experts > 1 else 0)
    return round((embed + layers * (attn + mlp)) / 1e9, 2)


def arch_from_hf_config(config):
    """Architecture facts from a Hugging Face config.json (already parsed)."""
    text = config.get("text_config") or config
    try:
        hidden, heads, layers = text["hidden_size"], text["num_attention_heads"], text["num_hidden_layers"]
    except KeyError as exc:
        raise SizingError("config.json has no %s. Fix: point config_path at the model's config.json, or pass model: {...}" % exc)
    tie = text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
    arch = dict(num_layers=layers, num_attention_heads=heads, num_kv_heads=text.get("num_key_value_heads") or heads,
                head_dim=text.get("head_dim") or hidden // heads, hidden_size=hidden,
                intermediate_size=text.get("moe_intermediate_size") or text.get("intermediate_size") or 4 * hidden,
                vocab_size=text.get("vocab_size", 32000), max_position_embeddings=text.get("max_position_embeddings", 4096),
                tie_word_embeddings=bool(tie))
    if text.get("kv_lora_rank"):
        arch.update(kv_lora_rank=text["kv_lora_rank"], qk_rope_head_dim=text.get("qk_rope_head_dim", 64))
    if text.get("num_experts_per_tok"):
        arch["experts_per_token"] = text["num_experts_per_tok"]
    experts = text.get("num_local_experts") or text.get("num_experts") or text.get("n_routed_experts")
    if experts:
        arch["num_experts"] = int(experts)
    arch["params_b"] = estimate_params_b(arch)
    return arch


def load_config(path):
    try:
        with open(path) as handle:
            return arch_from_hf_config(json.load(handle))
    except (IOError, OSError, ValueError) as exc:
        if isinstance(exc, SizingError):
            raise
        raise SizingError("config_path %s cannot be read as JSON (%s). Fix: point it at the model's config.json" % (path, exc))


REQUIRED = ("num_layers", "num_kv_heads", "head_dim")


def resolve_model(model=None, model_preset=None, config_path=None):
    if sum(x is not None for x in (model, model_preset, config_path)) != 1:
        raise SizingError("set exactly one of model, model_preset and config_path")
    if model_preset is not None:
        if model_preset not in PRESETS:
            raise SizingError("model_preset %r is unknown. Fix: use one of %s, or pass model: {...}" % (model_preset, ", ".join(sorted(PRESETS))))
        return dict(PRESETS[model_preset])
    if config_path is not None:
        return load_config(config_path)
    arch = dict(model)
    missing = [k for k in REQUIRED if not arch.get(k)]
    if missing and not arch.get("kv_lora_rank"):
        raise SizingError("model lacks %s. Fix: give num_layers, num_kv_heads and head_dim (from config.json), or use model_preset"
                          % ", ".join(missing))
    if not arch.get("num_layers"):
        raise SizingError("model lacks num_layers. Fix: set it from config.json (num_hidden_layers)")
    if arch.get("params_b") is None and arch.get("weights_gib") is None:
        if arch.get("hidden_size"):
            arch.setdefault("num_attention_heads", arch.get("num_kv_heads", 1))
            arch["params_b"] = estimate_params_b(arch)
        else:
            raise SizingError("model has neither params_b nor weights_gib. Fix: set params_b (total parameters, billions)")
    return arch


def kv_bytes_per_token(arch, tp, kv_cache_dtype, dtype):
    """KV cache bytes one token takes on one GPU, all layers."""
    elem = _values.kv_element_bytes(kv_cache_dtype, dtype)
    if arch.get("kv_lora_rank"):
        return arch["num_layers"] * (arch["kv_lora_rank"] + arch.get("qk_rope_head_dim", 64)) * elem
    heads = max(1, arch["num_kv_heads"] // tp)
    return arch["num_layers"] * 2 * heads * arch["head_dim"] * elem


def weights_per_gpu_gib(arch, dtype, quantization, tp):
    """Weights on one GPU. From the architecture, a quantized checkpoint keeps the embeddings, the LM head (unless
    tied to the embeddings) and the MoE router in 16 bit; MXFP4 / experts_int8 quantize the experts only."""
    if arch.get("weights_gib") is not None:
        return float(arch["weights_gib"]) / tp
    total = arch["params_b"] * 1e9
    wide = _values.dtype_bytes(dtype)
    if quantization in (None, "none"):
        return total * wide / GIB / tp
    hidden, vocab = arch.get("hidden_size"), arch.get("vocab_size")
    if not (hidden and vocab):
        return total * _values.bytes_per_param(dtype, quantization) / GIB / tp
    experts = _experts(arch)
    kept = vocab * hidden * (1 if arch.get("tie_word_embeddings") else 2)
    kept += arch["num_layers"] * hidden * experts if experts > 1 else 0
    quantized = max(0.0, total - kept)
    if quantization in _values.EXPERTS_ONLY and experts > 1 and arch.get("intermediate_size"):
        quantized = min(quantized, 3.0 * arch["num_layers"] * experts * hidden * arch["intermediate_size"])
    per_param = _values.QUANT_LINEAR_BYTES.get(quantization, wide)
    return (quantized * per_param + (total - quantized) * 2) / GIB / tp


def activation_gib(arch, tp, dtype, batched_tokens, num_seqs, version=None):
    """Peak activation of vLLM's profile run: a forward pass of batched_tokens and the sampler on num_seqs logits
    (from 0.11 a sampler warm-up whose peak is SAMPLER_COPIES float32 copies of them; the larger of the two counts,
    except for multimodal models, whose profile peaks in the forward pass: vLLM 0.11 logs of Mistral-Small-3.2)."""
    hidden = arch.get("hidden_size") or arch["num_kv_heads"] * arch["head_dim"]
    inter = (arch.get("intermediate_size") or 4 * hidden) * arch.get("experts_per_token", 1)
    per_token = ACTIVATION_FACTOR * (inter / float(tp) + 2 * hidden) * _values.dtype_bytes(dtype)
    logits = num_seqs * arch.get("vocab_size", 32000) * 4.0
    forward = batched_tokens * per_token + logits
    release = parse_version(version)[:2]
    if release >= SAMPLER_WARMUP_SINCE and not arch.get("multimodal"):
        copies = SAMPLER_COPIES_TRITON if release >= SAMPLER_TRITON_SINCE else SAMPLER_COPIES
        return max(forward, copies * logits) / GIB
    return forward / GIB


def vllm_defaults(cuda_gib, gpu_key, engine="v1", max_model_len=None, version=(0, 32, 0)):
    """(max_num_batched_tokens, max_num_seqs) vLLM profiles when they are unset, for the OpenAI server.

    V1: larger batches on GPUs with 70 GiB or more (except the A100). V0: max(max_model_len, 2048) tokens, unless
    chunked prefill, which V0 turns on by itself above 32k context (512 tokens before 0.7, 2048 from 0.7).
    """
    if engine == "v0":
        if max_model_len and max_model_len > 32768:
            return (2048 if version[:2] >= (0, 7) else 512), 256
        return max(max_model_len or 2048, 2048), 256
    high_end = cuda_gib >= 70 and not (gpu_key or "").startswith("A100")
    return (8192, 1024) if high_end else (2048, 256)


def _check_number(name, value, low, high=None, integer=True):
    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if bad or value < low or (high is not None and value > high):
        want = "a whole number of at least %d" % low if integer else "a number in (%s, %s]" % (low, high)
        raise SizingError("%s is %r. Fix: set %s" % (name, value, want))


def non_torch_gib(gpu_key, tp, version=None, engine="v1"):
    nvlink = gpu_key in NVLINK_GPUS
    version = parse_version(version)
    if version[:2] < NON_TORCH_FIXED_IN and nvlink:
        return NON_TORCH_V0_GIB + NON_TORCH_065_DATACENTER_GIB + (NON_TORCH_065_TP_NVLINK_GIB if tp > 1 else 0.0)
    base = NON_TORCH_V0_GIB if engine == "v0" else NON_TORCH_GIB
    if tp == 1:
        return base
    fusion = NON_TORCH_AR_FUSION_GIB if engine == "v1" and version[:2] >= AR_FUSION_SINCE and gpu_key in AR_FUSION_GPUS else 0.0
    return base + (NON_TORCH_TP_NVLINK_GIB if nvlink else NON_TORCH_TP_GIB) + fusion


def cudagraph_estimate_gib(version, enabled=None):
    """What vLLM subtracts for CUDA graphs: from 0.21 when VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS is on (its
    default there); never before (graphs were captured after the KV cache was allocated, outside the budget)."""
    if parse_version(version)[:2] < CUDAGRAPH_ESTIMATE_SINCE:
        return 0.0
    return CUDAGRAPH_ESTIMATE_GIB if enabled is None or enabled else 0.0


def edge_tolerance_gib(kv_gib):
    return max(EDGE_REL * abs(kv_gib), EDGE_ABS_GIB)


def _estimate(arch, cuda_gib, util, tp, dtype, quantization, kv_cache_dtype, max_len, seqs, batched, gpu_key=None,
              version=None, engine="v1", cudagraphs=None, lora=0.0):
    weights = weights_per_gpu_gib(arch, dtype, quantization, tp)
    act = activation_gib(arch, tp, dtype, batched, seqs, version)
    non_torch = non_torch_gib(gpu_key, tp, version, engine)
    graphs = cudagraph_estimate_gib(version, cudagraphs) if engine == "v1" else 0.0
    kv_gib = cuda_gib * util - weights - act - non_torch - graphs - lora
    per_token = kv_bytes_per_token(arch, tp, kv_cache_dtype, dtype)
    blocks = int(kv_gib * GIB // (per_token * BLOCK_SIZE)) if kv_gib > 0 else 0
    tokens = blocks * BLOCK_SIZE
    need = int(math.ceil(max_len / float(BLOCK_SIZE))) * BLOCK_SIZE
    need_gib = need * per_token / GIB
    fits_exactly = kv_gib > 0 and tokens >= need
    # Within the tolerance of the edge the estimate cannot tell: the planner says it does not fit.
    edge = abs(kv_gib - need_gib) < edge_tolerance_gib(kv_gib) or (fits_exactly and kv_gib < edge_tolerance_gib(kv_gib))
    return dict(weights_gib=weights, activation_gib=act, non_torch_gib=non_torch, cudagraph_gib=graphs, kv_cache_gib=kv_gib,
                kv_bytes_per_token=per_token, kv_cache_tokens=tokens,
                max_concurrency=round(tokens / float(need), 2) if need else 0.0,
                fits=fits_exactly and not edge, edge=edge, fits_exactly=fits_exactly, needed_kv_gib=need_gib)


def size(model=None, model_preset=None, config_path=None, dtype="bfloat16", quantization=None, kv_cache_dtype="auto",
         gpu_memory_gib=None, gpu_name=None, tensor_parallel_size=1, gpu_memory_utilization=0.9, max_model_len=None,
         max_num_seqs=None, max_num_batched_tokens=None, download=True, vllm_version=None, engine=None,
         cudagraph_estimate=None, lora_gib=0.0):
    """The sizing of one model on one kind of GPU. Raises SizingError for bad input; never for a model that does not fit.

    vllm_version: the vLLM release (default: the one the collection deploys); engine: v0 or v1 (default: the
    release's); cudagraph_estimate: VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS (None: the release's default);
    lora_gib: the LoRA buffers on each GPU (_lora.lora_bytes), taken from the KV cache.
    """
    arch = resolve_model(model, model_preset, config_path)
    quantization = quantization or "none"
    if model_preset is not None and quantization != "none":
        arch.pop("weights_gib", None)  # a preset's measured weights are those of the 16-bit checkpoint
    if dtype not in DTYPE_BYTES:
        raise SizingError("dtype %r is unknown. Fix: use one of %s" % (dtype, ", ".join(_values.DTYPES)))
    if quantization not in QUANTIZATIONS:
        raise SizingError("quantization %r is unknown. Fix: use one of %s" % (quantization, ", ".join(QUANTIZATIONS)))
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SizingError("kv_cache_dtype %r is unknown. Fix: use one of %s" % (kv_cache_dtype, ", ".join(KV_CACHE_DTYPES)))
    version = parse_version(vllm_version)
    engine = engine_of(version, engine)
    _check_number("tensor_parallel_size", tensor_parallel_size, 1)
    _check_number("gpu_memory_utilization", gpu_memory_utilization, 0, 1, integer=False)
    if gpu_memory_utilization is not None and gpu_memory_utilization <= 0:
        raise SizingError("gpu_memory_utilization is %r. Fix: set a share in (0, 1], such as 0.9" % (gpu_memory_utilization,))
    for name, value in (("max_model_len", max_model_len), ("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens)):
        _check_number(name, value, 1)
    tp = tensor_parallel_size
    heads = arch.get("num_attention_heads") or arch.get("num_kv_heads") or 1
    if heads % tp:
        raise SizingError("tensor_parallel_size %d does not divide the model's %d attention heads. Fix: use one of %s"
                          % (tp, heads, ", ".join(str(t) for t in TP_SIZES if heads % t == 0)))
    gpu_key, total_gib, cuda_gib = gpu_facts(gpu_name, gpu_memory_gib)
    max_pos = arch.get("max_position_embeddings") or 4096
    util = gpu_memory_utilization
    max_len = max_model_len or max_pos
    default_batched, default_seqs = vllm_defaults(cuda_gib, gpu_key, engine, max_len, version)
    seqs = max_num_seqs or default_seqs
    batched = max_num_batched_tokens or default_batched

    def run(tp_, quant_, kvd_, length, util_=None):
        # Another quantization than the measured checkpoint's: estimate its weights from the parameter count.
        other = arch if quant_ == quantization or arch.get("params_b") is None else dict(arch, weights_gib=None)
        batched_ = batched if max_num_batched_tokens or engine == "v1" else vllm_defaults(cuda_gib, gpu_key, engine, length, version)[0]
        return _estimate(other, cuda_gib, util_ or util, tp_, dtype, quant_, kvd_, length, seqs, batched_, gpu_key,
                         version, engine, cudagraph_estimate, lora_gib * tp / float(tp_))

    est = run(tp, quantization, kv_cache_dtype, max_len)
    reasons, suggestions = [], []
    tol = edge_tolerance_gib(est["kv_cache_gib"])
    safe_tokens = int(max(0.0, est["kv_cache_gib"] - tol) * GIB // (est["kv_bytes_per_token"] * BLOCK_SIZE)) * BLOCK_SIZE
    largest = min(safe_tokens, max_pos)
    if not est["fits"]:
        if est["fits_exactly"]:
            reasons.append(
                "max_model_len %d needs %.2f GiB of KV cache and %.2f GiB are left on each GPU: that is within the sizing's "
                "tolerance (%.2f GiB) of the edge, so vLLM may refuse to start; the plan errs on the side of \"does not fit\""
                % (max_len, est["needed_kv_gib"], est["kv_cache_gib"], tol))
        elif est["kv_cache_gib"] <= 0:
            reasons.append(
                "no memory is left for the KV cache: %.2f GiB usable (%.2f GiB x gpu_memory_utilization %.2f) minus weights "
                "%.2f GiB, activation %.2f GiB, non-torch %.2f GiB and CUDA graphs %.2f GiB is %.2f GiB"
                % (cuda_gib * util, cuda_gib, util, est["weights_gib"], est["activation_gib"], est["non_torch_gib"],
                   est["cudagraph_gib"], est["kv_cache_gib"]))
        else:
            reasons.append(
                "max_model_len %d needs %.2f GiB of KV cache, more than the %.2f GiB left on each GPU (room for %d tokens)"
                % (max_len, est["needed_kv_gib"], est["kv_cache_gib"], est["kv_cache_tokens"]))
        if largest >= BLOCK_SIZE:
            suggestions.append("set max_model_len to %d or less (the largest that fits)" % (largest // BLOCK_SIZE * BLOCK_SIZE))
        for other in TP_SIZES:
            if other > tp and heads % other == 0 and run(other, quantization, kv_cache_dtype, max_len)["fits"]:
                suggestions.append("set tensor_parallel_size to %d" % other)
                break
        if quantization == "none":
            for quant in ("fp8", "awq"):
                if run(tp, quant, kv_cache_dtype, max_len)["fits"]:
                    suggestions.append("use a %s-quantized checkpoint (quantization: %s)" % (quant.upper(), quant))
                    break
        if kv_cache_dtype == "auto" and run(tp, quantization, "fp8", max_len)["fits"]:
            suggestions.append("set kv_cache_dtype to fp8 (halves the KV cache per token)")
        if gpu_memory_utilization < 0.95 and run(tp, quantization, kv_cache_dtype, max_len, 0.95)["fits"]:
            suggestions.append("raise gpu_memory_utilization to 0.95")
    recommended_tp = tp
    if not est["fits"]:
        for other in TP_SIZES:
            if other > tp and heads % other == 0 and run(other, quantization, kv_cache_dtype, max_len)["fits"]:
                recommended_tp = other
                break
    rec = run(recommended_tp, quantization, kv_cache_dtype, max_len)
    if max_model_len:
        rec_len = max_model_len if rec["fits"] else max(0, min(rec["kv_cache_tokens"], max_pos) // BLOCK_SIZE * BLOCK_SIZE)
    else:
        # Room for at least 4 requests of full length, at most the model's own limit, in steps of 1024.
        rec_len = min(max_pos, max(1024, rec["kv_cache_tokens"] // 4 // 1024 * 1024))
        if rec_len > rec["kv_cache_tokens"]:
            rec_len = rec["kv_cache_tokens"] // BLOCK_SIZE * BLOCK_SIZE
    rec_seqs = max_num_seqs or max(1, min(default_seqs, rec["kv_cache_tokens"] // 512))
    weights_total = rec["weights_gib"] * recommended_tp
    memory_gib = int(math.ceil(max(8.0, weights_total * 0.5 + 4)))
    limit_gib = int(math.ceil(max(16.0, weights_total + 8)))
    return {
        "weights_gib": round(est["weights_gib"], 2), "activation_gib": round(est["activation_gib"], 2),
        "non_torch_gib": round(est["non_torch_gib"], 2), "cudagraph_gib": round(est["cudagraph_gib"], 2),
        "lora_gib": round(lora_gib, 3),
        "kv_cache_gib": round(est["kv_cache_gib"], 2), "edge": est["edge"],
        "vllm": {"version": ".".join(str(x) for x in version), "engine": engine},
        "kv_bytes_per_token": est["kv_bytes_per_token"], "kv_cache_tokens": est["kv_cache_tokens"],
        "max_concurrency": est["max_concurrency"], "fits": est["fits"], "reasons": reasons, "suggestions": suggestions,
        "size_class": size_class(arch["params_b"]) if arch.get("params_b") is not None else
        size_class(est["weights_gib"] * tp / 2.0 * GIB / 1e9),
        "gpu": {"name": gpu_key, "memory_gib": round(total_gib, 2), "cuda_memory_gib": round(cuda_gib, 2)},
        "max_model_len": max_len, "max_num_seqs": seqs, "max_num_batched_tokens": batched,
        "recommended": {
            "tensor_parallel_size": recommended_tp, "max_model_len": rec_len, "max_num_seqs": rec_seqs,
            "memory_request": "%dGi" % memory_gib, "memory_limit": "%dGi" % limit_gib,
            "cpu_request": str(2 + 2 * recommended_tp),
            "shm_size": _values.shm_size(recommended_tp),
            "startup_budget_s": startup_budget_s(weights_total, download),
        },
    }
