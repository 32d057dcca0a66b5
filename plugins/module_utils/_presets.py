# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Architecture facts of common models, from each model's Hugging Face config.json.

Keys are the catalog's `architecture` names. params_b is the total parameter count in billions.
"""

from __future__ import annotations

PRESETS = {
    # meta-llama/Llama-3.1-8B-Instruct
    "llama-3.1-8b": dict(params_b=8.03, num_layers=32, num_attention_heads=32, num_kv_heads=8, head_dim=128,
                         hidden_size=4096, intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072),
    # mistralai/Mixtral-8x7B-Instruct-v0.1 (8 experts, 2 active)
    "mixtral-8x7b": dict(params_b=46.70, num_layers=32, num_attention_heads=32, num_kv_heads=8, head_dim=128,
                         hidden_size=4096, intermediate_size=14336, vocab_size=32000, max_position_embeddings=32768),
    # deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct (MLA: one compressed latent per token and layer)
    "deepseek-coder-v2-lite": dict(params_b=15.71, num_layers=27, num_attention_heads=16, num_kv_heads=16, head_dim=192,
                                   kv_lora_rank=512, qk_rope_head_dim=64, hidden_size=2048, intermediate_size=10944,
                                   vocab_size=102400, max_position_embeddings=163840),
}
