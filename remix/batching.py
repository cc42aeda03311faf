"""Turning groups into the padded TokenBatch the learner reads, and per-token fields back into groups."""

from __future__ import annotations

import torch

from remix.interfaces import Group, TokenBatch


def collate(groups: list[Group], pad_id: int) -> TokenBatch:
    """Prompts left-padded to the longest prompt, responses right-padded to the longest response.

    `seq_advantage` (when every group has advantages), `reward` and `version` are per-sequence [B]
    fields; the trainer adds the per-token log-prob fields.
    """
    prompts = [g.prompt_ids for g in groups for _ in g.responses]
    responses = [r for g in groups for r in g.responses]
    if not responses:
        raise ValueError("cannot collate an empty batch")
    P = max(len(p) for p in prompts)
    T = max(max(len(r) for r in responses), 1)
    B = len(responses)
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        input_ids[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, P - len(p):P + len(r)] = 1
        response_mask[i, :len(r)] = True
    fields = {
        "reward": torch.tensor([x for g in groups for x in g.rewards], dtype=torch.float32),
        "version": torch.tensor([g.version for g in groups for _ in g.responses], dtype=torch.long),
    }
    if all(g.advantages is not None for g in groups):
        fields["seq_advantage"] = torch.tensor([a for g in groups for a in g.advantages], dtype=torch.float32)
    return TokenBatch(input_ids, attention_mask, response_mask, P, fields)


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding (the running count of real tokens), for sampler and
    learner alike: their log-probs only agree if both number the tokens the same way."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def pad_tokens(rows: list[torch.Tensor], T: int) -> torch.Tensor:
    """Stacks 1-D per-token tensors into [B, T], zero-padded on the right."""
    out = torch.zeros((len(rows), T), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def unpad_tokens(values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """[B, T] -> one 1-D tensor per row holding its response tokens (cloned, so groups own them)."""
    return [values[i, : int(mask[i].sum())].clone() for i in range(values.shape[0])]
