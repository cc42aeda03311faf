"""The ReMix objective against a hand-written float64 reference (ALGORITHM.md sections 1, 3, 4)."""

import math

import pytest
import torch

from remix.objective import (
    LossInputs,
    ObjectiveConfig,
    aggregate,
    kl_estimate,
    kl_lambda_schedule,
    remix_loss,
    value_loss,
)

B, T = 6, 9


def make_inputs(seed: int = 0, fresh: bool = False, dtype=torch.float32, spread: float = 0.3,
                engine_spread: float = 0.15) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    g_engine = torch.Generator().manual_seed(1000 + seed)  # its own stream: the other fields stay as they were
    behav = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    noise = lambda: torch.randn(B, T, generator=g, dtype=torch.float64) * spread  # noqa: E731
    prox = behav.clone() if fresh else behav + noise()
    logp = prox + noise()
    mask = torch.ones(B, T, dtype=torch.bool)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        mask[i, n:] = False
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).clone()
    return LossInputs(
        logp=logp.to(dtype).requires_grad_(True),
        behav_logp=behav.to(dtype),
        prox_logp=prox.to(dtype),
        ref_logp=(behav + noise()).to(dtype),
        prev_logp=(behav + noise()).to(dtype),
        advantages=adv.to(dtype),
        mask=mask,
        entropy=(torch.rand(B, T, generator=g, dtype=torch.float64) * 2).to(dtype),
        engine_logp=(behav + torch.randn(B, T, generator=g_engine, dtype=torch.float64) * engine_spread).to(dtype),
    )


def reference_weight(x: LossInputs, cfg: ObjectiveConfig, i: int, t: int) -> float:
    """The rollout correction's weight on token (i, t), from the definitions (ALGORITHM.md section 9)."""
    if cfg.rollout_correction == "none":
        return 1.0
    rho = [math.exp(float(x.behav_logp[i, u]) - float(x.engine_logp[i, u])) for u in range(T) if x.mask[i, u]]
    if cfg.rollout_correction == "token-tis":
        return min(math.exp(float(x.behav_logp[i, t]) - float(x.engine_logp[i, t])), cfg.tis_cap)
    if cfg.rollout_correction == "seq-mis":
        lo, hi = cfg.seq_mis_bounds
        return 1.0 if lo <= math.prod(rho) <= hi else 0.0
    lo, hi = cfg.geo_mis_bounds
    return 1.0 if lo <= math.prod(rho) ** (1 / len(rho)) <= hi else 0.0


def reference_loss(x: LossInputs, cfg: ObjectiveConfig, lam: float) -> torch.Tensor:
    """Element-by-element float64 transcription of the spec, written independently of the module."""
    logp = x.logp.double()
    total = torch.zeros((), dtype=torch.float64)
    eps_hi = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    per_seq_sum, per_seq_n, tok = [], [], []

    def kl(p, q):
        d = q - p  # log(q/p)
        if cfg.kl_estimator == "k1":
            return -d
        if cfg.kl_estimator == "k2":
            return 0.5 * d * d
        k3 = torch.clamp(torch.exp(d) - d - 1, -10, 10)
        if cfg.kl_estimator == "k3+":  # straight-through: k3's value, k2's gradient
            return 0.5 * d * d + (k3 - 0.5 * d * d).detach()
        return k3

    for i in range(B):
        s, n = torch.zeros((), dtype=torch.float64), 0
        for t in range(T):
            if not x.mask[i, t]:
                continue
            r = torch.exp(logp[i, t] - x.behav_logp[i, t].double())
            c = math.exp(float(x.prox_logp[i, t]) - float(x.behav_logp[i, t]))
            a = float(x.advantages[i, t])
            clipped = torch.clamp(r, c - cfg.clip_eps, c + eps_hi)
            pg = -torch.minimum(r * a, clipped * a) * reference_weight(x, cfg, i, t)
            klr = kl(logp[i, t], x.ref_logp[i, t].double())
            klp = kl(logp[i, t], x.prev_logp[i, t].double())
            ent = float(x.entropy[i, t]) if x.entropy is not None else 0.0
            loss_t = pg + cfg.kl_coef * (lam * klr + (1 - lam) * klp) - cfg.entropy_coef * ent
            s = s + loss_t
            n += 1
            tok.append(loss_t)
        per_seq_sum.append(s)
        per_seq_n.append(n)
    if cfg.loss_agg == "token-mean":
        total = sum(tok) / len(tok)
    elif cfg.loss_agg == "seq-mean-token-mean":
        total = sum(s / max(n, 1) for s, n in zip(per_seq_sum, per_seq_n)) / B
    else:
        total = sum(s / cfg.loss_agg_constant for s in per_seq_sum) / B
    return total


AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def assert_matches_float64_reference(cfg: ObjectiveConfig, seed: int):
    """remix_loss and its gradient on float64 inputs against the transcription of the formulas above."""
    x = make_inputs(seed, dtype=torch.float64)
    loss, metrics = remix_loss(x, cfg, kl_lambda=0.7)
    (grad,) = torch.autograd.grad(loss, x.logp)
    x_ref = make_inputs(seed, dtype=torch.float64)
    ref = reference_loss(x_ref, cfg, 0.7)
    (ref_grad,) = torch.autograd.grad(ref, x_ref.logp)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    return x, loss, grad, metrics


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "k3+"])
@pytest.mark.parametrize("agg", AGGS)
def test_loss_and_gradient_match_float64_reference(estimator, agg):
    cfg = ObjectiveConfig(kl_coef=0.05, kl_estimator=estimator, entropy_coef=0.01, loss_agg=agg,
                          clip_eps_high=0.28, loss_agg_constant=9.0 if agg == "seq-mean-token-sum-norm" else None)
    for seed in range(3):
        _, loss, _, _ = assert_matches_float64_reference(cfg, seed)
        # float32 inputs agree with the float64 reference to float32 precision
        x32 = make_inputs(seed, dtype=torch.float32)
        loss32, _ = remix_loss(x32, cfg, kl_lambda=0.7)
        torch.testing.assert_close(loss32.double(), loss.detach(), rtol=1e-5, atol=1e-6)


def test_loss_agg_constant_divides_token_sums():
    x = make_inputs(1, dtype=torch.float64)
    cfg = ObjectiveConfig(loss_agg="seq-mean-token-sum-norm", loss_agg_constant=4.0)
    loss, _ = remix_loss(x, cfg, 1.0)
    torch.testing.assert_close(loss, reference_loss(make_inputs(1, dtype=torch.float64), cfg, 1.0))


def test_dr_grpo_divides_by_a_constant_not_by_the_padded_width():
    """One long response widening the batch must not rescale the others' contributions: the training
    config fixes the divisor at the maximum response length, resolved where the loss is built (a config copied
    with another length gets that length's divisor)."""
    from dataclasses import replace

    from remix.config import RolloutConfig, TrainConfig

    train = TrainConfig(rollout=RolloutConfig(max_new_tokens=40),
                        objective=ObjectiveConfig(loss_agg="seq-mean-token-sum-norm"))
    assert train.loss_objective().loss_agg_constant == 40.0 and train.objective.loss_agg_constant is None
    assert replace(train, rollout=RolloutConfig(max_new_tokens=80)).loss_objective().loss_agg_constant == 80.0
    given = replace(train, objective=replace(train.objective, loss_agg_constant=7.0))
    assert replace(given, rollout=RolloutConfig(max_new_tokens=80)).loss_objective().loss_agg_constant == 7.0
    x = make_inputs(2, dtype=torch.float64)
    wider = LossInputs(**{k: (torch.nn.functional.pad(v, (0, 5)) if v is not None else None)
                          for k, v in vars(x).items()})  # the same sequences, padded 5 tokens wider
    loss, _ = remix_loss(x, train.loss_objective(), 1.0)
    torch.testing.assert_close(remix_loss(wider, train.loss_objective(), 1.0)[0], loss)
    with pytest.raises(ValueError, match="loss_agg_constant"):
        remix_loss(x, ObjectiveConfig(loss_agg="seq-mean-token-sum-norm"), 1.0)


def test_fresh_data_equals_ppo_clipped_surrogate():
    """With behav == prox the clip centre is 1 and the loss is PPO's clipped surrogate."""
    x = make_inputs(3, fresh=True, dtype=torch.float64)
    cfg = ObjectiveConfig(kl_coef=0.0)
    loss, metrics = remix_loss(x, cfg, 1.0)
    ratio = torch.exp(x.logp - x.behav_logp)
    ppo = -torch.minimum(ratio * x.advantages, torch.clamp(ratio, 0.8, 1.2) * x.advantages)
    expected = (ppo * x.mask).sum() / x.mask.sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["loss/policy"], expected.detach())


def test_clip_is_centred_on_proximal_ratio_for_old_samples():
    """An old sample whose ratio sits inside [c - eps, c + eps] keeps its gradient even when far from 1."""
    behav = torch.full((1, 2), -2.0, dtype=torch.float64)
    prox = behav + math.log(1.5)  # c = 1.5: pi_k already moved well away from the behaviour policy
    logp = (behav + torch.log(torch.tensor([[1.55, 1.8]], dtype=torch.float64))).requires_grad_(True)
    x = LossInputs(logp=logp, behav_logp=behav, prox_logp=prox, ref_logp=behav, prev_logp=behav,
                   advantages=torch.ones(1, 2, dtype=torch.float64), mask=torch.ones(1, 2, dtype=torch.bool))
    loss, metrics = remix_loss(x, ObjectiveConfig(kl_coef=0.0), 1.0)
    (grad,) = torch.autograd.grad(loss, logp)
    # token 0: r = 1.55 inside [1.3, 1.7] -> gradient -r/2; token 1: r = 1.8 > 1.7 with A > 0 -> clipped
    assert grad[0, 0].item() == pytest.approx(-1.55 / 2)
    assert grad[0, 1].item() == 0.0
    assert metrics["clip_frac/high"].item() == pytest.approx(0.5)
    assert metrics["clip_frac/low"].item() == 0.0
    # A PPO clip centred on 1 would have clipped both tokens.
    torch.testing.assert_close(loss, -(1.55 + 1.7) / 2 * torch.ones((), dtype=torch.float64))


def test_metrics_values():
    x = make_inputs(5, dtype=torch.float64)
    cfg = ObjectiveConfig(kl_coef=0.1)
    _, m = remix_loss(x, cfg, 0.5)
    n = x.mask.sum()
    ratio = torch.exp(x.logp.detach() - x.behav_logp)
    assert m["ratio/mean"].item() == pytest.approx(float((ratio * x.mask).sum() / n))
    d = x.ref_logp - x.logp.detach()
    assert m["kl/ref"].item() == pytest.approx(float(((torch.exp(d) - d - 1) * x.mask).sum() / n))
    for key in ["clip_frac/low", "clip_frac/high", "kl/prev", "kl/prox_approx", "entropy", "loss/policy"]:
        assert torch.isfinite(m[key]) and not m[key].requires_grad


def test_kl_lambda_mixes_reference_and_precedent():
    x = make_inputs(7, dtype=torch.float64)
    lo, _ = remix_loss(x, ObjectiveConfig(kl_coef=1.0), 0.0)
    hi, _ = remix_loss(x, ObjectiveConfig(kl_coef=1.0), 1.0)
    mid, _ = remix_loss(x, ObjectiveConfig(kl_coef=1.0), 0.25)
    torch.testing.assert_close(mid, 0.25 * hi + 0.75 * lo)
    with pytest.raises(ValueError, match="kl_lambda"):
        remix_loss(x, ObjectiveConfig(), 1.5)


@pytest.mark.parametrize("seed", range(3))
def test_kl_estimators_expected_value_and_gradient_on_a_categorical_distribution(seed):
    """Exact expectations over a 6-outcome categorical p_theta = softmax(theta) against q: E_{x~p}[est(x)]
    with p held fixed is the expected estimate, and its gradient the expected gradient of the estimate
    (the sample x does not depend on theta). k1, k3 and k3+ are unbiased for KL(p || q); their expected
    gradients are 0 (k1), grad KL(q || p) (k3) and grad KL(p || q) (k2 and k3+)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(True)
    logq = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    logp = torch.log_softmax(theta, -1)
    p = logp.exp()
    forward_kl = (p * (logp - logq)).sum()  # KL(p || q)
    reverse_kl = (logq.exp() * (logq - logp)).sum()  # KL(q || p)
    (grad_forward,) = torch.autograd.grad(forward_kl, theta, retain_graph=True)
    (grad_reverse,) = torch.autograd.grad(reverse_kl, theta, retain_graph=True)
    expected_grads = {"k1": torch.zeros(6, dtype=torch.float64), "k2": grad_forward, "k3": grad_reverse,
                      "k3+": grad_forward}
    for name, want in expected_grads.items():
        expected = (p.detach() * kl_estimate(logp, logq, name)).sum()
        (grad,) = torch.autograd.grad(expected, theta, retain_graph=True)
        torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-12, msg=name)
        if name != "k2":  # k2 is biased: its mean is only KL to second order
            torch.testing.assert_close(expected, forward_kl.detach(), rtol=1e-9, atol=1e-12, msg=name)
    assert not torch.allclose(grad_forward, grad_reverse)  # the two KLs really differ here


def test_k3_is_clamped_and_log_ratios_do_not_overflow():
    logp = torch.full((1, 3), -50.0, dtype=torch.float64, requires_grad=True)
    other = torch.tensor([[0.0, -50.0, -100.0]], dtype=torch.float64)
    x = LossInputs(logp=logp, behav_logp=other, prox_logp=other, ref_logp=other, prev_logp=other,
                   advantages=torch.ones(1, 3, dtype=torch.float64), mask=torch.ones(1, 3, dtype=torch.bool))
    loss, m = remix_loss(x, ObjectiveConfig(kl_coef=1.0), 1.0)
    assert torch.isfinite(loss)
    assert m["kl/ref"].item() <= 10.0


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batches_with_global_denominators_equal_the_whole_batch(agg):
    cfg = ObjectiveConfig(kl_coef=0.05, loss_agg=agg, entropy_coef=0.01, loss_agg_constant=9.0)
    x = make_inputs(11, dtype=torch.float64)
    whole, _ = remix_loss(x, cfg, 0.6)
    (g_whole,) = torch.autograd.grad(whole, x.logp)
    x2 = make_inputs(11, dtype=torch.float64)
    total_tokens, total_seqs = float(x2.mask.sum()), float(B)
    parts = []
    for idx in (slice(0, 2), slice(2, 3), slice(3, B)):
        micro = LossInputs(**{k: (v[idx] if v is not None else None) for k, v in vars(x2).items()})
        part, _ = remix_loss(micro, cfg, 0.6, global_tokens=total_tokens, global_seqs=total_seqs)
        parts.append(part)
    summed = sum(parts)
    (g_sum,) = torch.autograd.grad(summed, x2.logp)
    torch.testing.assert_close(summed, whole)
    torch.testing.assert_close(g_sum, g_whole)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_sequence_aggregations_are_means_of_equal_micro_batches(agg):
    """For the sequence-level modes the mean of equal-sized micro-batch losses is the batch loss by
    definition; for token-mean it is not (that needs the global token count above)."""
    cfg = ObjectiveConfig(loss_agg=agg, kl_coef=0.0, loss_agg_constant=9.0)
    x = make_inputs(13, dtype=torch.float64)
    whole, _ = remix_loss(x, cfg, 1.0)
    halves = [remix_loss(LossInputs(**{k: (v[s] if v is not None else None) for k, v in vars(x).items()}),
                         cfg, 1.0)[0] for s in (slice(0, 3), slice(3, 6))]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, whole)


def test_compiled_equals_eager():
    eager_cfg = ObjectiveConfig(kl_coef=0.05, entropy_coef=0.01, clip_eps_high=0.3)
    compiled_cfg = ObjectiveConfig(kl_coef=0.05, entropy_coef=0.01, clip_eps_high=0.3, compile=True)
    for seed, lam in [(0, 1.0), (1, 0.7)]:  # a new lambda must not need a recompile to be right
        xe, xc = make_inputs(seed), make_inputs(seed)
        le, me = remix_loss(xe, eager_cfg, lam)
        lc, mc = remix_loss(xc, compiled_cfg, lam)
        (ge,) = torch.autograd.grad(le, xe.logp)
        (gc,) = torch.autograd.grad(lc, xc.logp)
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gc, ge, rtol=1e-5, atol=1e-7)
        for k in me:
            torch.testing.assert_close(mc[k], me[k], rtol=1e-5, atol=1e-6)


def test_lambda_schedule_table():
    expected = {1: 1.0, 50: 1.0, 51: 0.9, 60: 0.9, 61: 0.8, 70: 0.8, 71: 0.7, 80: 0.7, 81: 0.6, 90: 0.6,
                91: 0.5, 100: 0.5, 500: 0.5}
    for step, lam in expected.items():
        assert kl_lambda_schedule(step) == pytest.approx(lam, abs=1e-12), step
    assert kl_lambda_schedule(15, start=10, every=5, decay=0.2, floor=0.3) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        kl_lambda_schedule(0)


def test_value_loss_clipping():
    v = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64)
    ret = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    loss, m = value_loss(v, old, ret, mask, clip_range=0.2)
    # token 0: unclipped err 0, clipped v = 0.7 -> err 0.09 -> 0.5 * 0.09; token 1: both 1 -> 0.5
    assert loss.item() == pytest.approx((0.045 + 0.5) / 2)
    assert m["clip_frac/value"].item() == pytest.approx(0.5)


def test_aggregate_handles_empty_sequences():
    vals = torch.ones(2, 3)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert aggregate(vals, mask, "token-mean").item() == 1.0
    assert aggregate(vals, mask, "seq-mean-token-mean").item() == 0.5


@pytest.mark.parametrize(
    "kwargs, field",
    [({"clip_eps": 0}, "--objective.clip-eps"), ({"kl_estimator": "k4"}, "--objective.kl-estimator"),
     ({"kl_coef": -1}, "--objective.kl-coef"), ({"loss_agg": "sum"}, "--objective.loss-agg"),
     ({"loss_agg_constant": 0}, "--objective.loss-agg-constant")],
)
def test_invalid_objective_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ObjectiveConfig(**kwargs)


CORRECTIONS = [dict(rollout_correction="token-tis", tis_cap=1.1),
               dict(rollout_correction="seq-mis", seq_mis_bounds=(0.7, 1.4)),
               dict(rollout_correction="geo-mis", geo_mis_bounds=(0.97, 1.03))]


@pytest.mark.parametrize("correction", CORRECTIONS, ids=lambda c: c["rollout_correction"])
@pytest.mark.parametrize("agg", AGGS)
def test_rollout_correction_matches_float64_reference(correction, agg):
    """Each mode's weight on the policy-gradient term only (detached), against the definitions; bounds chosen so
    that each mode truncates or drops some tokens or sequences of these inputs and keeps others."""
    from remix.objective import rollout_correction_weights

    cfg = ObjectiveConfig(kl_coef=0.05, entropy_coef=0.01, loss_agg=agg, clip_eps_high=0.28,
                          loss_agg_constant=9.0 if agg == "seq-mean-token-sum-norm" else None, **correction)
    acted = 0
    for seed in range(3):
        x, _, _, _ = assert_matches_float64_reference(cfg, seed)
        weight, cut = rollout_correction_weights(x.behav_logp, x.engine_logp, x.mask, cfg)
        acted += int(cut.any())
        assert not weight.requires_grad
    assert acted > 0  # not vacuous: the correction truncated or dropped something


@pytest.mark.parametrize("correction", CORRECTIONS, ids=lambda c: c["rollout_correction"])
def test_compiled_correction_equals_eager(correction):
    eager_cfg = ObjectiveConfig(kl_coef=0.05, entropy_coef=0.01, **correction)
    compiled_cfg = ObjectiveConfig(kl_coef=0.05, entropy_coef=0.01, compile=True, **correction)
    xe, xc = make_inputs(2), make_inputs(2)
    le, _ = remix_loss(xe, eager_cfg, 0.7)
    lc, _ = remix_loss(xc, compiled_cfg, 0.7)
    (ge,), (gc,) = torch.autograd.grad(le, xe.logp), torch.autograd.grad(lc, xc.logp)
    torch.testing.assert_close(lc, le, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gc, ge, rtol=1e-6, atol=1e-7)


def test_rollout_correction_needs_the_engine_logprobs_and_sane_bounds():
    from remix.validation import ConfigError

    x = make_inputs(0)
    x.engine_logp = None
    with pytest.raises(ValueError, match="needs LossInputs.engine_logp"):
        remix_loss(x, ObjectiveConfig(rollout_correction="token-tis"), 1.0)
    with pytest.raises(ConfigError, match="--objective.seq-mis-bounds: must be two numbers 0 < low < high"):
        ObjectiveConfig(seq_mis_bounds=(2.0, 0.5))
