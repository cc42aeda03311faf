"""Training on your own task end to end: a dataset with its own columns, reward functions from a file (good ones and
ones that hang, raise or return NaN, during a real run), the prompt form recorded and reused by eval.math_suite."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from remix.config import DataConfig, TrainConfig
from remix.tracking import read_metrics
from tests.helpers import run, small_config

ROOT = Path(__file__).resolve().parents[2]
USER = ROOT / "tests" / "fakes" / "user_rewards.py"


def _dataset(path: Path) -> Path:
    rows = [{"question": f"What is {a} + {b}?", "solution": str(a + b), "source": "mine"}
            for a in range(6) for b in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(model_dir, tmp_path, **overrides) -> TrainConfig:
    data = DataConfig(path=_dataset(tmp_path / "train.jsonl"), problem_key="question", answer_key="solution",
                      heldout_size=4, prompt_template="Q: {problem}", system_prompt="Answer in a box.")
    return small_config(model_dir, steps=3, eval_every=0, data=data, run_dir=tmp_path / "run", **overrides)


def test_a_hanging_a_raising_and_a_nan_reward_never_stop_a_run(tiny_model_dir, tmp_path, caplog):
    cfg = _config(tiny_model_dir, tmp_path, grader_timeout_s=0.5,
                  reward=(f"{USER}:boxed", f"{USER}:hangs_on_every_third", f"{USER}:raises", f"{USER}:returns_nan",
                          "math"),
                  reward_weights=(0.5, 0.1, 1.0, 1.0, 1.0))
    with caplog.at_level(logging.WARNING, logger="remix.rewards.pool"):
        summary = run(cfg)
    assert summary["steps"] == 3
    # reported in one line per grading call (3 steps, 2 evaluations), however many responses failed
    lines = [r.getMessage() for r in caplog.records if r.name == "remix.rewards.pool"]
    assert 3 <= len(lines) <= 5 and all("\n" not in line for line in lines)
    assert all(line.startswith("grading ") for line in lines)
    assert sum("a reward function failed on" in line and "raises raised KeyError" in line for line in lines) >= 3
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in records if r["step"] > 0]
    # every fresh response ran the raising and the NaN function (errors), except those lost to the hang (timeouts)
    fresh = [round((1 - r["historical_share"]) * cfg.batch_size) for r in steps]
    assert [r["grader/errors"] + r["grader/timeouts"] for r in steps] == fresh
    assert sum(r["grader/timeouts"] for r in steps) > 0  # the tiny random model's responses have all lengths
    assert all(r["reward/raises/mean"] == 0 and r["reward/returns_nan/mean"] == 0 for r in steps)
    for r in steps:  # the reward is the weighted sum of the parts that scored
        parts = 0.5 * r["reward/boxed/mean"] + 0.1 * r["reward/hangs_on_every_third/mean"] + r["reward/math/mean"]
        assert abs(r["reward/mean"] - parts) < 1e-9
    # held-out: a mean reward, not an accuracy (several functions), with each function's part
    assert "heldout/accuracy" not in records[-1] and "heldout/reward/boxed" in records[-1]
    assert "heldout_reward_after" in summary and "heldout_accuracy_after" not in summary


def test_own_columns_prompt_and_reward_are_recorded_and_reused_by_the_eval_suite(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path, reward=(f"{USER}:matches_solution", f"{USER}:boxed"),
                  reward_weights=(1.0, 0.2))
    run(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["reward"] == [f"{USER}:matches_solution", f"{USER}:boxed"] and saved["reward_weights"] == [1.0, 0.2]
    assert (saved["data"]["prompt_template"], saved["data"]["system_prompt"]) == ("Q: {problem}", "Answer in a box.")
    # the eval suite prompts the trained model as it was trained
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "eval.math_suite", "--model", str(tmp_path / "run" / "model"),
                           "--prompt-from", str(tmp_path / "run"), "--benchmarks", "amc2023", "--limit", "2",
                           "--max-new-tokens", "4", "--grader-workers", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["prompt"] == {"prompt_template": "Q: {problem}", "system_prompt": "Answer in a box.",
                                 "chat_template": True}


def test_a_missing_column_and_a_missing_reward_are_one_line_and_write_nothing(tiny_model_dir, tmp_path):
    data = _dataset(tmp_path / "train.jsonl")
    for flags, needle in (
        (["--data.path", str(data)], "row 1, field 'problem': missing (--data.problem-key); the row's columns are "
                                     "question, solution, source"),
        (["--data.path", str(data), "--data.problem-key", "question", "--data.answer-key", "solution", "--reward",
          f"{USER}:no_such_function"], f"--reward: '{USER}:no_such_function': {USER} has no 'no_such_function'"),
    ):
        run_dir = tmp_path / "run"
        proc = subprocess.run([sys.executable, "scripts/run.py", "--model", str(tiny_model_dir), "--run-dir",
                               str(run_dir), *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert not run_dir.exists()
