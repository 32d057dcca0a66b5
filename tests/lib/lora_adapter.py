"""A small LoRA adapter for the tiny test Llama, built locally (random weights, PEFT layout, no download).

build_adapter(dest, rank=8, seed=1): dest/adapter_config.json (r, lora_alpha, target_modules q_proj/v_proj,
base_model_name_or_path) and dest/adapter_model.safetensors with base_model.model.<module>.lora_A/lora_B.weight of
every layer. B is not zero (a freshly initialised PEFT adapter's is), so the adapter really changes the outputs.
Run with the vLLM CPU venv's python (torch and safetensors are there).
"""

from __future__ import annotations

import pathlib

from vllm_server import _run, ensure_tiny_model, ensure_vllm_venv

_BUILD = r'''
import json, sys
import torch
from safetensors.torch import save_file

model_dir, out, rank, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = json.load(open(model_dir + "/config.json"))
hidden, heads = config["hidden_size"], config["num_attention_heads"]
kv_out = config["num_key_value_heads"] * hidden // heads
torch.manual_seed(seed)
tensors = {}
for layer in range(config["num_hidden_layers"]):
    for module, size_out in (("q_proj", hidden), ("v_proj", kv_out)):
        prefix = "base_model.model.model.layers.%d.self_attn.%s" % (layer, module)
        tensors[prefix + ".lora_A.weight"] = (torch.randn(rank, hidden) * 0.5).to(torch.bfloat16).contiguous()
        tensors[prefix + ".lora_B.weight"] = (torch.randn(size_out, rank) * 0.5).to(torch.bfloat16).contiguous()
save_file(tensors, out + "/adapter_model.safetensors")
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
           "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
           "base_model_name_or_path": model_dir}, open(out + "/adapter_config.json", "w"))
'''


def build_adapter(dest, rank=8, seed=1):
    """Folder of a random LoRA adapter for the tiny Llama; dest is created."""
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _run([ensure_vllm_venv(), "-c", _BUILD, str(ensure_tiny_model()), str(dest), str(rank), str(seed)], 300)
    return dest
