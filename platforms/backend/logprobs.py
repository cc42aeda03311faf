"""Log-probs of response tokens: float32, through the LM head in chunks, on any device.

No [B, T, V] logits tensor ever exists: the LM head runs over `chunk_tokens` response positions at a time,
each chunk under activation checkpointing when gradients are needed. The head and the softmax always run
in float32 with autocast off, whatever dtype the transformer computes in, so log-probs, entropies and the
loss are float32 on every platform and precision.

The head's weight is converted once per forward pass, not once per chunk (under FSDP2 bf16 a chunk's
`weight.float()` copied the whole gathered head: 0.9 GB at Qwen's vocabulary, for every 1,024 tokens). A
float32 plan multiplies exact float32 states and weights. A bf16 plan (`round_to=torch.bfloat16`) rounds
both to bf16 first and multiplies them in float32: every product of two bf16 numbers is exact in float32, so
the result is the same whether the device uses full float32 or TF32 tensor cores (which the CUDA platform
allows for bf16 plans, parallel.ParallelPlan.float32_matmuls), and the same on the CPU; it is also what
FSDP2's bf16 all-gather hands the head, so sharded and unsharded bf16 learners compute the head alike.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from platforms.backend.recompute import recompute
from remix.batching import positions_of
from remix.interfaces import TokenBatch


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None, temperature: float,
                    round_to: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` and `bias` arrive float32 (converted once per forward pass by head_logprobs)."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        states = hidden.float() if round_to is None else hidden.to(round_to).float()
        logits = F.linear(states, weight, bias) / temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def response_states(backbone: nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Hidden states [B, T, H] at the positions that predict each response token."""
    # use_cache=False: a learner pass needs no KV cache, and one would be written twice when activation
    # checkpointing replays a block in the backward pass
    hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=positions_of(batch.attention_mask), use_cache=False).last_hidden_state
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    return hidden[:, P - 1:P + T - 1]


def head_weights(head: nn.Module, round_to: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head's weight and bias as float32 (bf16-rounded first in a bf16 plan): one conversion per pass."""
    def convert(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        with torch.autocast(device_type=t.device.type, enabled=False):
            return t.float() if round_to is None else t.to(round_to).float()

    return convert(head.weight), convert(getattr(head, "bias", None))


def head_logprobs(states: torch.Tensor, targets: torch.Tensor, head: nn.Module, temperature: float,
                  chunk_tokens: int, with_grad: bool,
                  round_to: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (log-probs, entropies) [N] of `targets` given hidden `states` [N, H], through the LM head
    in chunks of `chunk_tokens`: at most a [chunk_tokens, V] logits tensor exists at a time. With
    gradients, each chunk is recomputed in the backward pass (activation checkpointing) rather than kept.
    `round_to`: bf16 plans round states and weight to it before the float32 product (module docstring)."""
    logps, ents = [], []
    weight, bias = head_weights(head, round_to)
    for s in range(0, states.shape[0], chunk_tokens):
        args = (states[s:s + chunk_tokens], targets[s:s + chunk_tokens], weight, bias, temperature, round_to)
        lp, ent = recompute(_chunk_logprobs, *args, owner=head) if with_grad else _chunk_logprobs(*args)
        logps.append(lp)
        ents.append(ent)
    if not logps:
        empty = torch.zeros(0, dtype=torch.float32, device=states.device)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)


def token_logprobs(model: nn.Module, batch: TokenBatch, temperature: float, chunk_tokens: int,
                   with_grad: bool, static_shapes: bool = False,
                   round_to: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) [B, T] of the response tokens under an HF causal LM; zero where
    response_mask is false. The batch must be on the model's device. `static_shapes` (XLA) computes every
    position of the [B, T] grid and masks after, instead of gathering the response tokens first (a boolean
    index has a data-dependent shape: a recompilation per count)."""
    states = response_states(model.get_decoder(), batch)
    mask = batch.response_mask
    P, T = batch.prompt_len, mask.shape[1]
    if static_shapes:
        B = mask.shape[0]
        logp, entropy = head_logprobs(states.reshape(B * T, -1), batch.input_ids[:, P:P + T].reshape(-1),
                                      model.get_output_embeddings(), temperature, chunk_tokens, with_grad, round_to)
        return logp.view(B, T) * mask, entropy.view(B, T) * mask
    logp, entropy = head_logprobs(states[mask], batch.input_ids[:, P:P + T][mask], model.get_output_embeddings(),
                                  temperature, chunk_tokens, with_grad, round_to)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    return zeros.index_put((mask,), logp), zeros.index_put((mask,), entropy)


class TokenLogprobs(nn.Module):
    """An HF causal LM whose forward returns `token_logprobs` of a batch.

    The learner holds its policy, reference and precedent in this form so that the decoder and the LM
    head run inside *one* module call: under FSDP2 this module is the root unit, and its forward hooks
    gather (and after backward, reduce) the parameters that live outside the decoder layers: the
    embeddings, the final norm and the (often tied) head.
    """

    def __init__(self, lm: nn.Module, static_shapes: bool = False, head_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.static_shapes = static_shapes
        self.head_dtype = head_dtype  # bf16 plans: the head's inputs are rounded to this (module docstring)

    def forward(self, batch: TokenBatch, temperature: float, chunk_tokens: int,
                with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs(self.lm, batch, temperature, chunk_tokens, with_grad, self.static_shapes,
                              self.head_dtype)


class ValueModel(nn.Module):
    """PPO critic: the base model's transformer with a scalar head (zero-initialised), values [B, T]."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        states = response_states(self.backbone, batch)
        with torch.autocast(device_type=states.device.type, enabled=False):
            # float32 whatever the parameter dtype (FSDP2 mixed precision hands this head bf16 weights)
            values = F.linear(states.float(), self.head.weight.float(), self.head.bias.float()).squeeze(-1)
        return values * batch.response_mask
