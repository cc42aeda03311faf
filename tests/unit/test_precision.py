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


def test_activation_checkpointing_gives_the_same_update(tiny_model_dir, monkeypatch):
    plain = updated_weights(tiny_model_dir, LOSS_AGGS[0])
    real, calls = parallel.checkpoint, []
    monkeypatch.setattr(parallel, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    recomputed = updated_weights(tiny_model_dir, LOSS_AGGS[0], activation_checkpointing=True)
    assert len(calls) == 2 * 4 * 2  # 2 blocks x 4 micro-batches x 2 trainable models (policy, critic)
    assert plain.keys() == recomputed.keys()
    for k in plain:
        torch.testing.assert_close(recomputed[k], plain[k], rtol=0, atol=0, msg=k)
