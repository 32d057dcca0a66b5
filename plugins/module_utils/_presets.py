# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Architecture facts of common models, from each model's Hugging Face config.json.

Keys are the catalog's `architecture` names. params_b is the total parameter count in billions.
weights_gib, where present, is what vLLM logged as "Loading model weights took ..." / "Model loading took ..."
for the BF16/FP16 checkpoint on one GPU (the source is named next to it); it overrides the estimate from params_b.
experts_per_token and num_experts are set for mixture-of-experts models (the activation of a token runs through
experts_per_token MLPs; a quantized checkpoint keeps the router, hidden x num_experts per layer, in 16 bit), and
intermediate_size is then the size of one expert. tie_word_embeddings: the LM head shares the embedding matrix.
"""

from __future__ import annotations


def _llama(params_b, layers, heads, kv_heads, hidden, inter, vocab, max_pos, head_dim=128, **extra):
    facts = dict(params_b=params_b, num_layers=layers, num_attention_heads=heads, num_kv_heads=kv_heads,
                 head_dim=head_dim, hidden_size=hidden, intermediate_size=inter, vocab_size=vocab,
                 max_position_embeddings=max_pos)
    facts.update(extra)
    return facts


PRESETS = {
    # meta-llama/Llama-3.1-8B-Instruct; weights: vllm-project/vllm#10517 (RTX 3090, "Loading model weights took 14.9888 GB")
    "llama-3.1-8b": _llama(8.03, 32, 32, 8, 4096, 14336, 128256, 131072, weights_gib=14.99),
    # meta-llama/Meta-Llama-3-8B; weights: vllm-project/vllm#10511 (H100, "model weights take 14.96GiB")
    "llama-3-8b": _llama(8.03, 32, 32, 8, 4096, 14336, 128256, 8192, weights_gib=14.96),
    # meta-llama/Llama-3.1-70B-Instruct and Llama-3.3-70B-Instruct (same architecture)
    "llama-3.1-70b": _llama(70.55, 80, 64, 8, 8192, 28672, 128256, 131072),
    "llama-3.3-70b": _llama(70.55, 80, 64, 8, 8192, 28672, 128256, 131072),
    # mistralai/Mixtral-8x7B-Instruct-v0.1 (8 experts, 2 active)
    "mixtral-8x7b": _llama(46.70, 32, 32, 8, 4096, 14336, 32000, 32768, experts_per_token=2, num_experts=8),
    # mistralai/Mistral-7B-Instruct-v0.3
    "mistral-7b": _llama(7.25, 32, 32, 8, 4096, 14336, 32768, 32768),
    # deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct (MLA: one compressed latent per token and layer)
    "deepseek-coder-v2-lite": dict(params_b=15.71, num_layers=27, num_attention_heads=16, num_kv_heads=16, head_dim=192,
                                   kv_lora_rank=512, qk_rope_head_dim=64, hidden_size=2048, intermediate_size=1408,
                                   vocab_size=102400, max_position_embeddings=163840, num_experts=64, experts_per_token=6),
    # deepseek-ai/DeepSeek-V2-Lite-Chat (same architecture as the Coder Lite)
    "deepseek-v2-lite": dict(params_b=15.71, num_layers=27, num_attention_heads=16, num_kv_heads=16, head_dim=192,
                             kv_lora_rank=512, qk_rope_head_dim=64, hidden_size=2048, intermediate_size=1408,
                             vocab_size=102400, max_position_embeddings=163840, num_experts=64, experts_per_token=6),
    # Qwen/Qwen2.5-*-Instruct
    "qwen2.5-7b": _llama(7.62, 28, 28, 4, 3584, 18944, 152064, 32768),
    "qwen2.5-14b": _llama(14.77, 48, 40, 8, 5120, 13824, 152064, 32768),
    "qwen2.5-32b": _llama(32.76, 64, 40, 8, 5120, 27648, 152064, 32768),
    "qwen2.5-72b": _llama(72.71, 80, 64, 8, 8192, 29568, 152064, 32768),
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-14B (Qwen2.5-14B, 128k positions); weights: vllm-project/vllm#13061
    # (2x RTX 4090, TP 2, "Loading model weights took 13.9476 GB" on each GPU)
    "deepseek-r1-distill-qwen-14b": _llama(14.77, 48, 40, 8, 5120, 13824, 152064, 131072, weights_gib=27.9),
    # Qwen/Qwen3-14B, Qwen/Qwen3-30B-A3B (Coder: 262144 positions), Qwen/Qwen3-235B-A22B
    # Qwen/Qwen3-0.6B (tied embeddings), Qwen/Qwen3-32B
    "qwen3-0.6b": _llama(0.60, 28, 16, 8, 1024, 3072, 151936, 40960, tie_word_embeddings=True),
    "qwen3-32b": _llama(32.76, 64, 64, 8, 5120, 25600, 151936, 40960),
    "qwen3-14b": _llama(14.77, 40, 40, 8, 5120, 17408, 151936, 40960),
    # Qwen/Qwen3-8B (36 layers, untied LM head)
    "qwen3-8b": _llama(8.19, 36, 32, 8, 4096, 12288, 151936, 40960),
    "qwen3-30b-a3b": _llama(30.53, 48, 32, 4, 2048, 768, 151936, 262144, experts_per_token=8, num_experts=128),
    "qwen3-235b-a22b": _llama(235.09, 94, 64, 4, 4096, 1536, 151936, 40960, experts_per_token=8, num_experts=128),
    # microsoft/Phi-3-mini-4k-instruct, microsoft/phi-4
    "phi-3-mini": _llama(3.82, 32, 32, 32, 3072, 8192, 32064, 4096, head_dim=96),
    "phi-4": _llama(14.66, 40, 40, 10, 5120, 17920, 100352, 16384),
    # google/gemma-2-9b-it, google/gemma-2-27b-it (every layer counted as full attention)
    "gemma-2-9b": _llama(9.24, 42, 16, 8, 3584, 14336, 256000, 8192, head_dim=256, tie_word_embeddings=True),
    "gemma-2-27b": _llama(27.23, 46, 32, 16, 4608, 36864, 256000, 8192, tie_word_embeddings=True),
    # mistralai/Mistral-Small-3.2-24B-Instruct-2506 (text model; the vision encoder adds 0.4B; multimodal: vLLM's
    # profile run of a multimodal model peaks in the forward pass, not in the sampler warm-up)
    "mistral-small-3.2-24b": _llama(24.01, 40, 32, 8, 5120, 32768, 131072, 131072, multimodal=True),
    # deepseek-ai/DeepSeek-R1 (MLA, 256 routed experts of 2048, 8 active; FP8 checkpoint)
    "deepseek-r1": dict(params_b=671.03, num_layers=61, num_attention_heads=128, num_kv_heads=128, head_dim=192,
                        kv_lora_rank=512, qk_rope_head_dim=64, hidden_size=7168, intermediate_size=2048,
                        vocab_size=129280, max_position_embeddings=163840, num_experts=256, experts_per_token=8),
    # openai/gpt-oss-20b and gpt-oss-120b (MoE, experts in MXFP4, every other layer a 128-token sliding window)
    "gpt-oss-20b": _llama(20.91, 24, 64, 8, 2880, 2880, 201088, 131072, head_dim=64, num_experts=32, experts_per_token=4),
    "gpt-oss-120b": _llama(116.83, 36, 64, 8, 2880, 2880, 201088, 131072, head_dim=64, num_experts=128, experts_per_token=4),
    # tiiuae/falcon-7b-instruct (multi-query attention, tied embeddings; vLLM 0.32 serves it without LoRA)
    "falcon-7b": _llama(6.92, 32, 71, 1, 4544, 18176, 65024, 2048, head_dim=64, tie_word_embeddings=True),
}
