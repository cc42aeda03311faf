"""The ReMix loop's bookkeeping on a tiny random model: rollouts, historical share, versions,
reincarnation, the precedent policy and the m passes (ALGORITHM.md sections 5 and 6)."""

from __future__ import annotations

import torch

from platforms.backend.logprobs import token_logprobs
from remix.config import ReMixConfig
from remix.objective import ObjectiveConfig
from tests.helpers import build_trainer, same_weights, small_config, undocumented_metrics, weights


class Recorder:
    """Wraps a trainer's rollout and learner to see what the loop asks of them."""

    def __init__(self, trainer) -> None:
        self.generated = 0
        self.updates: list = []  # (step, mini-batch) of every learner.update call
        self.step = 0
        gen, upd = trainer.rollout.generate, trainer.learner.update

        def generate(prompts, params):
            out = gen(prompts, params)
            if params.temperature > 0:  # training rollouts (evaluation is greedy)
                self.generated += sum(len(g) for g in out)
            return out

        def update(batch, kl_lambda):
            self.updates.append((self.step, batch, kl_lambda))
            return upd(batch, kl_lambda)

        trainer.rollout.generate, trainer.learner.update = generate, update


def test_bookkeeping_over_steps_and_reincarnation(tiny_model_dir, hash_grader):
    T, B, G, mini = 3, 16, 2, 8
    cfg = small_config(tiny_model_dir, steps=5, remix=ReMixConfig(reincarnation_step=T))
    trainer = build_trainer(cfg, hash_grader)
    rec = Recorder(trainer)
    start_weights = {}
    for k in range(1, cfg.steps + 1):
        rec.step = k
        start_weights[k] = weights(trainer.learner.policy)
        m = trainer.train_step()
        assert m["step"] == k == trainer.step
        # Rollout cost counts exactly the fresh responses generated.
        assert trainer.rollouts == rec.generated == m["rollouts"]
        step_updates = [u for u in rec.updates if u[0] == k]
        batches = [b for _, b, _ in step_updates]
        assert sum(len(b) for b in batches) == B * (2 if k <= T else 1)  # m = 2 passes, then 1
        assert all(len(b) == mini for b in batches)
        versions = torch.cat([b.fields["version"] for b in batches])
        if k == 1 or k > T:
            expected_hist = 0  # nothing stored yet / on-policy after reincarnation
        else:
            expected_hist = int(0.4 * B) // G * G  # whole groups, at most p * B responses
        assert m["historical_share"] == expected_hist / B
        hist_versions = versions[versions != k]
        assert len(hist_versions) == expected_hist * (2 if k <= T else 1)
        assert bool(((hist_versions >= k - 2) & (hist_versions <= k - 1)).all())  # the last N = 2 policies
        # The buffer holds only the last N policies' groups (empty right after reincarnation).
        if k == T:
            assert len(trainer.buffer) == 0 and trainer.reincarnated_at == T
            assert same_weights(weights(trainer.learner.reference), weights(trainer.learner.policy))
        elif k < T:
            assert set(trainer.buffer.versions()) == {v for v in (k - 1, k) if v >= 1}
        # The precedent after step k is pi_k, the weights at the start of step k.
        assert same_weights(weights(trainer.learner.precedent), start_weights[k])
        # Each step changes the weights (the hashed rewards give non-zero advantages).
        assert not same_weights(weights(trainer.learner.policy), start_weights[k])
    # The reference stays the weights at T after reincarnation, not the base model.
    assert not same_weights(weights(trainer.learner.reference), start_weights[1])


def test_logprobs_of_the_batch_come_from_the_right_policies(tiny_model_dir, hash_grader):
    """prox = pi_k, prev = pi_{k-1}, ref = base model, behav = the generating policy; all per sample."""
    # lambda_start = 0: lambda < 1 from step 1, so the KL to the precedent counts and prev is computed.
    cfg = small_config(tiny_model_dir, steps=3, remix=ReMixConfig(reincarnation_step=None, lambda_start=0))
    trainer = build_trainer(cfg, hash_grader)
    rec = Recorder(trainer)
    snapshots = {}
    model = trainer.learner.policy.lm
    base = weights(model)

    def logp_under(state, batch):
        saved = weights(model)
        model.load_state_dict(state)
        out = token_logprobs(model, batch, cfg.rollout.temperature, 64, with_grad=False)[0]
        model.load_state_dict(saved)
        return out

    for k in (1, 2, 3):
        rec.step = k
        snapshots[k] = weights(model)
        trainer.train_step()
    _, batch, _ = next(u for u in rec.updates if u[0] == 3)
    f = batch.fields
    torch.testing.assert_close(f["prox_logp"], logp_under(snapshots[3], batch), atol=1e-5, rtol=0)
    torch.testing.assert_close(f["prev_logp"], logp_under(snapshots[2], batch), atol=1e-5, rtol=0)
    torch.testing.assert_close(f["ref_logp"], logp_under(base, batch), atol=1e-5, rtol=0)
    for v in f["version"].unique().tolist():
        rows = f["version"] == v
        torch.testing.assert_close(f["behav_logp"][rows], logp_under(snapshots[v], batch)[rows], atol=1e-5, rtol=0)
    assert set(f["version"].tolist()) <= {1, 2, 3}


def test_precedent_pass_is_skipped_while_lambda_is_one(tiny_model_dir, hash_grader):
    """With lambda = 1 the KL to pi_{k-1} has weight 0: no precedent forward pass, prev = ref."""
    cfg = small_config(tiny_model_dir, steps=2, remix=ReMixConfig(reincarnation_step=None))  # lambda = 1 to 50
    trainer = build_trainer(cfg, hash_grader)
    rec = Recorder(trainer)
    asked, real_logprobs = [], trainer.learner.logprobs
    trainer.learner.logprobs = lambda batch, policy="current": asked.append(policy) or real_logprobs(batch, policy)
    for k in (1, 2):
        rec.step = k
        m = trainer.train_step()
        assert m["kl_lambda"] == 1.0 and "kl/prev" not in m
    assert "precedent" not in asked and {"current", "reference"} <= set(asked)
    for _, batch, _ in rec.updates:
        assert torch.equal(batch.fields["prev_logp"], batch.fields["ref_logp"])


def test_onpolicy_variant_uses_no_history_and_one_pass(tiny_model_dir, hash_grader):
    cfg = small_config(tiny_model_dir, steps=3, variant="onpolicy")
    trainer = build_trainer(cfg, hash_grader)
    rec = Recorder(trainer)
    for k in (1, 2, 3):
        rec.step = k
        m = trainer.train_step()
        assert m["historical_share"] == 0 and m["kl_lambda"] == 1.0
        assert sum(len(b) for s, b, _ in rec.updates if s == k) == cfg.batch_size
        assert all((b.fields["version"] == k).all() for s, b, _ in rec.updates if s == k)
    assert trainer.reincarnated_at is None and trainer.rollouts == 3 * cfg.batch_size
    # The precedent is never used on-policy, so the learner keeps no copy of it at all.
    assert trainer.learner.precedent is None


def test_ppo_runs_with_a_critic_and_recomputes_advantages(tiny_model_dir, hash_grader):
    cfg = small_config(tiny_model_dir, steps=2, algo="ppo")
    trainer = build_trainer(cfg, hash_grader)
    rec = Recorder(trainer)
    critic_before = weights(trainer.learner.critic)
    for k in (1, 2):
        rec.step = k
        m = trainer.train_step()
    assert "loss/value" in m and not same_weights(weights(trainer.learner.critic), critic_before)
    assert not undocumented_metrics(m)  # PPO's own metrics are documented too
    _, batch, _ = rec.updates[-1]
    mask = batch.response_mask
    # GAE with gamma = lambda = 1 and the 0/1 reward on the last token: A_t = R - V_t.
    expected = (batch.fields["reward"][:, None] - batch.fields["old_values"]) * mask
    torch.testing.assert_close(batch.fields["advantages"], expected, atol=1e-5, rtol=0)


def test_engine_memory_hooks_and_the_weight_stream_come_at_the_right_places(tiny_model_dir, hash_grader):
    """A colocated engine frees its memory after generating and takes it back before the new weights are
    streamed in; the stream carries every weight of the updated policy, by name."""
    trainer = build_trainer(small_config(tiny_model_dir, steps=1), hash_grader)
    rollout, learner, calls = trainer.rollout, trainer.learner, []
    real = {name: getattr(rollout, name) for name in ("generate", "release_memory", "resume_memory", "load_weights")}

    def recording(name):
        def call(*args):
            calls.append(name)
            if name == "load_weights":
                streamed = list(args[0])
                calls.append({n: t.clone() for n, t in streamed})
                return real[name](iter(streamed))
            return real[name](*args)
        return call

    for name in real:
        setattr(rollout, name, recording(name))
    real_update = learner.update
    learner.update = lambda batch, kl_lambda: calls.append("update") or real_update(batch, kl_lambda)
    trainer.train_step()
    names = [c for c in calls if isinstance(c, str)]
    assert names[:2] == ["generate", "release_memory"]
    assert names[2:-2] == ["update"] * (len(names) - 4) and len(names) > 4
    assert names[-2:] == ["resume_memory", "load_weights"]
    streamed = calls[-1]
    assert streamed.keys() == rollout.model.state_dict().keys()
    assert same_weights(streamed, weights(learner.policy.lm))
    assert same_weights(weights(rollout.model), weights(learner.policy.lm))  # the engine now samples from them


def test_no_precedent_pass_or_metric_when_the_kl_term_has_no_weight(tiny_model_dir, hash_grader):
    """kl_coef = 0 with lambda < 1: KL(theta || pi_{k-1}) has weight 0, so it is neither computed nor reported
    (before, the pass ran against a precedent that was never refreshed, and kl/prev reported that)."""
    cfg = small_config(tiny_model_dir, steps=2, remix=ReMixConfig(reincarnation_step=None, lambda_start=0),
                       objective=ObjectiveConfig(compile=False, kl_coef=0.0))
    trainer = build_trainer(cfg, hash_grader)
    asked, real_logprobs = [], trainer.learner.logprobs
    trainer.learner.logprobs = lambda batch, policy="current": asked.append(policy) or real_logprobs(batch, policy)
    for _ in range(2):
        m = trainer.train_step()
        assert m["kl_lambda"] < 1.0 and "kl/prev" not in m
    assert "precedent" not in asked


def test_reset_optimizer_at_reincarnation_resets_the_critic_too(tiny_model_dir, hash_grader):
    cfg = small_config(tiny_model_dir, steps=2, algo="ppo",
                       remix=ReMixConfig(reincarnation_step=1, reset_optimizer_at_reincarnation=True))
    trainer = build_trainer(cfg, hash_grader)
    trainer.train_step()  # step 1 updates both, then reincarnates
    assert trainer.reincarnated_at == 1
    assert not trainer.learner.optimizer.state and not trainer.learner.critic_optimizer.state


def test_resume_right_after_an_optimizer_reset_is_exact(tiny_model_dir, hash_grader, tmp_path):
    """A checkpoint at the reincarnation step that reset AdamW (policy and critic): the fresh state is saved
    as fresh, so the resumed run takes the same next step (it once failed to load, or changed the step)."""
    from remix.checkpoint import load_checkpoint, save_checkpoint

    cfg = small_config(tiny_model_dir, steps=3, algo="ppo",
                       remix=ReMixConfig(reincarnation_step=1, reset_optimizer_at_reincarnation=True))
    straight = build_trainer(cfg, hash_grader)
    straight.train_step()  # reincarnates and resets both optimizers
    assert not straight.learner.optimizer.state and not straight.learner.critic_optimizer.state
    folder = save_checkpoint(straight, tmp_path / "run")
    assert not straight.learner.optimizer.state  # saving did not touch the live optimizer
    resumed = build_trainer(cfg, hash_grader)
    load_checkpoint(resumed, folder)
    assert not resumed.learner.optimizer.state and not resumed.learner.critic_optimizer.state
    straight.train_step()
    resumed.train_step()
    assert same_weights(weights(straight.learner.policy), weights(resumed.learner.policy))
    assert same_weights(weights(straight.learner.critic), weights(resumed.learner.critic))
