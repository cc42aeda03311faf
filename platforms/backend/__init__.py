"""The one PyTorch backend that every platform configures.

    platforms/backend/   logprobs.py  chunked float32 log-probs, the critic's value head
                         parallel.py  ParallelPlan: device, compute dtype, FSDP2 sharding, activation checkpointing
                         learner.py   TorchLearner: policy/reference/precedent, AdamW, critic, updates, checkpoints
                         rollout.py   TorchRollout: a transformers decode loop with engine log-probs
    platforms/cpu/       the backend on the CPU (gloo between processes): the reference, used by the tests
    platforms/cuda/      the backend on CUDA (static-cache compiled decode), plus an SGLang rollout
    platforms/xla/       the backend on an XLA device (fixed shapes, graph cuts, SPMD)

A platform package chooses the device, the collective backend and, where it has one, its own rollout
engine; it never holds a second copy of the log-prob, loss, critic, reference/precedent or checkpoint code.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from platforms.backend.learner import TorchLearner
from platforms.backend.parallel import DTYPES, ParallelPlan
from platforms.backend.rollout import DecodePlan, TorchRollout
from remix import distributed as dist
from remix.config import RolloutConfig, TrainConfig


def plan_for(cfg: TrainConfig, device: torch.device) -> ParallelPlan:
    """The learner's plan from the config and the job: FSDP2 whenever torchrun started several processes."""
    return ParallelPlan(device=device, compute_dtype=DTYPES[cfg.model.dtype], sharded=dist.world_size() > 1,
                        activation_checkpointing=cfg.model.activation_checkpointing)


def decode_plan_for(options: RolloutConfig, device: torch.device, mark_step=None,
                    prompt_tokens: int | None = None, shard_rows=None) -> DecodePlan:
    """The torch engine's decode layout: --rollout.kv-cache, where auto means static on an accelerator and
    dynamic on the CPU. The static step is compiled: on CUDA with CUDA graphs, on XLA with the openxla backend.
    Off the CPU the device is asked whether every row has finished only every 8 tokens (one sync per token
    would stall the GPU's queue). `prompt_tokens` (the run's longest prompt, the runner measures it) fixes the
    static cache's length for the run: its prompt bucket plus --rollout.max-new-tokens."""
    static = options.kv_cache == "static" or (options.kv_cache == "auto" and device.type != "cpu")
    if not static:
        return DecodePlan()
    # Compiled on CUDA (inductor, CUDA graphs) and on XLA (dynamo's openxla backend: the step's graph is captured
    # once per bucket, instead of the host tracing every layer's ops again at every token; bench.xla measured 49.5
    # against 16.0 ms per token at 28 layers on XLA-CPU, the same tokens).
    plan = DecodePlan(static_cache=True, compile=device.type in ("cuda", "xla"),
                      compile_backend="openxla" if device.type == "xla" else "inductor",
                      sync_every=1 if device.type == "cpu" else 8, mark_step=mark_step, shard_rows=shard_rows)
    if prompt_tokens:
        bucket = -(-prompt_tokens // plan.prompt_multiple) * plan.prompt_multiple
        plan = replace(plan, cache_tokens=bucket + options.max_new_tokens)
    return plan


def torch_rollout(model_dir, device: torch.device, platform: str, seed: int, dtype: str,
                  options: RolloutConfig | None, mark_step=None, prompt_tokens: int | None = None,
                  shard_rows=None) -> TorchRollout:
    """The backend's rollout as a platform configures it."""
    plan = decode_plan_for(options or RolloutConfig(), device, mark_step, prompt_tokens, shard_rows)
    return TorchRollout(model_dir, seed=seed, dtype=DTYPES[dtype], device=device, platform=platform, decode=plan)


__all__ = ["DTYPES", "DecodePlan", "ParallelPlan", "TorchLearner", "TorchRollout", "decode_plan_for", "plan_for",
           "torch_rollout"]
