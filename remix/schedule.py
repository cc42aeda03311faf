"""The knobs the ReMix loop actually uses at a step, from the config: the off-policy fraction p and the update-to-data
ratio m (both switch to on-policy values at reincarnation), the reincarnation step T, lambda(t) of KL-Convex, and
whether the precedent policy pi_{k-1} is kept at all (ALGORITHM.md sections 3, 5 and 6). `--variant onpolicy` is the
same loop with p = 0, m = 1, no reincarnation and lambda = 1."""

from __future__ import annotations

from remix.config import TrainConfig
from remix.objective import kl_lambda_schedule


def offpolicy_fraction(cfg: TrainConfig, reincarnated: bool) -> float:
    """p: the share of a batch drawn from the buffer."""
    return 0.0 if cfg.variant == "onpolicy" or reincarnated else cfg.remix.offpolicy_fraction


def utd_ratio(cfg: TrainConfig, reincarnated: bool) -> int:
    """m: passes of mini-batch updates over each batch."""
    return 1 if cfg.variant == "onpolicy" or reincarnated else cfg.remix.utd_ratio


def reincarnation_step(cfg: TrainConfig) -> int | None:
    """T: the step after which the reference becomes the current policy (None: never)."""
    return None if cfg.variant == "onpolicy" else cfg.remix.reincarnation_step


def keeps_precedent(variant: str, kl_convex: bool, kl_coef: float) -> bool:
    """Whether KL(theta || pi_{k-1}) can ever get weight: only ReMix with KL-Convex and beta > 0 (also read off a
    saved config.json)."""
    return variant == "remix" and kl_convex and kl_coef > 0


def uses_precedent(cfg: TrainConfig) -> bool:
    """Whether the learner keeps the precedent policy pi_{k-1} (a full weight copy): `keeps_precedent` of cfg."""
    return keeps_precedent(cfg.variant, cfg.remix.kl_convex, cfg.objective.kl_coef)


def kl_lambda(cfg: TrainConfig, step: int, reincarnated_at: int | None) -> float:
    """lambda(t) of the KL-Convex term at the 1-based global step (its clock restarts at reincarnation only with
    --remix.restart-lambda-clock)."""
    if cfg.variant == "onpolicy" or not cfg.remix.kl_convex:
        return 1.0
    t = step - reincarnated_at if (reincarnated_at is not None and cfg.remix.restart_lambda_clock) else step
    r = cfg.remix
    return kl_lambda_schedule(max(t, 1), r.lambda_start, r.lambda_every, r.lambda_decay, r.lambda_floor)
