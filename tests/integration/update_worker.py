"""One learner update on a fixed batch, in whichever job runs it (one process, or torchrun with N).

Used by tests/integration/test_distributed.py: run under `torchrun --nproc-per-node 2 -m
tests.integration.update_worker MODEL_DIR OUT`, each rank updates on its half of the batch and rank 0
saves the updated policy and critic weights for every loss aggregation mode (float32) and for bf16; in the test process
`updated_weights(...)` gives the same on the whole batch in one process.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from platforms.cpu import DIST_BACKEND, make_learner
from remix import distributed as dist
from remix.config import LoRAConfig
from remix.interfaces import TokenBatch
from tests.helpers import small_config

LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
B, P, T = 8, 5, 7


def fixed_batch(vocab: int) -> TokenBatch:
    """B sequences of varied prompt and response lengths (so ranks hold different token counts) with
    mixed-sign advantages, values and returns; `with_logprob_fields` adds the log-prob fields."""
    g = torch.Generator().manual_seed(7)
    input_ids = torch.randint(3, vocab, (B, P + T), generator=g)
    attention_mask = torch.zeros(B, P + T, dtype=torch.long)
    response_mask = torch.zeros(B, T, dtype=torch.bool)
    for i in range(B):
        p_len, r_len = 2 + i % 4, 1 + (3 * i) % T  # rank 0's half is shorter than rank 1's
        attention_mask[i, P - p_len:P + r_len] = 1
        response_mask[i, :r_len] = True
    fields = {
        "advantages": torch.randn(B, 1, generator=g).expand(B, T).clone(),
        "old_values": 0.1 * torch.randn(B, T, generator=g),
        "returns": torch.randn(B, T, generator=g),
    }
    return TokenBatch(input_ids, attention_mask, response_mask, P, fields)


def with_logprob_fields(batch: TokenBatch, current: torch.Tensor) -> TokenBatch:
    """behav / prox / ref / prev log-probs within a few tenths of the policy's own `current` ones, so that
    ratios straddle the clip range and the KL terms are small and non-zero (as in training)."""
    g = torch.Generator().manual_seed(8)
    noise = [0.3 * torch.randn(current.shape, generator=g) for _ in range(4)]
    batch.fields.update(behav_logp=current + noise[0], prox_logp=current + noise[1], ref_logp=current + noise[2],
                        prev_logp=current + noise[3])
    return batch


LORA = LoRAConfig(rank=4, alpha=8.0)


def updated_weights(model_dir, loss_agg: str, dtype: str = "float32",
                    activation_checkpointing: bool = False, lora: LoRAConfig | None = None) -> dict[str, torch.Tensor]:
    """Policy and critic weights, and the update's metrics, after one update on this rank's share of
    `fixed_batch` (all of it in one process). Log-prob fields come from the float32 base model. With `lora`, the
    policy's weights are the merged ones the engine receives."""
    cfg = small_config(model_dir, algo="ppo", mini_batch_size=B, micro_batch_size=2, lora=lora or LoRAConfig())
    cfg = replace(cfg, objective=replace(cfg.objective, loss_agg=loss_agg, kl_coef=0.1, entropy_coef=0.01),
                  model=replace(cfg.model, dtype=dtype, activation_checkpointing=activation_checkpointing))
    learner = make_learner(model_dir, cfg)
    batch = fixed_batch(learner.policy.lm.config.vocab_size)
    base = make_learner(model_dir, replace(cfg, model=replace(cfg.model, dtype="float32"), lora=LoRAConfig()))
    batch = with_logprob_fields(batch, base.logprobs(batch))  # every rank: the whole batch, the same numbers
    share = B // dist.world_size()
    mine = torch.arange(dist.rank() * share, (dist.rank() + 1) * share)
    metrics = learner.update(batch.select(mine), kl_lambda=0.7)
    out = {f"policy.{k}": v.detach().cpu().clone() for k, v in learner.policy_weights()}
    for k, v in learner.critic.state_dict().items():
        out[f"critic.{k}"] = (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().clone()
    out.update({f"metric.{k}": torch.tensor(v) for k, v in metrics.items()})
    return out


def frozen_copies_in_bf16(model_dir) -> dict[str, torch.Tensor]:
    """A bf16 learner's frozen copies (stored in bf16) against its policy (float32 master weights): the largest
    log-prob differences at the start (reference and precedent are the base model), after an update and a
    precedent snapshot, and after reincarnation; and the bytes the frozen copies hold on this rank."""
    cfg = small_config(model_dir, mini_batch_size=B, micro_batch_size=2)
    cfg = replace(cfg, objective=replace(cfg.objective, kl_coef=0.1), model=replace(cfg.model, dtype="bfloat16"))
    learner = make_learner(model_dir, cfg)
    batch = fixed_batch(learner.policy.lm.config.vocab_size)

    def gap(policy: str) -> torch.Tensor:
        return (learner.logprobs(batch, policy) - learner.logprobs(batch)).abs().max()

    out = {"start/reference": gap("reference"), "start/precedent": gap("precedent")}
    share = B // dist.world_size()
    learner.update(with_logprob_fields(batch, learner.logprobs(batch)).select(
        torch.arange(dist.rank() * share, (dist.rank() + 1) * share)), kl_lambda=0.7)
    out["updated/reference"] = gap("reference")  # the policy moved away from the base model
    learner.snapshot_precedent()
    out["snapshot/precedent"] = gap("precedent")
    learner.reincarnate_reference()
    out["reincarnated/reference"] = gap("reference")

    def local_bytes(module) -> int:
        return sum((p.to_local() if hasattr(p, "to_local") else p).nbytes for p in module.parameters())

    out["bytes/policy"] = torch.tensor(local_bytes(learner.policy))
    out["bytes/reference"] = torch.tensor(local_bytes(learner.reference))
    return out


def lora_anchors(model_dir, folder) -> dict[str, torch.Tensor]:
    """A LoRA learner on this job's processes: the reference against the base model (a full learner's policy),
    the precedent after an update against the policy at its snapshot, and a save/load round trip: the largest
    log-prob differences (0: exact)."""
    cfg = small_config(model_dir, mini_batch_size=B, micro_batch_size=2, lora=LORA)
    learner, full = make_learner(model_dir, cfg), make_learner(model_dir, replace(cfg, lora=LoRAConfig()))
    batch = fixed_batch(learner.policy.lm.config.vocab_size)
    share = B // dist.world_size()
    mine = torch.arange(dist.rank() * share, (dist.rank() + 1) * share)

    def gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().max()

    base = full.logprobs(batch)
    # the reference first: a fresh sharded learner's first forward pass is where FSDP2 reads which weights train
    out = {"start/reference": gap(learner.logprobs(batch, "reference"), base)}
    for _ in range(2):
        learner.update(with_logprob_fields(batch, learner.logprobs(batch)).select(mine), kl_lambda=0.7)
    out["updated/moved"] = gap(learner.logprobs(batch), base)  # > 0: the adapter trained
    out["updated/reference"] = gap(learner.logprobs(batch, "reference"), base)
    learner.snapshot_precedent()
    at_snapshot = learner.logprobs(batch)
    learner.update(with_logprob_fields(batch, at_snapshot).select(mine), kl_lambda=0.7)
    out["snapshot/precedent"] = gap(learner.logprobs(batch, "precedent"), at_snapshot)
    learner.reincarnate_reference()
    learner.save_state(Path(folder))
    resumed = make_learner(model_dir, cfg)
    resumed.load_state(Path(folder))
    for name in ("current", "reference", "precedent"):
        out[f"resumed/{name}"] = gap(resumed.logprobs(batch, name), learner.logprobs(batch, name))
    return out


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    dist.init(DIST_BACKEND)
    results = {("float32", mode): updated_weights(model_dir, mode) for mode in LOSS_AGGS}
    results["bfloat16", LOSS_AGGS[0]] = updated_weights(model_dir, LOSS_AGGS[0], "bfloat16")  # FSDP2 mixed precision
    results["frozen", "bfloat16"] = frozen_copies_in_bf16(model_dir)
    results["lora", "float32"] = updated_weights(model_dir, LOSS_AGGS[0], lora=LORA)
    # bf16 plan: the frozen base in bf16, the adapter float32 (FSDP2 needs one dtype among trainable weights only)
    results["lora", "bfloat16"] = updated_weights(model_dir, LOSS_AGGS[0], "bfloat16", lora=LORA)
    results["lora", "anchors"] = lora_anchors(model_dir, Path(out).parent / "lora-checkpoint")
    if dist.is_main():
        torch.save(results, out)
    dist.shutdown()


if __name__ == "__main__":
    main()
