"""The CPU platform: the one PyTorch backend (platforms/backend) on the host, gloo between processes.

The reference every other platform is checked against, and what the tests and `make run` use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from platforms.backend import TorchLearner, TorchRollout, plan_for, torch_rollout
from remix.config import RolloutConfig, TrainConfig

NAME = "cpu"
DIST_BACKEND = "gloo"
DEVICE = torch.device("cpu")


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32",
                 options: RolloutConfig | None = None, prompt_tokens: int | None = None) -> TorchRollout:
    """The backend's rollout on the host (dynamic KV cache unless --rollout.kv-cache static). `prompt_tokens`:
    the longest prompt it will be given, where known (sizes a static KV cache once)."""
    return torch_rollout(model_dir, DEVICE, NAME, seed, dtype, options, prompt_tokens=prompt_tokens)


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> TorchLearner:
    return TorchLearner(model_dir, cfg, plan_for(cfg, DEVICE), platform=NAME)


__all__ = ["DEVICE", "DIST_BACKEND", "NAME", "make_learner", "make_rollout"]
