"""The arithmetic of the rollout-efficiency study (bench/efficiency/study.py), as pure functions.

Curves are lists of (rollouts, accuracy) in increasing rollouts, one per run. Every reading is made by
linear interpolation between evaluations, so that two methods with different rollouts per step are
compared at the same rollout counts rather than at whichever evaluation each happened to have.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

Curve = Sequence[tuple[float, float]]


def interpolate(curve: Curve, rollouts: float) -> float | None:
    """Accuracy at `rollouts`, linear between the two evaluations around it; None past the last evaluation
    (a run is never extrapolated)."""
    if not curve or rollouts < curve[0][0] or rollouts > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= rollouts <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (rollouts - x0) / (x1 - x0)
    return curve[-1][1]  # a one-point curve


def on_grid(curve: Curve, grid: Sequence[float]) -> list[float | None]:
    return [interpolate(curve, x) for x in grid]


def crossing(curve: Curve, target: float) -> float | None:
    """Rollouts at which the interpolated curve first reaches `target`; None if it never does."""
    if not curve:
        return None
    if curve[0][1] >= target:
        return float(curve[0][0])
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if y1 >= target > y0:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return None


def cumulative_at(xs: Sequence[float], totals: Sequence[float], at: float | None) -> float | None:
    """A cumulative quantity (wall time, learner tokens), recorded at rollouts `xs`, read at rollouts `at` by
    linear interpolation: the cost of reaching a crossing."""
    if at is None:
        return None
    return interpolate(list(zip(xs, totals)), at)


def paired_ratios(baseline: Sequence[float | None], method: Sequence[float | None]) -> list[float]:
    """Per-seed ratio baseline / method of rollouts-to-target (> 1: the method needed fewer). A seed where only
    the method got there counts as inf, one where only the baseline did as 0 (both stay in the median);
    a seed where neither did carries no information and is left out."""
    out = []
    for b, m in zip(baseline, method, strict=True):
        if b is None and m is None:
            continue
        if m is None:
            out.append(0.0)
        elif b is None:
            out.append(math.inf)
        else:
            out.append(b / m if m > 0 else (1.0 if b == 0 else math.inf))
    return out


def bootstrap_interval(values: Sequence[float], stat: Callable[[Sequence[float]], float] = statistics.median,
                       resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values` (resampled with replacement, seeded)."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(stat([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    lo = stats[int(math.floor((1 - level) / 2 * resamples))]
    hi = stats[min(resamples - 1, int(math.ceil((1 + level) / 2 * resamples)) - 1)]
    return (lo, hi)


def median_interval(values: Sequence[float], **kw: Any) -> tuple[float, float, float]:
    """(median, low, high) with the bootstrap interval of the median."""
    if not values:
        return (math.nan, math.nan, math.nan)
    lo, hi = bootstrap_interval(values, **kw)
    return (statistics.median(values), lo, hi)


def mean_on_grid(curve: Curve, grid: Sequence[float]) -> float:
    """Mean accuracy over the grid points the run reached (the area under its curve, per point): how a learning
    rate is chosen on the validation split, favouring both early and late accuracy."""
    ys = [y for y in on_grid(curve, grid) if y is not None]
    return sum(ys) / len(ys) if ys else math.nan


def choose_best(scores: dict[float, Sequence[float]]) -> float:
    """The key (a learning rate) with the highest mean score over its seeds; ties go to the smaller key."""
    return max(sorted(scores), key=lambda k: statistics.fmean(scores[k]))


def config_differences(saved: dict[str, Any], wanted: dict[str, Any], ignore: set[str]) -> list[str]:
    """The flattened config keys on which a finished run's config.json differs from the config the study
    would run now ("key: saved -> wanted"), leaving out `ignore` (where a run was written, its provenance)."""
    from remix.run_dir import flatten_config  # the flattening that resuming a run compares configs with

    a, b = flatten_config(saved), flatten_config(wanted)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
            if k not in ignore and not any(k.startswith(p + ".") for p in ignore) and a.get(k) != b.get(k)]


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n problems (the held-out split's own sampling noise)."""
    return math.sqrt(p * (1 - p) / n)


def span_seconds(provenances: Sequence[dict[str, Any]], walls: Sequence[float]) -> float:
    """From the first run's start to the last run's end, from each run's provenance and wall time (which is its last
    invocation's: a resumed run ends at its last resume plus that; a study interrupted between sessions shows the
    gap)."""
    starts = [dt.datetime.fromisoformat(p["started"]).timestamp() for p in provenances]
    ends = [dt.datetime.fromisoformat((p.get("resumed") or [p["started"]])[-1]).timestamp() + w
            for p, w in zip(provenances, walls)]
    return max(ends) - min(starts)
