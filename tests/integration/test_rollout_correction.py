"""--objective.rollout-correction with an engine whose log-probs are off by a known amount: an engine that reports
every sampled token DELTA nats less likely than the distribution it sampled from (as a lower-precision engine
might). The corrected update equals the hand-computed one; with `none` the gap shows in sampler/logp_abs_diff,
and the correction's metrics say what it did."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from platforms.cpu import make_learner, make_rollout
from remix.batching import collate
from remix.config import ReMixConfig
from remix.interfaces import Generation, Group, SamplingParams
from remix.objective import ObjectiveConfig
from tests.helpers import HashGrader, small_config

DELTA = 0.3


class ShiftedEngine:
    """The CPU platform's engine, reporting each token's log-prob DELTA lower than it is."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, params):
        return [[Generation(g.token_ids, [lp - DELTA for lp in g.logprobs], g.finish_reason) for g in gens]
                for gens in self.inner.generate(prompts, params)]


def _batch(model_dir):
    engine = ShiftedEngine(make_rollout(model_dir, seed=3))
    prompts = [engine.tokenizer(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi", "9 - 4")]
    gens = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=6, n=2))
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0] * 2, version=1,
                    engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    return collate(groups, engine.pad_id), groups


def _fields(batch, groups, behav, advantages):
    from remix.batching import pad_tokens

    T = batch.response_mask.shape[1]
    batch.fields.update(behav_logp=behav, prox_logp=behav.clone(), ref_logp=behav.clone(), prev_logp=behav.clone(),
                        advantages=advantages, engine_logp=pad_tokens([t for g in groups for t in g.engine_logp], T))
    return batch


def test_token_tis_update_equals_the_hand_computed_one(tiny_model_dir):
    """Without KL and entropy terms, token-tis's loss is the uncorrected loss with each token's advantage times its
    weight min(rho, cap), rho = exp(behaviour - engine log-prob) = e^DELTA here: the same update."""
    base = small_config(tiny_model_dir, mini_batch_size=8, micro_batch_size=4)
    objective = ObjectiveConfig(kl_coef=0.0, entropy_coef=0.0, rollout_correction="token-tis", tis_cap=2.0)
    corrected = make_learner(tiny_model_dir, replace(base, objective=objective))
    plain = make_learner(tiny_model_dir, replace(base, objective=replace(objective, rollout_correction="none")))
    batch, groups = _batch(tiny_model_dir)
    behav = corrected.logprobs(batch)
    g = torch.Generator().manual_seed(0)
    advantages = torch.randn(len(batch), 1, generator=g).expand_as(behav).clone()
    a = _fields(batch, groups, behav, advantages)
    rho = torch.exp(a.fields["behav_logp"] - a.fields["engine_logp"]) * a.response_mask
    torch.testing.assert_close(rho[a.response_mask], torch.full_like(rho[a.response_mask], math.exp(DELTA)),
                               rtol=1e-4, atol=0)  # the engine's gap is the planted one
    b = _fields(collate(groups, make_rollout(tiny_model_dir).pad_id), groups, behav, advantages * rho.clamp(max=2.0))
    corrected.update(a, kl_lambda=1.0)
    plain.update(b, kl_lambda=1.0)
    for (name, w1), (_, w2) in zip(corrected.policy_weights(), plain.policy_weights()):
        torch.testing.assert_close(w1, w2, rtol=1e-5, atol=1e-7, msg=name)
    before = dict(make_learner(tiny_model_dir, base).policy_weights())
    assert any(not torch.equal(w, before[k]) for k, w in corrected.policy_weights())  # it did update


@pytest.mark.parametrize("mode", ["none", "token-tis", "seq-mis"])
def test_the_gap_and_the_correction_show_in_the_metrics(tiny_model_dir, mode):
    from remix.data import ArithTask, ProblemSource
    from remix.runner import encode_problems
    from remix.trainer import Trainer

    cfg = small_config(tiny_model_dir, remix=ReMixConfig(reincarnation_step=None),
                       objective=ObjectiveConfig(compile=False, rollout_correction=mode))
    engine = ShiftedEngine(make_rollout(tiny_model_dir, seed=0))
    train = encode_problems(engine.tokenizer, ArithTask((1,)).train_problems(), 512, "training set")
    trainer = Trainer(cfg, engine, make_learner(tiny_model_dir, cfg), HashGrader(), engine.tokenizer,
                      ProblemSource(train, 0), [])
    steps = [trainer.train_step() for _ in range(2)]
    for m in steps:
        assert m["sampler/logp_abs_diff"] == pytest.approx(DELTA, abs=1e-3)
    last = steps[-1]
    if mode == "none":
        assert not any(k.startswith("rollout_correction/") for k in last)
    elif mode == "token-tis":  # e^0.3 = 1.35 < the cap of 2: every token weighted, none truncated
        assert last["rollout_correction/fresh/weight_mean"] == pytest.approx(math.exp(DELTA), rel=1e-3)
        assert last["rollout_correction/historical/weight_mean"] == pytest.approx(math.exp(DELTA), rel=1e-3)
        assert last["rollout_correction/fresh/truncated_frac"] == 0.0
    else:  # a sequence's rho is e^(0.3 x its length): outside [0.5, 2] from 3 tokens on
        assert last["rollout_correction/fresh/masked_frac"] > 0.5
