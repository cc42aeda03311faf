"""--model.dtype bfloat16: the learner computes in bf16 with float32 weights and optimizer state, and its
log-probs stay float32; activation checkpointing changes memory, not results.

Tolerances. bf16 keeps 8 significant bits (relative rounding 2^-9, about 0.2 %). On the tiny model the
matmuls accumulate 32-64 products in float32, so hidden states carry a relative error of a few 1e-3; the
head and softmax run in float32 on them, so log-probs (magnitude about 6) move by at most a few 1e-2 and
token means of the loss, ratios and KL by about 1e-3 relative. AdamW's first step is lr * sign(g) for
almost every coordinate, so the updates can only differ where bf16 flips the sign of a near-zero gradient
coordinate: measured cosine 0.997 between the two weight updates, asserted > 0.99.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from platforms.backend import parallel
from platforms.cpu import make_learner
from tests.helpers import small_config
from tests.integration.update_worker import LOSS_AGGS, fixed_batch, updated_weights, with_logprob_fields


def _update_direction(result: dict, base: dict) -> torch.Tensor:
    return torch.cat([(result[k] - base[k[len("policy."):]]).flatten() for k in sorted(result)
                      if k.startswith("policy.") and k[len("policy."):] in base])


def assert_bf16_update_close(bf16: dict, fp32: dict, base: dict) -> None:
    """One bf16 update against the float32 one (results of tests.integration.update_worker.updated_weights)."""
    for k in ("metric.loss/policy", "metric.kl/ref", "metric.kl/prev", "metric.ratio/mean", "metric.loss/value"):
        torch.testing.assert_close(bf16[k], fp32[k], rtol=1e-3, atol=1e-4, msg=k)
    for k in ("metric.grad_norm", "metric.critic_grad_norm"):
        torch.testing.assert_close(bf16[k], fp32[k], rtol=1e-2, atol=0, msg=k)
    cosine = F.cosine_similarity(_update_direction(bf16, base), _update_direction(fp32, base), dim=0)
    assert cosine > 0.99, f"bf16 and float32 updates point in different directions (cosine {float(cosine):.4f})"
    for k, v in bf16.items():
        if not k.startswith("metric."):
            assert v.dtype == torch.float32, f"{k}: master weights must stay float32, got {v.dtype}"


def test_bf16_learner_logprobs_are_float32_and_close(tiny_model_dir):
    cfg = small_config(tiny_model_dir)
    fp32 = make_learner(tiny_model_dir, cfg)
    bf16 = make_learner(tiny_model_dir, replace(cfg, model=replace(cfg.model, dtype="bfloat16")))
    batch = fixed_batch(fp32.policy.lm.config.vocab_size)
    a, b = fp32.logprobs(batch), bf16.logprobs(batch)
    assert a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, b)  # bf16 really computed something else
    torch.testing.assert_close(b, a, rtol=0, atol=3e-2)
    bf16.update(with_logprob_fields(batch, a), kl_lambda=1.0)
    assert all(p.dtype == torch.float32 for p in bf16.policy.parameters())
    assert bf16.optimizer.state and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32
                                        for s in bf16.optimizer.state.values())


def test_bf16_update_agrees_with_float32(tiny_model_dir):
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    fp32 = updated_weights(tiny_model_dir, LOSS_AGGS[0])
    bf16 = updated_weights(tiny_model_dir, LOSS_AGGS[0], "bfloat16")
    assert_bf16_update_close(bf16, fp32, base)


def assert_frozen_copies_exact(gaps: dict, all_bf16: bool) -> None:
    """Results of tests.integration.update_worker.frozen_copies_in_bf16: the frozen copies agree exactly with the
    policy wherever they hold its weights, and hold fewer bytes (all of them bf16 where all_bf16)."""
    for key in ("start/reference", "start/precedent", "snapshot/precedent", "reincarnated/reference"):
        assert float(gaps[key]) == 0.0, f"{key}: the frozen copy's log-probs differ by {float(gaps[key]):.3g}"
    assert float(gaps["updated/reference"]) > 0  # not vacuous: the update moved the policy
    ratio = int(gaps["bytes/reference"]) / int(gaps["bytes/policy"])
    assert abs(ratio - 0.5) < 0.01 if all_bf16 else 0.5 < ratio < 1.0, ratio  # (FSDP2 pads uneven shards)


def test_bf16_frozen_copies_are_smaller_and_compute_exactly_what_the_policy_computes(tiny_model_dir):
    """Unsharded bf16 (autocast): the reference and precedent keep the blocks' linear layers in bf16, which autocast
    computes in bf16 from float32 weights too, so they compute bit for bit what the float32 policy computes."""
    from tests.integration.update_worker import frozen_copies_in_bf16

    assert_frozen_copies_exact(frozen_copies_in_bf16(tiny_model_dir), all_bf16=False)


def test_frozen_copies_of_a_1_5b_model_in_bf16(tmp_path):
    """At Qwen2.5-1.5B's shape on the meta device (nothing allocated): a frozen copy holds 6.2 GB in float32; in a
    bf16 plan 3.6 GB unsharded (the blocks' linear layers in bf16) and 3.1 GB sharded (all of it, before
    division over the ranks)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from platforms.backend.logprobs import TokenLogprobs
    from scripts.gpu_check import QWEN15B

    def frozen_bytes(dtype: torch.dtype, sharded: bool) -> int:
        with torch.device("meta"):
            model = TokenLogprobs(Qwen2ForCausalLM(Qwen2Config(**QWEN15B)))
        if sharded:  # what prepare does to a frozen model before fully_shard (which needs a process group)
            model.requires_grad_(False)
            parallel.store_frozen_in_compute_dtype(model, parallel.transformer_blocks(model), dtype, sharded=True)
        else:
            model = parallel.ParallelPlan(torch.device("meta"), compute_dtype=dtype).prepare(model, trainable=False)
        return sum(p.nbytes for p in model.parameters())

    fp32, bf16, bf16_sharded = frozen_bytes(torch.float32, False), frozen_bytes(torch.bfloat16, False), \
        frozen_bytes(torch.bfloat16, True)
    assert round(fp32 / 1e9, 1) == 6.2 and round(bf16 / 1e9, 1) == 3.6 and round(bf16_sharded / 1e9, 1) == 3.1


def test_activation_checkpointing_gives_the_same_update(tiny_model_dir, monkeypatch):
    plain = updated_weights(tiny_model_dir, LOSS_AGGS[0])
    real, calls = parallel.recompute, []
    monkeypatch.setattr(parallel, "recompute", lambda *a, **k: calls.append(1) or real(*a, **k))
    recomputed = updated_weights(tiny_model_dir, LOSS_AGGS[0], activation_checkpointing=True)
    assert len(calls) == 2 * 4 * 2  # 2 blocks x 4 micro-batches x 2 trainable models (policy, critic)
    assert plain.keys() == recomputed.keys()
    for k in plain:
        torch.testing.assert_close(recomputed[k], plain[k], rtol=0, atol=0, msg=k)
