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

    def grade(self, responses, references, timeout_s=None) -> GradeReport:
        return GradeReport(scores=[float(hashlib.sha1(r.encode()).digest()[0] % 2) for r in responses])


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
