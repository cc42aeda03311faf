"""Grading throughput: the grader pool before and after its two changes of 2026-12-03, side by side in one process.

    python -m bench.grading             # about 2 minutes on 2 cores
    python -m bench.grading --help

The two changes (remix/rewards/pool.py and math_reward.py):
- a worker holds up to PIPELINE_ITEMS items (at most PIPELINE_BYTES of text) instead of one, so that it never
  waits for the parent's round trip between two items;
- a prediction's box is parsed once per distinct text (`_parse_boxed`, an LRU cache), as the references were.

The batches are the study's: 1,024 arith held-out problems (an evaluation) and 40 (a training step), with
synthetic responses in the shape tiny-arith writes ("... = \\boxed{N}", the right N for --correct of them, a
nearby wrong one for the rest), one grader worker as in the study. Each setting grades a fresh pool's first
batch (its caches cold), then a second batch of other responses to the same problems (warm, as every
evaluation after a run's first), then a step's batch of a third draw, --repeats times, interleaved; medians and
min-max. The box cache is keyed by a box's text: arith's answers are small integers that recur across responses,
so it hits often here; a task whose answers rarely repeat gains less from it. All settings must give the
same scores, equal to `verify_in_process` item for item. Writes OUT/grading.md and OUT/grading.json.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


from remix.rewards import math_reward
from remix.rewards import pool as grader_pool
from bench.reporting import machine_description, write_report


@dataclass
class GradingBenchConfig:
    repeats: int = 5
    """Timed repeats of every setting (interleaved)."""
    problems: int = 1024
    """Items of the evaluation batch (the study's held-out split)."""
    step_items: int = 40
    """Items of the training-step batch (the study's batch size)."""
    correct: float = 0.3
    """Fraction of responses with the right answer (the study's held-out accuracy is 0.23-0.35)."""
    out: Path = Path("docs/benchmarks")
    """Where grading.md and grading.json go."""


def uncached_verify(response: str, reference) -> float:
    """The grade without the prediction cache (the code before): every box is parsed again."""
    math_reward._parse_boxed.cache_clear()
    return math_reward.verify_in_process(response, reference)


# name -> (items a worker holds, the worker's grading function)
SETTINGS = {
    "before: one item per round trip, no box cache": (1, uncached_verify),
    "queue of 8 items, no box cache": (8, uncached_verify),
    "now: queue of 8 items and box cache": (8, None),
}


def responses(problems, correct: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for p in problems:
        answer = int(p.answer) if rng.random() < correct else int(p.answer) + rng.choice([-3, -2, -1, 1, 2, 10])
        out.append(f"{p.problem.strip().rstrip('?=').strip()} = \\boxed{{{answer}}}")
    return out


def time_setting(items: int, verify_fn, batches: list[tuple[list[str], list]]) -> tuple[list[float], list]:
    """Seconds for each batch, in order, graded by one fresh pool (one worker); and the scores."""
    grader_pool.PIPELINE_ITEMS = items  # read by the parent when it hands out items
    seconds, scores = [], []
    with grader_pool.GraderPool(1, 5.0, verify_fn=verify_fn) as pool:
        pool.grade(["\\boxed{0}"], [1])  # the worker is up (its start is not grading)
        for texts, refs in batches:
            start = time.perf_counter()
            report = pool.grade(texts, refs)
            seconds.append(time.perf_counter() - start)
            assert report.timeouts == report.errors == 0, "the benchmark's items must grade without incident"
            scores.append(report.scores)
    return seconds, scores


def main(cfg: GradingBenchConfig) -> None:
    from remix.data import load_task

    default_items = grader_pool.PIPELINE_ITEMS
    _, heldout, _ = load_task("arith", None, cfg.problems, (1, 2, 3))
    refs = [p.answer for p in heldout]
    first, second = responses(heldout, cfg.correct, 0), responses(heldout, cfg.correct, 1)
    step = responses(heldout[:cfg.step_items], cfg.correct, 2)  # a third draw: not texts graded already
    batches = {"evaluation, cold": (first, refs), "evaluation, warm": (second, refs),
               "training step, warm": (step, refs[:cfg.step_items])}
    # the scores every setting must give
    expected = [[math_reward.verify_in_process(t, r) for t, r in zip(texts, rs)] for texts, rs in batches.values()]
    times = {name: {b: [] for b in batches} for name in SETTINGS}
    for rep in range(cfg.repeats):
        for name, (items, fn) in SETTINGS.items():
            seconds, scores = time_setting(items, fn, list(batches.values()))
            if scores != expected:
                raise SystemExit(f"bench_grading: '{name}' graded differently from verify_in_process")
            for b, s in zip(batches, seconds):
                times[name][b].append(s)
        print(f"repeat {rep + 1}/{cfg.repeats} done", flush=True)
    grader_pool.PIPELINE_ITEMS = default_items

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1e3:.0f} ms [{min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f}]"

    before = next(iter(SETTINGS))
    lines = ["# Grading throughput: the grader pool before and after 2026-12-03", "",
             f"Measured {dt.date.today().isoformat()} on {machine_description()}.", "",
             f"Command: `python -m bench.grading{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`. "
             f"One grader worker; {cfg.problems} arith held-out problems (an evaluation of the study) and the first "
             f"{cfg.step_items} (a training step); synthetic tiny-arith-shaped responses, {cfg.correct:.0%} right. "
             "Cold: a fresh pool's first batch; warm: then a second batch of other responses to the same problems, "
             "and a step's batch of a third draw. The box cache is keyed by a box's text, and arith's answers (small "
             "integers) recur, so it hits often here; a task whose answers rarely repeat gains less. "
             f"Median [min-max] of {cfg.repeats} interleaved repeats. Every setting gave the same scores as "
             "`verify_in_process`, item for item.", "",
             "| setting | " + " | ".join(batches) + " |", "|---|" + "---|" * len(batches)]
    lines += [f"| {name} | " + " | ".join(cell(times[name][b]) for b in batches) + " |" for name in SETTINGS]
    ratios = {b: statistics.median(times[list(SETTINGS)[-1]][b]) / statistics.median(times[before][b])
              for b in batches}
    lines += ["", "Now against before (ratio of medians): "
              + ", ".join(f"{b} {r:.2f}x" for b, r in ratios.items()) + "."]
    data = {"date": dt.date.today().isoformat(), "machine": machine_description(), "config": {
        "repeats": cfg.repeats, "problems": cfg.problems, "step_items": cfg.step_items, "correct": cfg.correct},
        "seconds": times, "ratio_of_medians": ratios, "correct_items": [sum(e) for e in expected]}
    write_report(cfg.out, "grading", lines, data)


if __name__ == "__main__":
    main(tyro.cli(GradingBenchConfig, description=__doc__))
