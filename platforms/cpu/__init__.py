"""The CPU reference platform: transformers rollouts and a plain PyTorch learner. Used by the tests."""

from __future__ import annotations

from pathlib import Path

import torch

from platforms.cpu.learner import CPULearner
from platforms.cpu.rollout import CPURollout
from remix.config import TrainConfig

NAME = "cpu"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32") -> CPURollout:
    return CPURollout(model_dir, seed=seed, dtype=DTYPES[dtype])


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> CPULearner:
    return CPULearner(model_dir, cfg)


__all__ = ["CPULearner", "CPURollout", "make_learner", "make_rollout"]
