"""Whole training runs with the SGLang rollout against the fake engine (tests/integration/sglang_run.py, which
behaves like SGLang 0.5.20 where a run's survival depends on it): SIGTERM and Ctrl-C to the whole process group
finish the step, checkpoint and exit 143 / 130, and the same command resumes; under torchrun with 2 processes
(torchrun's agent-store variable set) every rank's engine starts and the job finishes; the grader pool grades
after the engine forced the spawn start method and after its shutdown killed the pool's processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from remix.checkpoint import list_checkpoints
from tests.helpers import small_cli_flags, wait_for_step

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ["-m", "tests.integration.sglang_run"]
pytestmark = pytest.mark.filterwarnings("ignore:resource_tracker. process died unexpectedly:UserWarning")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(run_dir: Path, model_dir, steps: int, torchrun: bool = False) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"] if torchrun \
        else [sys.executable]
    return subprocess.Popen([*launcher, *HARNESS, *small_cli_flags(model_dir, run_dir, steps)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_signal_finishes_the_step_checkpoints_and_the_same_command_resumes(tiny_model_dir, tmp_path, how):
    """SIGTERM to the trainer (SGLang's tokenizer manager would have taken it over: exit 0 at the next engine
    call, no checkpoint), or SIGINT to the whole process group as Ctrl-C sends it (SGLang's scheduler would die of
    it, and the trainer would be SIGKILLed)."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, tiny_model_dir, steps=6)
    wait_for_step(proc, run_dir, 1)
    if how == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == (143 if how == "sigterm" else 130), err[-3000:]
    assert "interrupted at step" in err and "checkpointed" in err
    stopped_at = max(int(p.name.split("-")[1]) for p in list_checkpoints(run_dir))
    assert 1 <= stopped_at < 6
    code, _, err = _finish(_start(run_dir, tiny_model_dir, steps=6))
    assert code == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["resumed_from_step"] == stopped_at


def test_two_processes_under_torchrun_each_start_an_engine_and_finish(tiny_model_dir, tmp_path):
    """torchrun sets TORCHELASTIC_USE_AGENT_STORE=True for its workers; each rank's engine spawns a scheduler that
    must still rendezvous (without the rollout's precaution it would wait for nobody, then the rank is killed)."""
    run_dir = tmp_path / "run"
    code, out, err = _finish(_start(run_dir, tiny_model_dir, steps=2, torchrun=True))
    assert code == 0, err[-3000:]
    assert "TORCHELASTIC_USE_AGENT_STORE=True" in out  # the condition under test held
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2


def test_the_grader_pool_survives_the_engine(tiny_model_dir):
    """SGLang forces the spawn start method on the whole process and its shutdown SIGKILLs every child process:
    the grader pool (its own forkserver context) grades after both, its killed workers replaced."""
    from platforms.cuda.sglang_rollout import SGLangRollout
    from remix.rewards import GraderPool
    from tests.fakes import sglang as fake

    responses, answers = ["so \\boxed{4}", "\\boxed{5}"], ["4", "4"]
    with GraderPool(1, timeout_s=30.0) as pool:
        assert pool.grade(responses, answers).scores == [1.0, 0.0]
        rollout = SGLangRollout(tiny_model_dir, api=fake.api())
        assert pool.grade(responses, answers).scores == [1.0, 0.0]
        rollout.shutdown()  # kills the pool's worker and its fork server
        assert pool.grade(responses, answers).scores == [1.0, 0.0]
