"""The one PyTorch backend that every platform configures.

    platforms/backend/   logprobs.py  chunked float32 log-probs, the critic's value head
                         parallel.py  ParallelPlan: device, compute dtype, FSDP2 sharding, activation checkpointing
                         learner.py   TorchLearner: policy/reference/precedent, AdamW, critic, updates, checkpoints
                         rollout.py   TorchRollout: a transformers decode loop with engine log-probs
    platforms/cpu/       the backend on the CPU (gloo between processes): the reference, used by the tests
    platforms/cuda/      (to come) the backend on CUDA, plus an SGLang rollout
    platforms/xla/       (to come) the backend on an XLA device

A platform package chooses the device, the collective backend and, where it has one, its own rollout
engine; it never holds a second copy of the log-prob, loss, critic, reference/precedent or checkpoint code.
"""

from __future__ import annotations

import torch

from platforms.backend.learner import TorchLearner
from platforms.backend.parallel import DTYPES, ParallelPlan
from platforms.backend.rollout import TorchRollout
from remix import distributed as dist
from remix.config import TrainConfig


def plan_for(cfg: TrainConfig, device: torch.device) -> ParallelPlan:
    """The learner's plan from the config and the job: FSDP2 whenever torchrun started several processes."""
    return ParallelPlan(device=device, compute_dtype=DTYPES[cfg.model.dtype], sharded=dist.world_size() > 1,
                        activation_checkpointing=cfg.model.activation_checkpointing)


__all__ = ["DTYPES", "ParallelPlan", "TorchLearner", "TorchRollout", "plan_for"]
