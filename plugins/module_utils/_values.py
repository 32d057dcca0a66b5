# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The allowed values of the catalog and the sizing, in one place (stdlib only).

The catalog planner (_catalog.py), the sizing (_sizing.py) and the gpu_sizing module's choices import these, so a
value the catalog accepts is one the sizing accepts.
"""

from __future__ import annotations

# vLLM --dtype: bytes of a 16/32-bit weight or activation element ("auto" is the checkpoint's 16-bit dtype).
DTYPES = ("auto", "bfloat16", "float16", "float32")
# The sizing also takes vLLM's alias "half" (float16).
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "half": 2, "float32": 4}

# vLLM --quantization: bytes a quantized linear-layer parameter takes in memory. 4-bit group-wise formats carry a
# 16-bit scale and a 4-bit zero per group of 128 (4.16 bits); MXFP4 an 8-bit scale per 32 (4.25 bits, experts only),
# and vLLM pads gpt-oss's 2880-wide experts to 3072 for its MoE kernels (x 16/15: 0.5667 bytes, fitted on gpt-oss-20b).
QUANT_LINEAR_BYTES = {
    "awq": 0.52, "awq_marlin": 0.52, "gptq": 0.52, "gptq_marlin": 0.52, "w4a16": 0.52, "bitsandbytes": 0.52,
    "gguf": 0.6, "mxfp4": 0.5667,
    "fp8": 1.0, "fbgemm_fp8": 1.0, "int8": 1.0, "w8a8": 1.0, "experts_int8": 1.0, "modelopt": 1.0, "compressed-tensors": 1.0,
}
QUANTIZATIONS = tuple(sorted(QUANT_LINEAR_BYTES))
# Quantizations that only touch the MoE experts (attention and dense layers stay 16 bit).
EXPERTS_ONLY = ("mxfp4", "experts_int8")
# Bytes per parameter when only the parameter count is known: a 4-bit checkpoint keeps its embeddings and LM head
# in 16 bit, which adds about 0.04 bytes a parameter on a 7-70B model.
QUANT_FLAT_BYTES = dict(QUANT_LINEAR_BYTES, awq=0.5625, awq_marlin=0.5625, gptq=0.5625, gptq_marlin=0.5625, w4a16=0.5625,
                        bitsandbytes=0.5625, mxfp4=0.5625)

# vLLM --kv-cache-dtype: bytes of a KV element ("auto": the model dtype).
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
KV_CACHE_DTYPE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def is_int(value):
    """An integer as YAML gives it: true and false are not numbers here, though Python's bool is an int."""
    return isinstance(value, int) and not isinstance(value, bool)


def dtype_bytes(dtype):
    return DTYPE_BYTES.get(dtype, 2)


def kv_element_bytes(kv_cache_dtype, dtype):
    return KV_CACHE_DTYPE_BYTES.get(kv_cache_dtype) or dtype_bytes(dtype)


def bytes_per_param(dtype, quantization):
    """Bytes a parameter takes when only the parameter count is known (no vocabulary or hidden size)."""
    if quantization in (None, "none"):
        return dtype_bytes(dtype)
    return QUANT_FLAT_BYTES.get(quantization, dtype_bytes(dtype))


def shm_size(tensor_parallel_size):
    """/dev/shm of a model pod: 2 GiB, 4 GiB per GPU with tensor parallelism (NCCL's shared-memory transport)."""
    tp = tensor_parallel_size if isinstance(tensor_parallel_size, int) and not isinstance(tensor_parallel_size, bool) else 1
    return "2Gi" if tp <= 1 else "%dGi" % (4 * tp)
