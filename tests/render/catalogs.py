"""Catalogs the render tests use besides the inventories' own."""

from __future__ import annotations

# A catalog that exercises what the inventories' catalogs do not: tensor parallelism, a small model with several
# replicas, an HPA whose maximum is capped, a node selector, extra env, a disabled entry. Rendered on the
# workstation inventory with 8 GPUs and storage mode local-path.
CUSTOM_GPUS = 8
CUSTOM_MODELS = [
    {"name": "qwen-1.5b", "model": "Qwen/Qwen2.5-1.5B-Instruct", "params_b": 1.54, "replicas": 3,
     "max_model_len": 4096},
    {"name": "llama-70b-awq", "model": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "params_b": 70.55,
     "quantization": "awq_marlin", "dtype": "float16", "tensor_parallel_size": 2, "gated": True,
     "node_selector": {"llmserve.io/gpu-product": "NVIDIA-L40"}, "extra_env": {"VLLM_LOGGING_LEVEL": "DEBUG"},
     "resources": {"requests": {"cpu": "12"}}},
    {"name": "llama-auto", "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
     "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 100}, "session_affinity": True},
    {"name": "switched-off", "enabled": False, "model": "meta-llama/Llama-3.1-8B-Instruct", "architecture": "llama-3.1-8b",
     "replicas": 50},
]
# GPUs the enabled entries take at their base replica count: 3 x 1 + 1 x 2 + 1 x 1.
CUSTOM_GPUS_USED = 6
