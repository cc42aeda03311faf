"""The CPU platform: the one PyTorch backend (platforms/backend) on the host, gloo between processes.

The reference every other platform is checked against, and what the tests and `make run` use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from platforms.backend import DTYPES, TorchLearner, TorchRollout, plan_for
from remix.config import TrainConfig

NAME = "cpu"
DIST_BACKEND = "gloo"
DEVICE = torch.device("cpu")


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32") -> TorchRollout:
    return TorchRollout(model_dir, seed=seed, dtype=DTYPES[dtype], device=DEVICE, platform=NAME)


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> TorchLearner:
    return TorchLearner(model_dir, cfg, plan_for(cfg, DEVICE), platform=NAME)


__all__ = ["DEVICE", "DIST_BACKEND", "NAME", "make_learner", "make_rollout"]
