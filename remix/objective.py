"""The ReMix objective as pure tensor functions (ALGORITHM.md sections 1, 3 and 4).

Public API (tests and outside checks call these; keep names and fields stable):

- `LossInputs`: the typed record of [B, T] tensors the loss reads.
- `ObjectiveConfig`: clip, KL, entropy and aggregation settings.
- `remix_loss(inputs, cfg, kl_lambda) -> (loss, metrics)`.
- `value_loss(...)`: PPO's clipped value loss, aggregated the same way.
- `kl_lambda_schedule(step, ...)`: lam(t) of the KL-Convex constraint.

Per token, with r = exp(logp - behav) and the clip centre c = exp(prox - behav):

    L_pg = -min(r * A, clip(r, c - eps_low, c + eps_high) * A)
    L_kl = kl_coef * (lam * KL(theta || ref) + (1 - lam) * KL(theta || prev))
    loss = agg(L_pg + L_kl - entropy_coef * entropy)

The per-token part is `torch.compile`d when `cfg.compile` is true; aggregation is done once, over
explicit denominators, so a mini-batch split into micro-batches gives the same loss and gradient
(pass `global_tokens` / `global_seqs` of the whole mini-batch to every micro-batch call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

from remix.validation import Checked, Limit, require

KLEstimator = Literal["k1", "k2", "k3", "k3+"]
RolloutCorrection = Literal["none", "token-tis", "seq-mis", "geo-mis"]
LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]

LOG_RATIO_CLAMP = 20.0  # log-ratios are clamped before exp (ALGORITHM.md section 1)
K3_CLAMP = 10.0  # the k3 estimate is clamped to [-10, 10] (as in the spec and verl's low_var_kl)


@dataclass(frozen=True)
class ObjectiveConfig(Checked):
    """Settings of the ReMix loss. Every field is also a CLI flag under `--objective.`."""

    FLAG_PREFIX = "objective."

    clip_eps: Annotated[float, Limit(gt=0)] = 0.2
    """Clip range eps of the surrogate (lower side, and upper side unless clip_eps_high is set)."""
    clip_eps_high: Annotated[float | None, Limit(gt=0)] = None
    """Upper clip range (asymmetric clipping, as in DAPO); None means clip_eps."""
    kl_coef: Annotated[float, Limit(ge=0)] = 1e-3
    """beta: weight of the KL-Convex term; 0 disables it."""
    kl_estimator: KLEstimator = "k3"
    """Per-token estimate of KL(theta || q), q the reference or the precedent: k1, k2, k3 (the default) or k3+.
    As a loss its gradient is not the KL's: in expectation 0 (k1), KL(theta || q)'s (k2, k3+), KL(q || theta)'s (k3).
    See kl_estimate in remix/objective.py for the formulas, and why historical samples are not reweighted."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (the loss subtracts entropy_coef * entropy)."""
    loss_agg: LossAgg = "token-mean"
    """How per-token losses become one number: over all tokens of the mini-batch (token-mean),
    mean of per-sequence token means (seq-mean-token-mean),
    or per-sequence token sums divided by loss_agg_constant (seq-mean-token-sum-norm, Dr. GRPO)."""
    loss_agg_constant: Annotated[float | None, Limit(gt=0)] = None
    """Divisor of seq-mean-token-sum-norm: a constant, as Dr. GRPO defines it (never the padded batch width).
    None: the maximum response length, --rollout.max-new-tokens."""
    compile: bool = False
    """torch.compile the per-token loss (the training config turns it on; --objective.no-compile: eager)."""
    rollout_correction: RolloutCorrection = "none"
    """Correct the policy-gradient term for the rollout engine's own numbers.
    rho = exp(behaviour log-prob - engine log-prob) of each sampled token: the learner's over the sampler's probability.
    token-tis multiplies each token's term by min(rho, tis_cap);
    seq-mis drops the term of a sequence whose product of rho is outside seq_mis_bounds;
    geo-mis drops it where the per-token geometric mean of rho is outside geo_mis_bounds.
    The weight is detached and leaves the KL and entropy terms alone; none: no correction (ALGORITHM.md 9)."""
    tis_cap: Annotated[float, Limit(gt=0)] = 2.0
    """token-tis: the largest weight a token gets (verl's default threshold)."""
    seq_mis_bounds: tuple[float, float] = (0.5, 2.0)
    """seq-mis: the range of the sequence's rho kept (verl's Seq-MIS preset)."""
    geo_mis_bounds: tuple[float, float] = (0.999, 1.001)
    """geo-mis: the range of the per-token geometric mean of rho kept (verl's Geo-RS preset)."""

    def check(self) -> None:  # the parser checks the Literals on the command line; Python callers are not
        (seq_lo, seq_hi), (geo_lo, geo_hi) = self.seq_mis_bounds, self.geo_mis_bounds
        require(0 < seq_lo < seq_hi, "objective.seq_mis_bounds",
                f"must be two numbers 0 < low < high, got {seq_lo:g} {seq_hi:g}")
        require(0 < geo_lo < geo_hi, "objective.geo_mis_bounds",
                f"must be two numbers 0 < low < high, got {geo_lo:g} {geo_hi:g}")
        require(self.rollout_correction in ("none", "token-tis", "seq-mis", "geo-mis"), "objective.rollout_correction",
                f"unknown mode {self.rollout_correction!r}")
        require(self.kl_estimator in ("k1", "k2", "k3", "k3+"), "objective.kl_estimator",
                f"must be k1, k2, k3 or k3+, got {self.kl_estimator!r}")
        require(self.loss_agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"),
                "objective.loss_agg", f"unknown mode {self.loss_agg!r}")


@dataclass
class LossInputs:
    """[B, T] tensors over response tokens. Only `logp` carries gradient."""

    logp: Tensor
    """log pi_theta(token), differentiable."""
    behav_logp: Tensor
    """log-prob under the policy that generated the sample (learner's numbers, stored with it)."""
    prox_logp: Tensor
    """log-prob under pi_k, the weights at the start of this step (the clip centre)."""
    ref_logp: Tensor
    """log-prob under the KL reference pi_ref."""
    prev_logp: Tensor
    """log-prob under the precedent policy pi_{k-1}."""
    advantages: Tensor
    """per-token advantages (GRPO: the sequence's advantage broadcast over its tokens)."""
    mask: Tensor
    """bool, True on real response tokens."""
    engine_logp: Tensor | None = None
    """log-prob of each token under the rollout engine that sampled it (needed by --objective.rollout-correction)."""
    entropy: Tensor | None = None
    """per-token entropy of pi_theta; needed when entropy_coef > 0."""


def kl_estimate(logp: Tensor, other_logp: Tensor, estimator: KLEstimator) -> Tensor:
    """Per-token estimate of KL(theta || q) from samples x, given log-probs of the sampled tokens.

    k1 = log(p/q), k2 = log(p/q)^2 / 2, k3 = q/p - log(q/p) - 1 (clamped to [-10, 10]), k3+ = k3's value
    with k2's gradient (straight-through). Used as a loss, it is the estimate that is differentiated, not
    the KL, and for x drawn from theta the expected gradients are: k1 -> 0 (no pull towards q at all),
    k2 and k3+ -> grad KL(theta || q), k3 -> grad KL(q || theta) (the reverse KL; the paper's and verl's
    default, kept here). On historical samples, drawn from an older policy, no estimator is importance-
    weighted, so each is an estimate under that policy's distribution. Checked exactly on a categorical
    distribution in tests/unit/test_objective.py.
    """
    log_ratio = (other_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # log(q/p)
    if estimator == "k1":
        return -log_ratio
    k2 = 0.5 * log_ratio.square()
    if estimator == "k2":
        return k2
    k3 = (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-K3_CLAMP, K3_CLAMP)
    if estimator == "k3+":
        return k2 + (k3 - k2).detach()  # the value of k3, the gradient of k2
    return k3


def rollout_correction_weights(behav_logp: Tensor, engine_logp: Tensor, mask: Tensor, cfg: ObjectiveConfig
                               ) -> tuple[Tensor, Tensor]:
    """(weight [B, T], cut [B, T]) of --objective.rollout-correction, detached: the factor on each token's
    policy-gradient term (0 on padding), and where the correction acted (a token truncated by token-tis, every
    token of a sequence dropped by seq-mis or geo-mis). rho = exp(behav_logp - engine_logp) per token."""
    with torch.no_grad():
        maskf = mask.to(behav_logp.dtype)
        log_rho = (behav_logp - engine_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) * maskf
        if cfg.rollout_correction == "none":
            return maskf, torch.zeros_like(mask, dtype=torch.bool)
        if cfg.rollout_correction == "token-tis":
            rho = torch.exp(log_rho)
            cut = (rho > cfg.tis_cap) & mask
            return torch.clamp(rho, max=cfg.tis_cap) * maskf, cut
        per_seq = log_rho.sum(-1)
        if cfg.rollout_correction == "geo-mis":
            per_seq = per_seq / maskf.sum(-1).clamp(min=1.0)
            lo, hi = cfg.geo_mis_bounds
        else:
            lo, hi = cfg.seq_mis_bounds
        keep = (per_seq >= math.log(lo)) & (per_seq <= math.log(hi))
        return keep[:, None].to(maskf.dtype) * maskf, (~keep)[:, None] & mask


def _token_terms(
    logp: Tensor,
    behav_logp: Tensor,
    prox_logp: Tensor,
    ref_logp: Tensor,
    prev_logp: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    pg_weight: Tensor,
    kl_lambda: Tensor,
    clip_low: float,
    clip_high: float,
    kl_coef: float,
    kl_estimator: KLEstimator,
    entropy_coef: float,
) -> tuple[Tensor, ...]:
    """Per-token loss and the per-token quantities the metrics need. Compiled when enabled."""
    ratio = torch.exp((logp - behav_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    centre = torch.exp((prox_logp - behav_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    lower, upper = centre - clip_low, centre + clip_high
    clipped = torch.minimum(torch.maximum(ratio, lower), upper)
    pg = torch.maximum(-ratio * advantages, -clipped * advantages) * pg_weight  # rollout correction (detached)
    kl_ref = kl_estimate(logp, ref_logp, kl_estimator)
    kl_prev = kl_estimate(logp, prev_logp, kl_estimator)
    loss = pg + kl_coef * (kl_lambda * kl_ref + (1.0 - kl_lambda) * kl_prev) - entropy_coef * entropy
    # The clip is active (zero gradient) where the clipped term wins.
    clip_high_hit = (ratio > upper) & (advantages > 0)
    clip_low_hit = (ratio < lower) & (advantages < 0)
    return loss, pg, kl_ref, kl_prev, ratio, clip_low_hit, clip_high_hit


_compiled_token_terms = None


def _get_token_terms(compile: bool):
    global _compiled_token_terms
    if not compile:
        return _token_terms
    if _compiled_token_terms is None:
        _compiled_token_terms = torch.compile(_token_terms, dynamic=True)
    return _compiled_token_terms


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: LossAgg,
    constant: float | None = None,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
) -> Tensor:
    """Reduces [B, T] per-token values to a scalar with `mode` over the tokens where `mask` is true.

    `global_tokens` / `global_seqs` replace this batch's token / sequence counts as denominators, so
    that summing the results over the micro-batches of a mini-batch equals the mini-batch result.
    Sequences with no valid token count as sequences (their contribution is zero).
    """
    maskf = mask.to(values.dtype)
    masked = values * maskf
    if mode == "token-mean":
        denom = maskf.sum().clamp(min=1.0) if global_tokens is None else max(float(global_tokens), 1.0)
        return masked.sum() / denom
    seqs = values.shape[0] if global_seqs is None else global_seqs
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(-1) / maskf.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(seqs, 1)
    if mode == "seq-mean-token-sum-norm":
        if constant is None:
            raise ValueError("seq-mean-token-sum-norm divides by a constant: set objective.loss_agg_constant "
                             "(the training config uses --rollout.max-new-tokens)")
        return (masked.sum(-1) / constant).sum() / max(seqs, 1)
    raise ValueError(f"unknown loss_agg mode {mode!r}")


def remix_loss(
    inputs: LossInputs,
    cfg: ObjectiveConfig,
    kl_lambda: float,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The ReMix policy loss and detached metrics. See the module docstring for the formula."""
    if not 0.0 <= kl_lambda <= 1.0:
        raise ValueError(f"kl_lambda must lie in [0, 1], got {kl_lambda}")
    mask = inputs.mask.bool()
    logp = inputs.logp
    entropy = inputs.entropy
    if cfg.entropy_coef != 0.0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs LossInputs.entropy")
    if entropy is None:
        entropy = torch.zeros_like(logp)
    lam = torch.tensor(kl_lambda, dtype=logp.dtype, device=logp.device)  # a tensor: no recompiles
    if cfg.rollout_correction == "none":
        pg_weight = torch.ones_like(logp, requires_grad=False)
    elif inputs.engine_logp is None:
        raise ValueError(f"--objective.rollout-correction {cfg.rollout_correction} needs LossInputs.engine_logp")
    else:
        pg_weight, _ = rollout_correction_weights(inputs.behav_logp.to(logp.dtype), inputs.engine_logp.to(logp.dtype),
                                                  mask, cfg)
    clip_high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    terms = _get_token_terms(cfg.compile)(
        logp,
        inputs.behav_logp.to(logp.dtype),
        inputs.prox_logp.to(logp.dtype),
        inputs.ref_logp.to(logp.dtype),
        inputs.prev_logp.to(logp.dtype),
        inputs.advantages.to(logp.dtype),
        entropy.to(logp.dtype),
        pg_weight,
        lam,
        cfg.clip_eps,
        clip_high,
        cfg.kl_coef,
        cfg.kl_estimator,
        cfg.entropy_coef,
    )
    token_loss, pg, kl_ref, kl_prev, ratio, clip_low_hit, clip_high_hit = terms

    def agg(x: Tensor) -> Tensor:
        return aggregate(x, mask, cfg.loss_agg, cfg.loss_agg_constant, global_tokens, global_seqs)

    loss = agg(token_loss)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)

        def token_mean(x: Tensor) -> Tensor:
            return (x.float() * mask).sum() / n

        log_prox_ratio = (inputs.prox_logp - logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        metrics = {
            "loss/policy": agg(pg).detach(),
            "clip_frac/low": token_mean(clip_low_hit),
            "clip_frac/high": token_mean(clip_high_hit),
            "ratio/mean": token_mean(ratio.detach()),
            "kl/ref": token_mean(kl_ref.detach()),
            "kl/prev": token_mean(kl_prev.detach()),
            # k3 estimate of KL(theta || pi_k): how far this step's updates have moved the policy.
            "kl/prox_approx": token_mean(torch.exp(log_prox_ratio) - log_prox_ratio - 1.0),
            "entropy": token_mean(entropy.detach()),
        }
    return loss, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range: float = 0.2,
    loss_agg: LossAgg = "token-mean",
    loss_agg_constant: float | None = None,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), aggregated like the policy loss."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    unclipped_err = (values - returns).square()
    clipped_err = (clipped - returns).square()
    per_token = 0.5 * torch.maximum(unclipped_err, clipped_err)
    loss = aggregate(per_token, mask.bool(), loss_agg, loss_agg_constant, global_tokens, global_seqs)
    with torch.no_grad():
        maskf = mask.float()
        frac = ((clipped_err > unclipped_err).float() * maskf).sum() / maskf.sum().clamp(min=1)
    return loss, {"loss/value": loss.detach(), "clip_frac/value": frac}


def kl_lambda_schedule(
    step: int, start: int = 50, every: int = 10, decay: float = 0.1, floor: float = 0.5
) -> float:
    """lam(t) = max(1 - decay * ceil(max(t - start, 0) / every), floor), t the 1-based global step.

    With the defaults: 1.0 through step 50, 0.9 for 51-60, 0.8 for 61-70, ..., 0.5 from step 91.
    """
    if step < 1:
        raise ValueError(f"step is 1-based, got {step}")
    decrements = math.ceil(max(step - start, 0) / every)
    return round(max(1.0 - decay * decrements, floor), 12)
