"""CPULearner: the reference Learner. Policy, reference and precedent models, AdamW, and a PPO critic.

Log-probs are float32 and computed in chunks of response tokens through the LM head, each chunk under
activation checkpointing when gradients are needed, so no [B, T, V] logits tensor ever exists.
Dropout is off (eval mode) throughout: the old, proximal and current log-probs must be comparable.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoModelForCausalLM

from safetensors.torch import load_model, save_model

from remix.checkpoint import save_hf_model
from remix.batching import positions_of
from remix.config import TrainConfig
from remix.interfaces import Learner, TokenBatch
from remix.objective import LossInputs, remix_loss, value_loss


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden.float(), weight.float(), None if bias is None else bias.float()) / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def response_states(backbone: nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Hidden states [B, T, H] at the positions that predict each response token."""
    hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=positions_of(batch.attention_mask)).last_hidden_state
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    return hidden[:, P - 1:P + T - 1]


def head_logprobs(states: torch.Tensor, targets: torch.Tensor, head: nn.Module, temperature: float,
                  chunk_tokens: int, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (log-probs, entropies) [N] of `targets` given hidden `states` [N, H], through the LM head
    in chunks of `chunk_tokens`: at most a [chunk_tokens, V] logits tensor exists at a time. With
    gradients, each chunk is recomputed in the backward pass (activation checkpointing) rather than kept."""
    logps, ents = [], []
    for s in range(0, states.shape[0], chunk_tokens):
        args = (states[s:s + chunk_tokens], targets[s:s + chunk_tokens], head.weight,
                getattr(head, "bias", None), temperature)
        lp, ent = checkpoint(_chunk_logprobs, *args, use_reentrant=False) if with_grad else _chunk_logprobs(*args)
        logps.append(lp)
        ents.append(ent)
    if not logps:
        empty = torch.zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)


def token_logprobs(model: nn.Module, batch: TokenBatch, temperature: float, chunk_tokens: int,
                   with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) [B, T] of the response tokens; zero where response_mask is false."""
    states = response_states(model.get_decoder(), batch)
    mask = batch.response_mask
    P, T = batch.prompt_len, mask.shape[1]
    logp, entropy = head_logprobs(states[mask], batch.input_ids[:, P:P + T][mask], model.get_output_embeddings(),
                                  temperature, chunk_tokens, with_grad)
    zeros = torch.zeros(mask.shape, dtype=torch.float32)
    return zeros.index_put((mask,), logp), zeros.index_put((mask,), entropy)


class ValueModel(nn.Module):
    """PPO critic: the base model's transformer with a scalar head, initialised from the policy."""

    def __init__(self, model_dir: str | Path) -> None:
        super().__init__()
        self.backbone = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        self.head = nn.Linear(self.backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        values = self.head(response_states(self.backbone, batch)).squeeze(-1)
        return values * batch.response_mask


class CPULearner(Learner):
    platform = "cpu"

    def __init__(self, model_dir: str | Path, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.model_dir = Path(model_dir)
        self.policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.reference = self._frozen_copy()
        self.reference_is_base = True  # until reincarnation; a checkpoint then stores the reference weights
        self.precedent = self._frozen_copy()
        self.optimizer = self._new_optimizer()
        self.critic: ValueModel | None = None
        if cfg.algo == "ppo":
            self.critic = ValueModel(model_dir).eval()
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=cfg.optim.critic_lr,
                                                      betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)

    def _frozen_copy(self) -> nn.Module:
        return copy.deepcopy(self.policy).requires_grad_(False)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.AdamW(self.policy.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

    # --- Learner interface -------------------------------------------------------------------
    @torch.no_grad()
    def logprobs(self, batch: TokenBatch,
                 policy: Literal["current", "reference", "precedent"] = "current") -> torch.Tensor:
        model = {"current": self.policy, "reference": self.reference, "precedent": self.precedent}[policy]
        return token_logprobs(model, batch, self.cfg.rollout.temperature, self.cfg.logprob_chunk_tokens,
                              with_grad=False)[0]

    @torch.no_grad()
    def values(self, batch: TokenBatch) -> torch.Tensor:
        if self.critic is None:
            raise RuntimeError("values() needs a critic: construct the learner with --algo ppo")
        return self.critic(batch)

    def update(self, batch: TokenBatch, kl_lambda: float) -> dict[str, float]:
        """One AdamW step over the mini-batch `batch` (and one for the PPO critic), accumulated over
        micro-batches. The losses are aggregated over the whole mini-batch (global token / sequence
        counts), so the update does not depend on micro_batch_size. A non-finite loss or gradient
        skips the step."""
        cfg = self.cfg
        global_tokens, global_seqs = float(batch.response_mask.sum()), float(len(batch))

        def policy_loss(micro: TokenBatch):
            logp, entropy = token_logprobs(self.policy, micro, cfg.rollout.temperature,
                                           cfg.logprob_chunk_tokens, with_grad=True)
            f = micro.fields
            inputs = LossInputs(logp=logp, behav_logp=f["behav_logp"], prox_logp=f["prox_logp"],
                                ref_logp=f["ref_logp"], prev_logp=f["prev_logp"], advantages=f["advantages"],
                                mask=micro.response_mask, entropy=entropy)
            return remix_loss(inputs, cfg.objective, kl_lambda, global_tokens=global_tokens, global_seqs=global_seqs)

        def critic_loss(micro: TokenBatch):
            f = micro.fields
            return value_loss(self.critic(micro), f["old_values"], f["returns"], micro.response_mask,
                              cfg.ppo.value_clip, cfg.objective.loss_agg, cfg.objective.loss_agg_constant,
                              global_tokens, global_seqs)

        totals = self._accumulate_and_step(batch, policy_loss, self.policy, self.optimizer, "grad_norm")
        if self.critic is not None:
            totals.update(self._accumulate_and_step(batch, critic_loss, self.critic, self.critic_optimizer,
                                                    "critic_grad_norm"))
        return totals

    def _accumulate_and_step(self, batch: TokenBatch, loss_fn, module: nn.Module,
                             optimizer: torch.optim.Optimizer, name: str) -> dict[str, float]:
        """Backward of `loss_fn` over the micro-batches of `batch`, then one clipped optimizer step, or a
        skipped one when the loss or the gradient is not finite (counted in `skipped/<name>`; the trainer
        stops after too many in a row). Returns the metrics, weighted back to whole-mini-batch values."""
        optimizer.zero_grad(set_to_none=True)
        global_tokens = max(float(batch.response_mask.sum()), 1.0)
        totals: dict[str, float] = {}
        finite = True
        for idx in torch.arange(len(batch)).split(self.cfg.micro_batch_size):
            micro = batch.select(idx)
            loss, metrics = loss_fn(micro)
            finite = finite and bool(torch.isfinite(loss))
            loss.backward()
            share = float(micro.response_mask.sum()) / global_tokens
            for k, v in metrics.items():  # loss parts are already global partial sums; the rest token means
                totals[k] = totals.get(k, 0.0) + float(v) * (1.0 if k.startswith("loss/") else share)
        params = [p for p in module.parameters() if p.grad is not None]
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        skipped = not (finite and math.isfinite(norm))
        if skipped:
            optimizer.zero_grad(set_to_none=True)
        else:
            optimizer.step()
        totals.update({name: norm, f"skipped/{name}": float(skipped)})
        return totals

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        return self.policy.state_dict()

    def snapshot_precedent(self) -> None:
        self.precedent.load_state_dict(self.policy.state_dict())

    def reincarnate_reference(self) -> None:
        self.reference.load_state_dict(self.policy.state_dict())
        self.reference_is_base = False

    # --- checkpoints -------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_hf_model(self.policy.state_dict(), self.model_dir, folder / "model")
        save_model(self.precedent, str(folder / "precedent.safetensors"))
        if not self.reference_is_base:
            save_model(self.reference, str(folder / "reference.safetensors"))
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        if self.critic is not None:
            save_model(self.critic, str(folder / "critic.safetensors"))
            torch.save(self.critic_optimizer.state_dict(), folder / "critic_optimizer.pt")

    def load_state(self, folder: Path) -> None:
        self.policy = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32).eval()
        self.optimizer = self._new_optimizer()  # bound to the new policy's parameters
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        load_model(self.precedent, str(folder / "precedent.safetensors"))
        reference = folder / "reference.safetensors"
        self.reference_is_base = not reference.exists()
        if not self.reference_is_base:
            load_model(self.reference, str(reference))
        if self.critic is not None:
            load_model(self.critic, str(folder / "critic.safetensors"))
            self.critic_optimizer.load_state_dict(torch.load(folder / "critic_optimizer.pt", weights_only=True))

    def reset_optimizer(self) -> None:
        self.optimizer = self._new_optimizer()
