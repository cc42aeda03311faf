"""TorchLearner: the one Learner of every platform. Policy, reference and precedent models, AdamW, a PPO critic.

Where the models live and how they compute is the `ParallelPlan` (platforms/backend/parallel.py): the
device, bf16 or float32 compute, FSDP2 sharding across the processes of a torchrun job, activation
checkpointing. What is computed is the same on every plan:

- log-probs are float32, chunked through the LM head (platforms/backend/logprobs.py);
- an update accumulates micro-batches and takes one clipped AdamW step; losses are aggregated over the
  whole mini-batch *across all ranks* (global token and sequence counts), so N ranks holding B/N
  sequences each make the update one rank makes with all B, and no update depends on micro_batch_size;
- a non-finite loss or gradient on any rank skips the step on every rank.

With --lora.rank > 0 (platforms/backend/lora.py) the policy is the base model plus a peft adapter, the only
trainable weights; the reference and the precedent are that model with the adapter off or a snapshot of it
swapped in, so no second model exists.

Checkpoints (`save_state` / `load_state`) are platforms/backend/learner_state.py's.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    set_model_state_dict,
)
from transformers import AutoModel, AutoModelForCausalLM

from platforms.backend import lora
from platforms.backend.learner_state import LearnerCheckpoints
from platforms.backend.logprobs import TokenLogprobs, ValueModel
from platforms.backend.parallel import ParallelPlan, full_tensor
from remix import distributed as dist
from remix.config import TrainConfig
from remix.interfaces import Learner, TokenBatch
from remix.objective import LossInputs, remix_loss, value_loss
from remix.schedule import uses_precedent

PolicyName = Literal["current", "reference", "precedent"]


def one_row_like(batch: TokenBatch) -> TokenBatch:
    """A one-row batch of `batch`'s width (its first row, or pad tokens where it has none): a forward pass that a
    rank runs only so that every rank runs as many."""
    if len(batch):
        return batch.select(torch.zeros(1, dtype=torch.long))
    width, T = batch.input_ids.shape[1], batch.response_mask.shape[1]
    return TokenBatch(torch.zeros(1, width, dtype=torch.long), torch.ones(1, width, dtype=torch.long),
                      torch.ones(1, T, dtype=torch.bool), batch.prompt_len)


def adamw_implementation(device: torch.device) -> dict[str, bool]:
    """AdamW's kernels: fused on CUDA (one kernel over all parameters, no full-size temporaries; torchtitan's
    default), torch's default (foreach) elsewhere, which keeps the CPU reference's numbers as they were."""
    return {"fused": True} if device.type == "cuda" else {}


def _tied_aliases(module: nn.Module) -> dict[str, str]:
    """Parameter names that are another name of an earlier parameter (e.g. a tied LM head), to the first name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


class TorchLearner(LearnerCheckpoints, Learner):
    def __init__(self, model_dir: str | Path, cfg: TrainConfig, plan: ParallelPlan, platform: str = "cpu") -> None:
        self.cfg, self.plan, self.platform = cfg, plan, platform
        self.model_dir = Path(model_dir)
        self.updates = 0  # policy updates made (saved): XLA seeds each update's dropout masks with it
        lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=plan.attention)
        self._aliases = _tied_aliases(lm)
        self.lora = cfg.lora.rank > 0
        static, head = plan.static_shapes, plan.head_dtype
        self.reference_is_base = True  # until reincarnation; a checkpoint then stores the reference weights
        # The anchors: full models, or with LoRA adapter snapshots of the one model (None where there is none).
        self.reference = self.precedent = None
        self.reference_adapter: dict[str, torch.Tensor] | None = None  # LoRA: set at reincarnation
        self.precedent_adapter: dict[str, torch.Tensor] | None = None
        if self.lora:  # one model: the anchors are the adapter switched off or snapshots swapped in (lora.py)
            lm = lora.add_adapter(lm, cfg.lora, cfg.seed)
            self.policy = plan.prepare(TokenLogprobs(lm, static, head), trainable=True)
            if uses_precedent(cfg):  # the initial adapter (B = 0: the base model), the precedent of step 1
                self.precedent_adapter = lora.copy_adapter(self.policy)
        else:
            # The anchors are copies of the base model made before the plan is applied (sharded like the policy).
            reference = copy.deepcopy(lm)
            precedent = copy.deepcopy(lm) if uses_precedent(cfg) else None  # a full copy: only where it is used
            self.policy = plan.prepare(TokenLogprobs(lm, static, head), trainable=True)
            self.reference = plan.prepare(TokenLogprobs(reference, static, head), trainable=False)
            self.precedent = None if precedent is None else plan.prepare(TokenLogprobs(precedent, static, head),
                                                                         trainable=False)
        self.optimizer = self._new_optimizer(self.policy, cfg.optim.lr)
        # XLA traces the objective into the step's graph instead of torch.compiling it (platforms/xla says why)
        objective = cfg.loss_objective()  # Dr. GRPO's divisor resolved from this config's --rollout.max-new-tokens
        self.objective = objective if plan.compile_objective else replace(objective, compile=False)
        self.critic: nn.Module | None = None
        if cfg.algo == "ppo":
            backbone = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=plan.attention)
            if self.lora:  # the critic's backbone gets an adapter too (its value head is trained whole)
                backbone = lora.add_adapter(backbone, cfg.lora, cfg.seed + 1)
            self.critic = plan.prepare(ValueModel(backbone), trainable=True)
            self.critic_optimizer = self._new_optimizer(self.critic, cfg.optim.critic_lr)

    def _new_optimizer(self, module: nn.Module, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        # the trainable parameters only: with LoRA the adapter (and the value head), else all
        trainable = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=lr, betas=o.betas, weight_decay=o.weight_decay,
                                 **adamw_implementation(self.plan.device))

    # --- Learner interface -------------------------------------------------------------------
    @torch.no_grad()
    def logprobs(self, batch: TokenBatch, policy: PolicyName = "current") -> torch.Tensor:
        cfg = self.cfg
        with self._model_of(policy) as model:
            return self._on_host(batch, lambda b: model(b, cfg.rollout.temperature, cfg.logprob_chunk_tokens,
                                                        with_grad=False)[0])

    def _check_precedent_kept(self) -> None:
        if self.precedent is None and self.precedent_adapter is None:
            raise RuntimeError("the precedent policy is only kept where KL-Convex can use it (see uses_precedent)")

    @contextlib.contextmanager
    def _model_of(self, policy: PolicyName) -> Iterator[nn.Module]:
        """The module that computes `policy`: the policy, or a full anchor model; with LoRA always the policy, as it
        is, with its adapter off (the base model: the reference before reincarnation), or with a snapshot of its
        adapter swapped in (lora.py)."""
        if policy == "precedent":
            self._check_precedent_kept()
        if policy == "current":
            yield self.policy
        elif not self.lora:
            yield self.reference if policy == "reference" else self.precedent
        elif policy == "reference" and self.reference_is_base:
            with lora.adapter_disabled(self.policy):
                yield self.policy
        else:
            snapshot = self.reference_adapter if policy == "reference" else self.precedent_adapter
            with lora.adapter_swapped_in(self.policy, snapshot):
                yield self.policy

    @torch.no_grad()
    def values(self, batch: TokenBatch) -> torch.Tensor:
        if self.critic is None:
            raise RuntimeError("values() needs a critic: construct the learner with --algo ppo")
        return self._on_host(batch, self.critic)

    def _on_host(self, batch: TokenBatch, forward: Callable[[TokenBatch], torch.Tensor]) -> torch.Tensor:
        """forward's [B, T] result on the host, computed --micro-batch-size rows at a time on every device: a
        pass holds the activations of a micro-batch, not of the step's whole batch (at 1.5B, 64 rows of 4,608
        tokens would be tens of GB). Rows are independent, so the result does not depend on the chunking. With
        static shapes (XLA) each chunk has exactly that many rows and is padded to the length buckets, cropped
        on the device and copied to the host once: one graph per bucket, whatever the batch."""
        rows = self.cfg.micro_batch_size
        with self.plan.autocast(), self.plan.float32_matmuls():
            if not self.plan.static_shapes:
                chunks = [batch.select(idx) for idx in torch.arange(len(batch)).split(rows)]
                # FSDP2 gathers parameters in every forward: each rank runs as many (decided before the first)
                passes = dist.max_int(len(chunks)) if self.plan.sharded else len(chunks)
                out = [forward(self.plan.place(chunk)) for chunk in chunks]  # on the device: one copy, one sync
                for _ in range(passes - len(chunks)):
                    forward(self.plan.place(one_row_like(batch)))  # a pass whose result is not used
                return torch.cat(out).cpu() if out else torch.zeros(batch.response_mask.shape, dtype=torch.float32)
            T, static = batch.response_mask.shape[1], self.plan.static
            # each chunk one graph (cut after it: the same graph whatever the number of chunks), its result kept on
            # the device; the pass's results reach the host in one transfer (not one per chunk), cropped there
            chunks = static.chunks(static.pad(batch), rows)
            out = []
            for chunk, _ in chunks:
                out.append(forward(self.plan.place(chunk)))
                self.plan.sync()
            return torch.cat([h[:real, :T] for h, (_, real) in zip(static.to_host(out), chunks)])

    def update(self, batch: TokenBatch, kl_lambda: float) -> dict[str, float]:
        """One AdamW step over the mini-batch `batch` (this rank's share of it), and one for the PPO critic.
        Losses are aggregated with the token and sequence counts of the whole mini-batch over all ranks."""
        cfg = self.cfg
        dist.same_on_every_rank(len(batch), "the mini-batch size")
        drop = self.lora and cfg.lora.dropout > 0  # adapter dropout, in these gradient passes only
        if drop:
            self.plan.seed_update_rng(cfg.seed, self.updates)
        self.updates += 1
        counts = dist.sum_floats({"tokens": float(batch.response_mask.sum()), "seqs": float(len(batch))})
        global_tokens, global_seqs = counts["tokens"], counts["seqs"]

        def policy_loss(micro: TokenBatch):
            with lora.adapter_dropout(self.policy, drop):
                logp, entropy = self.policy(micro, cfg.rollout.temperature, cfg.logprob_chunk_tokens, with_grad=True)
            f = micro.fields
            inputs = LossInputs(logp=logp, behav_logp=f["behav_logp"], prox_logp=f["prox_logp"],
                                ref_logp=f["ref_logp"], prev_logp=f["prev_logp"], advantages=f["advantages"],
                                mask=micro.response_mask, entropy=entropy, engine_logp=f.get("engine_logp"))
            return remix_loss(inputs, self.objective, kl_lambda, global_tokens=global_tokens, global_seqs=global_seqs)

        def critic_loss(micro: TokenBatch):
            f = micro.fields
            with lora.adapter_dropout(self.critic, drop):
                values = self.critic(micro)
            return value_loss(values, f["old_values"], f["returns"], micro.response_mask,
                              cfg.ppo.value_clip, self.objective.loss_agg, self.objective.loss_agg_constant,
                              global_tokens, global_seqs)

        if self.plan.static is not None:
            batch = self.plan.static.pad(batch)
        totals = self._accumulate_and_step(batch, policy_loss, self.policy, self.optimizer, "grad_norm",
                                           global_tokens)
        if self.critic is not None:
            totals.update(self._accumulate_and_step(batch, critic_loss, self.critic, self.critic_optimizer,
                                                    "critic_grad_norm", global_tokens))
        return totals

    def _accumulate_and_step(self, batch: TokenBatch, loss_fn: Callable, module: nn.Module,
                             optimizer: torch.optim.Optimizer, name: str, global_tokens: float) -> dict[str, float]:
        """Backward of `loss_fn` over the micro-batches of `batch`, then one clipped optimizer step, or a
        skipped one when the loss or the gradient is not finite on any rank (counted in `skipped/<name>`; the
        trainer stops after too many in a row). Returns the metrics as whole-mini-batch values over all ranks.

        The metrics and the finiteness flag stay on the device until the gradient norm is known, then cross to
        the host in one read: one synchronisation per optimizer step (XLA runs the whole update as a few
        graphs, cut after each micro-batch's backward)."""
        optimizer.zero_grad(set_to_none=True)
        # Each rank's loss is its partial sum over the global denominators; FSDP2 averages gradients over the
        # ranks, so scaling by the world size turns that average into the sum that equals one rank's update.
        scale = float(dist.world_size())
        totals: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.plan.device)
        for idx in torch.arange(len(batch)).split(self.cfg.micro_batch_size):
            # Selected on the host, then placed: under SPMD each micro-batch is sharded over the mesh by rows. A
            # micro-batch indexed out of a placed, sharded mini-batch came out replicated, so every device computed
            # all of its rows.
            micro = self.plan.place(batch.select(idx))
            with self.plan.float32_matmuls():
                with self.plan.autocast():
                    loss, metrics = loss_fn(micro)
                finite = finite & torch.isfinite(loss.detach()).all()
                (loss * scale if scale != 1.0 else loss).backward()
            share = micro.response_mask.sum().float() / max(global_tokens, 1.0)
            for k, v in metrics.items():  # loss parts are already global partial sums; the rest token means
                part = v.detach().float() * (1.0 if k.startswith("loss/") else share)
                totals[k] = totals[k] + part if k in totals else part
            self.plan.sync()
        params = [p for p in module.parameters() if p.grad is not None]
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        norm_t = full_tensor(torch.nn.utils.clip_grad_norm_(params, clip))  # the norm over all ranks' shards
        names = sorted(totals)
        host = torch.stack([*(totals[k] for k in names), (~finite).float(), norm_t.float()]).cpu().double().tolist()
        # one collective: the metrics and the count of ranks with a non-finite loss
        summed = dist.sum_floats({**dict(zip(names, host[:-2])), "nonfinite_ranks": host[-2]})
        norm = host[-1]
        skipped = summed.pop("nonfinite_ranks") > 0 or not math.isfinite(norm)
        if not skipped:
            optimizer.step()
        # Gradients are freed now, not at the next update: between updates the learner's log-prob passes and
        # the rollout engine have that memory (a float32 copy of the model) to themselves.
        optimizer.zero_grad(set_to_none=True)
        self.plan.sync()
        summed.update({name: norm, f"skipped/{name}": float(skipped)})
        return summed

    def policy_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        if self.lora:  # merged on the fly, under the base model's names; the learner's base weights stay as they are
            yield from lora.merged_weights(self.policy.lm)
            return
        for name, tensor in self.policy.lm.state_dict().items():
            yield name, full_tensor(tensor).detach()

    def policy_adapter(self) -> tuple[dict, dict[str, torch.Tensor]]:
        if not self.lora:
            raise NotImplementedError("policy_adapter: this learner trains no LoRA adapter (--lora.rank 0)")
        # whole tensors (gathered where FSDP2 shards them; every rank takes part), on the learner's device
        return lora.peft_format(self.policy.lm, dict(lora.whole_adapter(self.policy.lm)))

    def device_rng_state(self) -> torch.Tensor | None:
        return self.plan.device_rng_state()

    def set_device_rng_state(self, state: torch.Tensor | None) -> None:
        self.plan.set_device_rng_state(state)

    def snapshot_precedent(self) -> None:
        self._check_precedent_kept()
        if self.lora:
            self.precedent_adapter = lora.copy_adapter(self.policy)
        else:
            # an XLA-to-XLA copy keeps the SPMD sharding (tests/xla: nothing to shard again), unlike a load from the
            # host
            set_model_state_dict(self.precedent, get_model_state_dict(self.policy))
        self.plan.sync()

    def reincarnate_reference(self) -> None:
        if self.lora:
            self.reference_adapter = lora.copy_adapter(self.policy)
        else:
            set_model_state_dict(self.reference, get_model_state_dict(self.policy))
        self.reference_is_base = False
        self.plan.sync()

    def reset_optimizer(self) -> None:
        self.optimizer = self._new_optimizer(self.policy, self.cfg.optim.lr)
        if self.critic is not None:
            self.critic_optimizer = self._new_optimizer(self.critic, self.cfg.optim.critic_lr)
