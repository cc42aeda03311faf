"""The CPU reference platform: chunked learner log-probs, and rollout/learner agreement."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from platforms.backend import TorchRollout
from platforms.backend.logprobs import token_logprobs
from platforms.cpu import make_learner, make_rollout
from remix.batching import collate, positions_of
from remix.interfaces import Group, SamplingParams
from tests.helpers import small_config


def _batch_from(rollout: TorchRollout, prompts, params):
    gens = rollout.generate(prompts, params)
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0] * len(gs), version=1,
                    engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    return collate(groups, rollout.pad_id), groups


def _prompts(rollout):
    tok = rollout.tokenizer
    return [tok(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi")]


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_chunked_logprobs_equal_full_vocabulary_computation(tiny_model_dir, chunk):
    rollout = make_rollout(tiny_model_dir, seed=1)
    batch, _ = _batch_from(rollout, _prompts(rollout), SamplingParams(temperature=1.0, max_new_tokens=7, n=2))
    model = rollout.model.float()
    temperature = 0.7
    logp, entropy = token_logprobs(model, batch, temperature, chunk_tokens=chunk, with_grad=False)
    # Direct: the whole [B, L, V] logits tensor in float64.
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=positions_of(batch.attention_mask)).logits.double() / temperature
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    full = F.log_softmax(logits[:, P - 1:P + T - 1], dim=-1)
    direct = full.gather(-1, batch.input_ids[:, P:P + T, None]).squeeze(-1) * batch.response_mask
    direct_entropy = -(full.exp() * full).sum(-1) * batch.response_mask
    torch.testing.assert_close(logp.double(), direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy.double(), direct_entropy, atol=1e-5, rtol=0)
    assert (logp[~batch.response_mask] == 0).all()


def test_chunked_logprobs_gradient_matches_direct(tiny_model_dir):
    rollout = make_rollout(tiny_model_dir, seed=2)
    batch, _ = _batch_from(rollout, _prompts(rollout), SamplingParams(temperature=1.0, max_new_tokens=5, n=1))
    model = rollout.model.float().requires_grad_(True)
    logp, _ = token_logprobs(model, batch, 1.0, chunk_tokens=3, with_grad=True)
    (grad_chunked,) = torch.autograd.grad(logp.sum(), model.get_output_embeddings().weight)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=positions_of(batch.attention_mask)).logits
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    direct = F.log_softmax(logits[:, P - 1:P + T - 1].float(), -1).gather(-1, batch.input_ids[:, P:P + T, None])
    (grad_direct,) = torch.autograd.grad((direct.squeeze(-1) * batch.response_mask).sum(),
                                         model.get_output_embeddings().weight)
    torch.testing.assert_close(grad_chunked, grad_direct, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_rollout_logprobs_agree_with_learner(tiny_model_dir, temperature):
    cfg = small_config()
    cfg.rollout.temperature = temperature
    rollout = make_rollout(tiny_model_dir, seed=3)
    learner = make_learner(tiny_model_dir, cfg)
    batch, groups = _batch_from(rollout, _prompts(rollout),
                                SamplingParams(temperature=temperature, max_new_tokens=8, n=3))
    learner_logp = learner.logprobs(batch, "current")
    engine = torch.zeros_like(learner_logp)
    for i, t in enumerate(t for g in groups for t in g.engine_logp):
        engine[i, :len(t)] = t
    torch.testing.assert_close(learner_logp, engine, atol=1e-4, rtol=0)


def test_generation_stops_at_eos_and_reports_why(tiny_model_dir):
    rollout = make_rollout(tiny_model_dir, seed=4)
    gens = rollout.generate(_prompts(rollout), SamplingParams(temperature=1.0, max_new_tokens=30, n=4))
    assert len(gens) == 3 and all(len(g) == 4 for g in gens)
    for g in (g for gs in gens for g in gs):
        assert len(g.token_ids) == len(g.logprobs) <= 30
        stopped = g.token_ids[-1] in rollout.stop_ids
        assert g.finish_reason == ("stop" if stopped else "length")
        assert not any(t in rollout.stop_ids for t in g.token_ids[:-1])
        if g.finish_reason == "length":
            assert len(g.token_ids) == 30


def test_greedy_generation_is_deterministic_and_seeded_sampling_repeats(tiny_model_dir):
    rollout = make_rollout(tiny_model_dir, seed=5)
    prompts = _prompts(rollout)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    assert rollout.generate(prompts, greedy) == rollout.generate(prompts, greedy)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=8, n=2, seed=11)
    assert rollout.generate(prompts, sampled) == rollout.generate(prompts, sampled)
