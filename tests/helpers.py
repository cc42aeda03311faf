"""Helpers shared by the tests: a deterministic grader stand-in, small configs, weight comparisons."""

from __future__ import annotations

import hashlib

import torch

from remix.config import DataConfig, ModelConfig, ReMixConfig, RolloutConfig, TrainConfig
from remix.objective import ObjectiveConfig
from remix.rewards import GradeReport


class HashGrader:
    """A deterministic stand-in for GraderPool: reward 1 for responses whose text hashes odd.

    A random model almost never answers correctly, which would give all-zero GRPO advantages and
    no learning; hashed rewards make the groups' advantages non-trivial.
    """

    names = ("hash",)

    def grade(self, responses, references, timeout_s=None) -> GradeReport:
        scores = [float(hashlib.sha1(r.encode()).digest()[0] % 2) for r in responses]
        return GradeReport(scores=scores, parts=[(s,) for s in scores], names=self.names)


def small_config(model_dir=None, **overrides) -> TrainConfig:
    """A TrainConfig that takes well under a second per step on a tiny random model."""
    if model_dir is not None:
        overrides["model"] = ModelConfig(name=str(model_dir))
    remix = overrides.pop("remix", ReMixConfig(reincarnation_step=3))
    base = dict(
        steps=4, batch_size=16, mini_batch_size=8, micro_batch_size=4, eval_every=0, seed=0,
        grader_workers=1, logprob_chunk_tokens=16,
        rollout=RolloutConfig(temperature=1.0, max_new_tokens=6, group_size=2),
        data=DataConfig(heldout_size=8, arith_levels=(1,)),
        remix=remix,
        objective=ObjectiveConfig(compile=False),  # eager: no compile time in every test (one test compiles)
    )
    base.update(overrides)
    return TrainConfig(**base)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def small_cli_flags(model_dir, run_dir, steps: int, *extra: str) -> list[str]:
    """scripts/run.py flags equal to small_config(), plus an entropy bonus so that a random model's
    weights change every step (its answers all score 0, so its advantages are all 0)."""
    return [
        "--model", str(model_dir), "--run-dir", str(run_dir), "--steps", str(steps),
        "--batch-size", "16", "--mini-batch-size", "8", "--micro-batch-size", "4", "--eval-every", "2",
        "--grader-workers", "1", "--logprob-chunk-tokens", "16", "--rollout.max-new-tokens", "6",
        "--rollout.group-size", "2", "--data.heldout-size", "8", "--data.arith-levels", "1",
        "--remix.reincarnation-step", "3", "--objective.no-compile", "--objective.entropy-coef", "0.01",
        "--checkpoint-every", "1", *extra,
    ]


def run_metrics_without_times(run_dir) -> list[dict]:
    """metrics.jsonl of a run minus wall-clock timings, which differ between identical runs."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    from pathlib import Path

    from safetensors.torch import load_file

    return load_file(Path(run_dir) / "model" / "model.safetensors")


def undocumented_metrics(names) -> set[str]:
    """Those of `names` not documented in docs/metrics.md (first column of its table; NAME there stands for a reward
    function's name, e.g. `reward/NAME/mean`)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    documented = [name for row in re.findall(r"^\| (`[^|]+`) \|", text, flags=re.M)
                  for name in re.findall(r"`([^`]+)`", row)]
    patterns = [re.compile("^" + re.escape(d).replace("NAME", "[^/]+") + "$") for d in documented]
    return {n for n in names if not any(p.match(n) for p in patterns)}


def _logged_steps(run_dir) -> list[int]:
    import json
    from pathlib import Path

    metrics = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()] if metrics.exists() else []


def wait_for_step(proc, run_dir, step: int, timeout_s: float = 240) -> int:
    """Waits until `proc` (a training run writing RUN_DIR/metrics.jsonl) has logged `step`; returns the last
    step logged. The timeout is a hang detector only: it returns as soon as the run gets there."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(s >= step for s in _logged_steps(run_dir)):
        assert proc.poll() is None, "the run ended before it got there"
        time.sleep(0.05)
    return max(_logged_steps(run_dir))


def kill_at_step(proc, run_dir, step: int, whole_group: bool = False) -> int:
    """`wait_for_step`, then SIGKILL (its whole process group with `whole_group`: a torchrun job and its
    ranks); returns the last step it had logged."""
    import os
    import signal

    wait_for_step(proc, run_dir, step)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return max(_logged_steps(run_dir))


def run(cfg: TrainConfig, **kwargs):
    """remix.runner.run on the platform the config names, resolved as scripts/run.py resolves it."""
    from platforms import get_platform
    from remix import runner

    return runner.run(cfg, get_platform(cfg.platform), **kwargs)


def build_trainer(cfg: TrainConfig, grader):
    """remix.runner.build_trainer on the platform the config names."""
    from platforms import get_platform
    from remix import runner

    return runner.build_trainer(cfg, get_platform(cfg.platform), grader)
