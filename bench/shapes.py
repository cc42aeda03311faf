"""Model shapes the benchmarks and scripts/gpu_check.py build at random (the sizes users train), and the builder.
Imports only torch at module level (gpu_check imports it before its preflight)."""

from __future__ import annotations

from pathlib import Path

import torch

# Qwen2.5-0.5B's, 1.5B's and 7B's shapes (their config.json files): the models the paper and its peers start from.
QWEN05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
               intermediate_size=4864, vocab_size=151_936, max_position_embeddings=32_768, tie_word_embeddings=True,
               rope_theta=1_000_000.0, rms_norm_eps=1e-6)
QWEN15B = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
               intermediate_size=8960, vocab_size=151_936, max_position_embeddings=32_768, tie_word_embeddings=True,
               rope_theta=1_000_000.0, rms_norm_eps=1e-6)
QWEN7B = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
              intermediate_size=18_944, vocab_size=152_064, max_position_embeddings=32_768, tie_word_embeddings=False,
              rope_theta=1_000_000.0, rms_norm_eps=1e-6)
QUICK_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, vocab_size=1000, max_position_embeddings=1024, tie_word_embeddings=True)


def random_model(path: Path, shape: dict, tokenizer_from: Path) -> tuple[Path, int]:
    """A randomly initialised Qwen2 of `shape` saved as an HF folder (float32), with a borrowed tokenizer."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = Qwen2Config(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())
