"""Greedy evaluation on the CPU: the dynamic decode layout before and after its two changes of 2026-12-03,
side by side in one process, and a check that the finished study runs' accuracies are what it computes now.

    python -m bench.greedy_eval             # about 5 minutes on 2 cores (1 thread, as the study's runs)
    python -m bench.greedy_eval --help

The two changes (platforms/backend/rollout.py, DecodePlan):
- rows that finished leave the batch and its KV cache once an eighth of the batch has finished;
- a batch takes more than max_batch (64) rows, up to 512, while its whole KV cache fits in 256 MiB (a small
  model such as tiny-arith), and Trainer.evaluate hands the engine 1024 prompts at a time instead of 128.

1. Timing: the study's evaluation (1024 held-out + 256 validation arith problems, 40 new tokens, greedy)
   with `--model`, each layout `--repeats` times, interleaved; medians and min-max. Both layouts must give
   the same tokens; the largest log-prob difference is reported.
2. Check: every finished run under `--runs-dir` (the efficiency study's) is evaluated again from its saved
   final model with the current code; its held-out accuracy must equal the one its summary.json recorded
   (which the old layout computed). Skipped where there are no runs.
Writes OUT/greedy_eval.md and OUT/greedy_eval.json.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


from bench.efficiency.study import study_train_config

from bench.reporting import machine_description, write_report
from remix.trainer import EVAL_PROMPTS_PER_CALL

STUDY = study_train_config()  # the study's data, response length and grading: evaluated here as there

BEFORE = "before: 64 rows, no compaction"
AFTER = "after: wide batches, compaction"


@dataclass
class GreedyEvalConfig:
    model: str = "tiny-arith"
    """The model to time (a built-in name or a local folder)."""
    repeats: int = 5
    """Timed evaluations per layout (after one warm-up each), interleaved."""
    threads: int = 1
    """torch threads (the efficiency study runs two runs at a time with one thread each)."""
    runs_dir: Path = Path("runs/bench-efficiency")
    """Finished runs whose recorded held-out accuracy is checked against the current code (none: skipped)."""
    max_runs: int | None = None
    """Check at most this many of them (None: all)."""
    out: Path = Path("docs/benchmarks")
    """Where greedy_eval.md and greedy_eval.json go."""


def study_problems(tokenizer) -> tuple[list, list]:
    """The efficiency study's held-out and validation problems, encoded as its runs encode them."""
    from remix.data import load_task
    from remix.runner import encode_problems

    d = STUDY.data
    _, heldout, validation = load_task(d.task, d.path, d.heldout_size, d.arith_levels, d.validation_size)
    return (encode_problems(tokenizer, heldout, d.max_prompt_tokens, "held-out set"),
            encode_problems(tokenizer, validation, d.max_prompt_tokens, "validation set"))


def greedy(rollout, problems, chunk: int) -> list:
    """Greedy generations for `problems`, handed to the engine `chunk` prompts at a time (as Trainer.evaluate)."""
    from remix.interfaces import SamplingParams

    params = SamplingParams(temperature=0.0, max_new_tokens=STUDY.rollout.max_new_tokens, n=1)
    out = []
    for s in range(0, len(problems), chunk):
        out += [g[0] for g in rollout.generate([e.prompt_ids for e in problems[s:s + chunk]], params)]
    return out


def layouts(model_dir):
    from platforms.backend.rollout import DecodePlan, TorchRollout

    return {BEFORE: (TorchRollout(model_dir, decode=DecodePlan(compact_finished=False, wide_batch_kv_bytes=0)), 128),
            AFTER: (TorchRollout(model_dir), EVAL_PROMPTS_PER_CALL)}


def time_layouts(cfg: GreedyEvalConfig) -> dict:
    from remix.models import resolve_model

    model_dir = resolve_model(cfg.model)
    engines = layouts(model_dir)
    heldout, validation = study_problems(engines[AFTER][0].tokenizer)
    problems = heldout + validation
    outputs, times = {}, {name: [] for name in engines}
    for name, (rollout, chunk) in engines.items():
        outputs[name] = greedy(rollout, problems, chunk)  # warm-up
    for _ in range(cfg.repeats):
        for name, (rollout, chunk) in engines.items():
            t0 = time.perf_counter()
            greedy(rollout, problems, chunk)
            times[name].append(time.perf_counter() - t0)
    a, b = outputs[BEFORE], outputs[AFTER]
    same = sum(x.token_ids == y.token_ids for x, y in zip(a, b))
    diff = max((abs(p - q) for x, y in zip(a, b) for p, q in zip(x.logprobs, y.logprobs)), default=0.0)
    return {"model": str(cfg.model), "problems": len(problems), "times": times, "same_tokens": same,
            "max_logprob_diff": diff, "mean_response_tokens": statistics.mean(len(x.token_ids) for x in b)}


def check_runs(cfg: GreedyEvalConfig) -> dict | None:
    """Each finished run's held-out accuracy, evaluated again from its final model, against its summary."""
    from platforms.backend.rollout import TorchRollout
    from remix.rewards import GraderPool

    runs = sorted(p.parent for p in cfg.runs_dir.glob("*/summary.json") if (p.parent / "model").is_dir())
    runs = runs[:cfg.max_runs] if cfg.max_runs is not None else runs
    if not runs:
        return None
    rows = []
    with GraderPool(1, STUDY.grader_timeout_s, rule=STUDY.grading) as grader:
        heldout = None
        for run_dir in runs:
            rollout = TorchRollout(run_dir / "model")
            heldout = heldout or study_problems(rollout.tokenizer)[0]
            texts = [rollout.tokenizer.decode(g.token_ids, skip_special_tokens=True)
                     for g in greedy(rollout, heldout, EVAL_PROMPTS_PER_CALL)]
            report = grader.grade(texts, [e.problem.answer for e in heldout])
            recorded = json.loads((run_dir / "summary.json").read_text())["heldout_accuracy_after"]
            rows.append({"run": run_dir.name, "recorded": recorded, "now": sum(report.scores) / len(heldout)})
            print(f"  {run_dir.name}: recorded {recorded:.4f}, now {rows[-1]['now']:.4f}", flush=True)
    return {"runs_dir": str(cfg.runs_dir), "runs": rows, "equal": sum(r["recorded"] == r["now"] for r in rows)}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def report(cfg: GreedyEvalConfig, timing: dict, check: dict | None) -> list[str]:
    t = timing["times"]
    ratio = statistics.median(t[AFTER]) / statistics.median(t[BEFORE])
    lines = ["# Greedy evaluation on the CPU: the dynamic decode layout before and after", "",
             f"Measured {dt.date.today().isoformat()} on {machine_description()}, {cfg.threads} torch thread(s).", "",
             f"Command: `python -m bench.greedy_eval{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
             "", f"The efficiency study's evaluation: {timing['problems']} {STUDY.data.task} problems "
             f"({STUDY.data.heldout_size} held-out + {STUDY.data.validation_size} validation), greedy, at most "
             f"{STUDY.rollout.max_new_tokens} new tokens, model {timing['model']} (its responses: "
             f"{timing['mean_response_tokens']:.1f} tokens on average). {cfg.repeats} timed evaluations per layout, "
             "interleaved, after one warm-up each; median [min-max].", "",
             "| layout | time per evaluation |", "|---|---|"]
    lines += [f"| {name} | {spread(v)} |" for name, v in t.items()]
    lines += ["", f"After / before: {ratio:.2f}x the time. The same tokens for {timing['same_tokens']} of "
              f"{timing['problems']} problems; largest log-prob difference {timing['max_logprob_diff']:.1e}.", ""]
    if check is None:
        lines += [f"No finished runs under {cfg.runs_dir}: the check against recorded accuracies was not run."]
    else:
        n = len(check["runs"])
        lines += ["## The finished study runs, evaluated again", "",
                  f"{check['equal']} of {n} finished runs under `{check['runs_dir']}` give, from their saved final "
                  "model and with the current code, exactly the held-out accuracy their summary.json recorded (the "
                  "old layout computed those)."]
        wrong = [r for r in check["runs"] if r["recorded"] != r["now"]]
        lines += [f"- {r['run']}: recorded {r['recorded']:.4f}, now {r['now']:.4f}" for r in wrong]
    return lines


def main(cfg: GreedyEvalConfig) -> None:
    import torch

    torch.set_num_threads(cfg.threads)
    timing = time_layouts(cfg)
    print(f"timing: {json.dumps({k: spread(v) for k, v in timing['times'].items()})}", flush=True)
    check = check_runs(cfg)
    data = {"date": dt.date.today().isoformat(), "machine": machine_description(), "threads": cfg.threads,
            "command": "python -m bench.greedy_eval " + " ".join(sys.argv[1:]), "timing": timing,
            "check": check}
    write_report(cfg.out, "greedy_eval", report(cfg, timing, check), data)


if __name__ == "__main__":
    main(tyro.cli(GreedyEvalConfig))
