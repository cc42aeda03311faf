"""A non-finite update is skipped, counted and survived; too many in a row stop the run with a
checkpoint; a grader worker that dies or hangs during a step does not stop training."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

import platforms.backend.logprobs as backend_logprobs
from remix.checkpoint import list_checkpoints
from remix.rewards import GraderPool, RewardSet, verify_in_process
from remix.runner import TrainingHalted
from tests.helpers import build_trainer, run, same_weights, small_config, weights


def nan_logprobs_on(calls: set[int], monkeypatch) -> list[int]:
    """Makes the learner's differentiable log-probs NaN on the given (1-based) training forward passes."""
    real, seen = backend_logprobs.token_logprobs, []

    def patched(model, batch, temperature, chunk_tokens, with_grad, *rest):
        logp, entropy = real(model, batch, temperature, chunk_tokens, with_grad, *rest)
        if with_grad:
            seen.append(1)
            if len(seen) in calls:
                logp = logp * float("nan")
        return logp, entropy

    monkeypatch.setattr(backend_logprobs, "token_logprobs", patched)
    return seen


def test_a_nan_update_is_skipped_counted_and_training_goes_on(tiny_model_dir, hash_grader, monkeypatch):
    cfg = small_config(tiny_model_dir, steps=2)
    trainer = build_trainer(cfg, hash_grader)
    learner = trainer.learner
    nan_logprobs_on({1}, monkeypatch)  # the first micro-batch of the first update
    before, after_each = weights(learner.policy), []
    real_update = learner.update

    def update(batch, kl_lambda):
        out = real_update(batch, kl_lambda)
        after_each.append((out, weights(learner.policy)))
        return out

    learner.update = update
    m1 = trainer.train_step()
    first = after_each[0]
    assert first[0]["skipped/grad_norm"] == 1.0 and same_weights(first[1], before)  # skipped: no change
    assert [out["skipped/grad_norm"] for out, _ in after_each[1:]] == [0.0] * (len(after_each) - 1)
    assert not same_weights(weights(learner.policy), before)  # the later updates of the step applied
    assert m1["skipped/grad_norm"] == 1.0 and trainer.consecutive_skips == 0
    assert all(torch.isfinite(p).all() for p in learner.policy.parameters())
    m2 = trainer.train_step()
    assert m2["skipped/grad_norm"] == 0.0


def test_too_many_consecutive_skips_stop_the_run_with_a_checkpoint(tiny_model_dir, monkeypatch, tmp_path):
    nan_logprobs_on(set(range(1, 10_000)), monkeypatch)  # every update is non-finite
    cfg = small_config(tiny_model_dir, steps=5, max_consecutive_skips=3, run_dir=tmp_path / "run",
                       checkpoint_every=0)
    with pytest.raises(TrainingHalted, match="4 consecutive updates were skipped"):
        run(cfg)
    # m = 2 passes x 2 mini-batches = 4 updates per step: the limit of 3 is passed in step 1, which
    # finishes (its last update is skipped too) and is checkpointed.
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000001"]


# --- the grader during training --------------------------------------------------------------------


def slow_on_some_reward(response: str, row: dict) -> float:
    """A --reward function that hangs (past any deadline) on about a quarter of the responses and grades the rest as
    the math reward does."""
    if hash(response) % 4 == 0:
        time.sleep(60)
    return verify_in_process(response, row["answer"])


def test_grader_worker_killed_during_a_step_does_not_stop_training(tiny_model_dir):
    cfg = small_config(tiny_model_dir, steps=3, grader_workers=2)
    with GraderPool(2, timeout_s=5.0, rewards=cfg.rewards()) as pool:
        trainer = build_trainer(cfg, pool)
        trainer.train_step()
        real_grade = pool.grade

        def grade_while_killing(responses, references, timeout_s=None):
            for pid in pool.worker_pids():  # both workers die as grading starts
                os.kill(pid, signal.SIGKILL)
            return real_grade(responses, references, timeout_s)

        pool.grade = grade_while_killing
        m = trainer.train_step()
        pool.grade = real_grade
        assert m["step"] == 2 and m["grader/errors"] + m["grader/timeouts"] <= cfg.batch_size
        m3 = trainer.train_step()  # the replaced workers grade the next step normally
        assert m3["grader/errors"] == 0 and m3["grader/timeouts"] == 0


def test_hung_grader_workers_time_out_and_training_goes_on(tiny_model_dir):
    cfg = small_config(tiny_model_dir, steps=2, grader_workers=2)
    rewards = RewardSet(("tests.integration.test_robustness:slow_on_some_reward",))  # loaded by the workers
    with GraderPool(2, timeout_s=0.5, rewards=rewards) as pool:
        trainer = build_trainer(cfg, pool)
        timer = threading.Timer(120, lambda: os.kill(os.getpid(), signal.SIGINT))  # a hang fails the test
        timer.start()
        try:
            metrics = [trainer.train_step() for _ in range(2)]
        finally:
            timer.cancel()
    assert sum(m["grader/timeouts"] for m in metrics) > 0
    assert trainer.step == 2
