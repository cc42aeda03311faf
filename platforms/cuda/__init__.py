"""The CUDA platform: the one PyTorch backend (platforms/backend) on this process's GPU, NCCL between processes.

One GPU per process: under torchrun, rank r of a node uses cuda:LOCAL_RANK (remix.distributed sets it before
the first collective). The learner is the backend's TorchLearner (FSDP2 over NCCL with several processes,
bf16 with --model.dtype bfloat16). The rollout (--rollout.engine) is SGLang's offline engine on the same GPU
(platforms/cuda/sglang_rollout.py, the `cuda` extra), or the backend's TorchRollout with a static KV cache and
a compiled decode step; `auto` takes SGLang where it can be imported and says so when it cannot.

What has been executed on a GPU, and what is verified without one, is in docs/platforms.md (scripts/gpu_check.py
is the check).
The SGLang path has not been: it is tested against a fake engine and checked against the pinned wheel's source.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from platforms.backend import TorchLearner, plan_for, torch_rollout
from remix import distributed as dist
from remix.config import LoRAConfig, RolloutConfig, TrainConfig
from remix.interfaces import Rollout

NAME = "cuda"
DIST_BACKEND = "nccl"


def check_available() -> None:
    """Called by platforms.get_platform: one line where no GPU is visible (the package itself imports anywhere,
    so that its CPU-testable parts, the SGLang rollout and the engine choice, are tested without a GPU)."""
    if not torch.cuda.is_available():
        from platforms import PlatformUnavailable

        raise PlatformUnavailable("--platform cuda: no CUDA device is visible here (torch.cuda.is_available() is "
                                  f"False; torch {torch.__version__}); use --platform cpu, or a machine with a GPU")


def device() -> torch.device:
    """This process's GPU: cuda:LOCAL_RANK (0 without torchrun)."""
    return torch.device("cuda", dist.local_rank())


def rollout_engine(requested: str, sglang_importable: bool | None = None) -> str:
    """'sglang' or 'torch' for --rollout.engine; auto falls back to torch with a one-line notice."""
    if sglang_importable is None:
        sglang_importable = importlib.util.find_spec("sglang") is not None
    if requested == "sglang" and not sglang_importable:
        from platforms import PlatformUnavailable

        raise PlatformUnavailable("--rollout.engine sglang: sglang is not installed; pip install 'remix-rft[cuda]' "
                                  "(sglang==0.5.20), or use --rollout.engine torch")
    if requested == "auto":
        if sglang_importable:
            return "sglang"
        if dist.is_main():
            print("rollout engine: sglang is not installed, using the torch engine (static KV cache, compiled "
                  "decode); pip install 'remix-rft[cuda]' for SGLang", flush=True)
        return "torch"
    return requested


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32",
                 options: RolloutConfig | None = None, prompt_tokens: int | None = None,
                 lora: LoRAConfig | None = None) -> Rollout:
    """`lora`: with --lora.sync adapter, SGLang receives the LoRA adapter instead of merged weights."""
    options = options or RolloutConfig()
    if rollout_engine(options.engine) == "sglang":
        from platforms.cuda.sglang_rollout import SGLangRollout

        adapter = (lora.rank, lora.target_modules) if lora is not None and lora.sync == "adapter" else None
        return SGLangRollout(model_dir, seed=seed, dtype=dtype, gpu=dist.local_rank(),
                             mem_fraction=options.sglang_mem_fraction, bucket_mb=options.weight_sync_bucket_mb,
                             deterministic=options.sglang_deterministic, lora_adapter=adapter)
    return torch_rollout(model_dir, device(), NAME, seed, dtype, options, prompt_tokens=prompt_tokens)


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> TorchLearner:
    return TorchLearner(model_dir, cfg, plan_for(cfg, device()), platform=NAME)


__all__ = ["DIST_BACKEND", "NAME", "check_available", "device", "make_learner", "make_rollout", "rollout_engine"]
