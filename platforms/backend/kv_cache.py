"""The torch engine's KV caches: the bytes a token holds in one, a transformers StaticCache across both generations of
its API, and its key/value tensors (the rollout shards them under XLA SPMD)."""

from __future__ import annotations

import inspect

import torch
from transformers import StaticCache


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token holds in the cache, over all layers (where the config does not say, a
    number so large that batches keep max_batch rows)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers, heads = getattr(text, "num_hidden_layers", None), getattr(text, "num_attention_heads", None)
    if not layers or not heads:
        return 1 << 62
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * dtype.itemsize


def new_static_cache(model, rows: int, length: int) -> StaticCache:
    """A StaticCache of `rows` x `length` tokens, across both generations of its constructor (transformers 4
    takes the batch size, device and dtype up front; 5 allocates on the first update)."""
    params = inspect.signature(StaticCache.__init__).parameters
    if "max_batch_size" in params:
        return StaticCache(config=model.config, max_batch_size=rows, max_cache_len=length, device=model.device,
                           dtype=model.dtype)
    return StaticCache(config=model.config, max_cache_len=length)


def cache_tensors(cache) -> list[torch.Tensor]:
    """The key and value tensors of a cache (transformers 5: per layer, allocated at the first update; 4: lists)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                if isinstance(t, torch.Tensor)]
    return [*getattr(cache, "key_cache", []), *getattr(cache, "value_cache", [])]
