"""Signals at awkward moments: during the first evaluation, during a checkpoint save, a second signal."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

import remix.runner as runner
from remix.checkpoint import list_checkpoints
from remix.runner import Interrupted, StoppedAtOnce, finish_step_on_signal
from tests.helpers import final_weights, run, run_metrics_without_times, same_weights, small_config


def _cfg(tiny_model_dir, run_dir, steps=3):
    cfg = small_config(tiny_model_dir, steps=steps, eval_every=2, run_dir=run_dir, checkpoint_every=100)
    return dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, entropy_coef=0.01))


@pytest.fixture(scope="module")
def straight(tiny_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("signals") / "straight"
    run(_cfg(tiny_model_dir, run_dir))
    return run_dir


def test_ctrl_c_during_the_first_evaluation_keeps_it_and_the_same_command_goes_on(
        tiny_model_dir, straight, tmp_path, monkeypatch):
    real, calls = runner.Trainer.evaluate, []

    def evaluate(self, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the held-out split is evaluated
        return real(self, *a, **k)

    monkeypatch.setattr(runner.Trainer, "evaluate", evaluate)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted, match="interrupted at step 0 .SIGINT.; checkpointed") as e:
        run(_cfg(tiny_model_dir, run_dir))
    assert e.value.exit_code == 130
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000000"]
    summary = run(_cfg(tiny_model_dir, run_dir))  # the same directory: resumed, not RUN_DIR-2
    assert summary["run_dir"] == str(run_dir) and summary["resumed_from_step"] == 0
    assert same_weights(final_weights(run_dir), final_weights(straight))
    assert run_metrics_without_times(run_dir) == run_metrics_without_times(straight)


def test_a_signal_during_a_checkpoint_save_stops_right_after_it(tiny_model_dir, tmp_path, monkeypatch):
    real = runner.save_checkpoint

    def save(trainer, *a, **k):
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(trainer, *a, **k)

    monkeypatch.setattr(runner, "save_checkpoint", save)
    cfg = dataclasses.replace(_cfg(tiny_model_dir, tmp_path / "run", steps=4), checkpoint_every=1)
    with pytest.raises(Interrupted, match="interrupted at step 1 .SIGTERM.") as e:
        run(cfg)
    assert e.value.exit_code == 143
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000001"]  # no extra step, no extra save


def test_a_second_signal_stops_at_once():
    with pytest.raises(StoppedAtOnce, match="second SIGTERM") as e, finish_step_on_signal() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
