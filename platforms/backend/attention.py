"""Decode attention that keeps grouped-query attention grouped under torch.compile.

Qwen2.5-1.5B has 12 query heads and 2 key/value heads. transformers' SDPA attention expands the cached keys
and values to the query heads (`repeat_kv`) unless it can avoid it: without a mask (`enable_gqa`), or for one
query token outside torch.compile (`pack_gqa`). The torch engine's compiled static decode has both a mask and
torch.compile, so every layer of every decode step copied its whole KV cache six times over: at 64 rows and
4,608 cache slots about 110 GB of memory traffic per token instead of about 8.5 GB.

`grouped_sdpa_attention` is transformers' own SDPA path, except that a single query token is always attended
grouped: the G query heads that share a key/value head become G query rows of that head, which is exactly
what `pack_gqa` does outside compile. Every other case (prefill, no grouping, a per-head mask) is handed to
transformers' function unchanged. The rollout selects it for its static layout (`use_grouped_decode_attention`);
the learner and the dynamic layout keep transformers' default.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

GROUPED_SDPA = "remix_grouped_sdpa"


def grouped_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, L, D], key/value [B, Hkv, S, D] -> ([B, L, Hq, D], None), as transformers' attention
    functions return it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1  # one mask for every head
    if q_len != 1 or groups == 1 or not shared_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    # query head h = j * groups + g attends with key/value head j (repeat_kv's order): [B, Hkv, G, D]
    grouped = query.reshape(batch, heads // groups, groups, dim)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling)
    return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_grouped_decode_attention(model: torch.nn.Module) -> bool:
    """Switches an HF model that uses SDPA attention to `grouped_sdpa_attention`; False (and nothing changed)
    where the model uses another attention or this transformers has no attention registry."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)  # the same masks as SDPA
    for sub in model.modules():  # the model and any sub-config (text config of a multimodal model)
        cfg = getattr(sub, "config", None)
        if cfg is not None and getattr(cfg, "_attn_implementation", None) == "sdpa":
            cfg._attn_implementation = GROUPED_SDPA
    return True
