"""The CUDA platform: the one PyTorch backend (platforms/backend) on this process's GPU, NCCL between processes.

One GPU per process: under torchrun, rank r of a node uses cuda:LOCAL_RANK (remix.distributed sets it before
the first collective). The learner is the backend's TorchLearner (FSDP2 over NCCL with several processes,
bf16 with --model.dtype bfloat16); the rollout is the backend's TorchRollout on the same GPU.

Not here yet (issue "CUDA platform"): the SGLang rollout engine, a static KV cache and a compiled decode
step. None of this platform has been executed on a GPU so far: no session of this project has had one
(scripts/gpu_check.py is the prepared check).
"""

from __future__ import annotations

from pathlib import Path

import torch

from platforms.backend import DTYPES, TorchLearner, TorchRollout, plan_for
from remix import distributed as dist
from remix.config import TrainConfig

NAME = "cuda"
DIST_BACKEND = "nccl"


def _unavailable():
    from platforms import PlatformUnavailable

    return PlatformUnavailable("--platform cuda: no CUDA device is visible here (torch.cuda.is_available() is "
                               f"False; torch {torch.__version__}); use --platform cpu, or a machine with a GPU")


if not torch.cuda.is_available():
    raise _unavailable()


def device() -> torch.device:
    """This process's GPU: cuda:LOCAL_RANK (0 without torchrun)."""
    return torch.device("cuda", dist.local_rank())


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32") -> TorchRollout:
    return TorchRollout(model_dir, seed=seed, dtype=DTYPES[dtype], device=device(), platform=NAME)


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> TorchLearner:
    return TorchLearner(model_dir, cfg, plan_for(cfg, device()), platform=NAME)


__all__ = ["DIST_BACKEND", "NAME", "device", "make_learner", "make_rollout"]
