"""Runs that survive: kill -9 and resume gives the uninterrupted run's weights and metrics; a kill
while a checkpoint is written leaves the previous one loadable; resuming across reincarnation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from remix.checkpoint import list_checkpoints
from tests.helpers import (
    final_weights,
    kill_at_step,
    run_metrics_without_times,
    same_weights,
    small_cli_flags,
    wait_for_step,
)

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "scripts" / "run.py")]
N = 6


def _run(flags: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(RUN + flags, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory):
    """The reference: N steps without interruption."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    (run_dir.parent / "stdout.txt").write_text(_run(small_cli_flags(tiny_model_dir, run_dir, N)).stdout)
    return run_dir


def _assert_same_run(a: Path, b: Path) -> None:
    assert same_weights(final_weights(a), final_weights(b))
    assert run_metrics_without_times(a) == run_metrics_without_times(b)


def test_kill_9_then_resume_equals_the_straight_run(tiny_model_dir, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(RUN + small_cli_flags(tiny_model_dir, run_dir, N), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = kill_at_step(proc, run_dir, N // 2)
    assert killed_at < N and list_checkpoints(run_dir), "expected an interrupted run with a checkpoint"
    out = _run(small_cli_flags(tiny_model_dir, run_dir, N)).stdout
    assert "resumed from" in out
    _assert_same_run(run_dir, straight_run)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == N and summary["resumed_from_step"] >= N // 2 - 1


def test_lora_kill_9_then_resume_equals_the_straight_lora_run(tiny_model_dir, tmp_path):
    """With --lora.rank the checkpoints hold the adapter (no model/ folder); resumed across reincarnation (T = 3),
    the run ends with the straight run's merged model, adapter and metrics, bit for bit."""
    lora = ["--lora.rank", "4", "--lora.alpha", "8"]
    straight = tmp_path / "straight"
    _run(small_cli_flags(tiny_model_dir, straight, N, *lora))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(RUN + small_cli_flags(tiny_model_dir, run_dir, N, *lora), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = kill_at_step(proc, run_dir, N // 2)
    assert killed_at < N and list_checkpoints(run_dir), "expected an interrupted run with a checkpoint"
    learner = list_checkpoints(run_dir)[-1] / "learner"
    assert (learner / "adapter").is_dir() and not (learner / "model").exists()
    out = _run(small_cli_flags(tiny_model_dir, run_dir, N, *lora)).stdout
    assert "resumed from" in out and "; model/ (merged), adapter/, metrics.jsonl" in out
    _assert_same_run(run_dir, straight)
    adapters = [load_file(d / "adapter" / "adapter_model.safetensors") for d in (run_dir, straight)]
    assert same_weights(*adapters)


KILL_DURING_SECOND_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import torch
    import remix.checkpoint as ckpt
    from remix.config import TrainConfig
    from tests.helpers import run
    import tyro

    real_save, calls = torch.save, []

    def save(obj, path, *a, **k):
        if str(path).endswith("trainer_state-rank0.pt"):
            calls.append(path)
            if len(calls) == 2:  # the learner's files of checkpoint 2 are written, its trainer state is not
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, path, *a, **k)

    ckpt.torch.save = save
    run(tyro.cli(TrainConfig, args=sys.argv[1:]))
""")


def test_kill_during_checkpoint_write_keeps_the_previous_one(tiny_model_dir, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SECOND_CHECKPOINT,
                           *small_cli_flags(tiny_model_dir, run_dir, N)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    root = run_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000001"]
    assert any(p.name.startswith(".step-000002.tmp-") for p in root.iterdir())  # the unfinished write
    out = _run(small_cli_flags(tiny_model_dir, run_dir, N)).stdout
    assert "resumed from" in out and "step 1," in out
    assert not any(p.name.startswith(".") for p in root.iterdir())  # leftovers cleaned up
    _assert_same_run(run_dir, straight_run)


def test_resume_across_reincarnation_and_after_it(tiny_model_dir, straight_run, tmp_path):
    """Stop at 2 (before T = 3), resume to 4 (after T: the reference weights are checkpointed), then to N."""
    run_dir = tmp_path / "run"
    _run(small_cli_flags(tiny_model_dir, run_dir, 2))
    _run(small_cli_flags(tiny_model_dir, run_dir, 4))
    learner = list_checkpoints(run_dir)[-1] / "learner"
    # reincarnated: the reference is no longer the base model, so the checkpoint holds its weights
    assert json.loads((learner / "learner.json").read_text())["reference_is_base"] is False
    _run(small_cli_flags(tiny_model_dir, run_dir, N))
    _assert_same_run(run_dir, straight_run)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["steps"] == N and len(saved["provenance"]["resumed"]) == 2  # updated by each resume
    # reincarnation (T = 3) is marked at its step only, and announced in the straight run's step line
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("reincarnated")] == [3]
    stdout = (straight_run.parent / "stdout.txt").read_text()
    announced = [line for line in stdout.splitlines() if "reincarnated" in line]
    assert len(announced) == 1 and announced[0].startswith("step 3/") and "on-policy" in announced[0]


def test_config_conflict_on_resume_names_the_field(tiny_model_dir, straight_run, tmp_path):
    proc = subprocess.run(RUN + small_cli_flags(tiny_model_dir, straight_run, N + 1, "--optim.lr", "1e-3"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "optim.lr" in proc.stderr
    assert json.loads((straight_run / "summary.json").read_text())["steps"] == N  # untouched


def test_a_run_from_before_a_field_existed_resumes_with_that_fields_default(tmp_path):
    """A config.json written by an older remix lacks the fields added since: it had their defaults, so resuming it
    with the defaults is no conflict, and with another value is one."""
    from remix.run_dir import RunError, check_resumable, config_json
    from tests.helpers import small_config

    cfg = small_config()
    saved = config_json(cfg)
    for key in ("reward", "reward_weights"):
        del saved[key]
    for key in ("problem_key", "answer_key", "prompt_template", "system_prompt", "chat_template"):
        del saved["data"][key]
    check_resumable(saved, cfg, tmp_path)
    with pytest.raises(RunError, match=r"reward_weights: \[\] -> \[2.0\]"):
        check_resumable(saved, small_config(reward_weights=(2.0,)), tmp_path)


def test_resume_never_starts_fresh_in_a_new_directory(tiny_model_dir, straight_run, tmp_path):
    run_dir = tmp_path / "run"
    _run(small_cli_flags(tiny_model_dir, run_dir, 1))
    before = (run_dir / "metrics.jsonl").read_text()
    out = _run(small_cli_flags(tiny_model_dir, run_dir, 1, "--resume", "never")).stdout
    assert "starting fresh in" in out and (tmp_path / "run-2" / "summary.json").is_file()
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing overwritten


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_checkpoints_the_last_step_then_resume_equals_the_straight_run(
        tiny_model_dir, straight_run, tmp_path, signum, code):
    """The signal goes to the whole process group, as Ctrl-C in a terminal does (grader workers too). Checkpoints
    are otherwise far apart (--checkpoint-every 100), so only the interrupt can have written the one found."""
    run_dir = tmp_path / "run"
    flags = small_cli_flags(tiny_model_dir, run_dir, N) + ["--checkpoint-every", "100"]
    proc = subprocess.Popen(RUN + flags, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    logged = wait_for_step(proc, run_dir, N // 2)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted at step ") and "Traceback" not in err, err
    stopped_at = int(lines[0].split()[3])
    assert stopped_at >= logged and [p.name for p in list_checkpoints(run_dir)] == [f"step-{stopped_at:06d}"]
    assert "resumed from" in _run(flags).stdout
    _assert_same_run(run_dir, straight_run)
