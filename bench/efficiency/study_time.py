"""The efficiency study run again end to end: did it compute what the earlier study did, and how long did it take?

    git show e4fc407:docs/benchmarks/efficiency.json > runs/efficiency-before.json  # the 2026-12-03 study's record
    python -m bench.efficiency            # the study, now
    python -m bench.efficiency.study_time  # --before runs/efficiency-before.json
                                          # --after docs/benchmarks/efficiency.json

Both files are a study's efficiency.json (every run's config, provenance, held-out and validation curves and
per-step costs). For every run of --after that --before also has (by run name), it checks that the two computed
the same thing: the same config apart from where and how it ran (bench_efficiency.NOT_THE_EXPERIMENT: a fork
computes what the same run from step 0 does), the same held-out and validation accuracy at every grid point, and
the same rollouts and learner tokens after every step (the tokens every response had). Then it sets their times
side by side: each run's own wall time (a forked run's covers only the steps after its fork), their sums, and
the measured span of --after, from its first run's start to its last run's end (provenance `started` plus
`wall_seconds`). Writes OUT/study_time.md and OUT/study_time.json.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro


from bench.efficiency import analysis as ea
from bench.efficiency.study import NOT_THE_EXPERIMENT

from bench.reporting import machine_description, write_report

# What a run computed, as a study's efficiency.json records it (the phase timings are left out: they are time).
COMPUTED = ("heldout", "validation", "rollouts", "learner_tokens")


@dataclass
class StudyTimeConfig:
    before: Path = Path("runs/efficiency-before.json")
    """The earlier study's efficiency.json."""
    after: Path = Path("docs/benchmarks/efficiency.json")
    """The study run again (its efficiency.json)."""
    workers: int = 2
    """Runs at a time in the studies."""
    out: Path = Path("docs/benchmarks")
    """Where study_time.md and study_time.json go."""


def runs_by_name(path: Path) -> dict[str, dict[str, Any]]:
    return {Path(r["run_dir"]).name: r for r in json.loads(path.read_text())["runs"]}


def configuration(name: str) -> str:
    """A run's configuration: its name without the seed (grpo-lr1e-05-seed3 -> grpo-lr1e-05)."""
    return name.rsplit("-seed", 1)[0]


def computed(run: dict[str, Any]) -> dict[str, Any]:
    return {"heldout": run["heldout"], "validation": run["validation"], "rollouts": run["cost"]["rollouts"],
            "learner_tokens": run["cost"]["learner_tokens"]}


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Where two runs first computed something else ("learner_tokens at step 21"), or None."""
    x, y = computed(a), computed(b)
    for key in COMPUTED:
        if x[key] != y[key]:
            at = next((i for i, (u, v) in enumerate(zip(x[key], y[key])) if u != v), min(len(x[key]), len(y[key])))
            where = f"grid point {at}" if key in ("heldout", "validation") else f"step {at}"
            return f"{key} at {where}"
    return None


def forked(run: dict[str, Any]) -> bool:
    return "forked_from" in run["provenance"]


def main(cfg: StudyTimeConfig) -> None:
    for flag, path in (("before", cfg.before), ("after", cfg.after)):
        if not path.is_file():
            print(f"error: --{flag} {path}: no such file (a study's efficiency.json)", file=sys.stderr)
            raise SystemExit(2)
    before, after = runs_by_name(cfg.before), runs_by_name(cfg.after)
    names = sorted(set(before) & set(after))
    if not names:
        print(f"error: --after {cfg.after} has no run that --before {cfg.before} has", file=sys.stderr)
        raise SystemExit(2)
    rows = []
    for name in names:
        a, b = before[name], after[name]
        rows.append({"run": name, "config_differences": ea.config_differences(a["config"], b["config"],
                                                                              NOT_THE_EXPERIMENT),
                     "first_difference": first_difference(a, b), "forked": forked(b),
                     "before_seconds": a["wall_seconds"], "after_seconds": b["wall_seconds"]})
    same = [r for r in rows if not r["config_differences"] and r["first_difference"] is None]
    by_config: dict[str, list[dict]] = {}
    for r in rows:
        by_config.setdefault(configuration(r["run"]), []).append(r)
    total_before = sum(r["wall_seconds"] for r in before.values())
    total_after = sum(r["wall_seconds"] for r in after.values())
    span = ea.span_seconds([r["provenance"] for r in after.values()], [r["wall_seconds"] for r in after.values()])
    commits = sorted({r["provenance"].get("git_commit") or "none" for r in after.values()})
    dirty = sum(bool(r["provenance"].get("git_dirty")) for r in after.values())
    lines = ["# The efficiency study run again end to end", "",
             f"Measured {dt.date.today().isoformat()} on {machine_description()}.", "",
             f"Command: `python -m bench.efficiency.study_time{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`.",
             "",
             f"`{cfg.after}`: {len(after)} runs at commit(s) {', '.join(c[:7] for c in commits)} ({dirty} with a dirty "
             f"tree), {sum(forked(r) for r in after.values())} of them forked. `{cfg.before}`: {len(before)} runs, the "
             f"earlier study. Of the {len(rows)} runs both have, **{len(same)} computed what the earlier study's run "
             "did**: the same config apart from where and how it ran, the same held-out and validation accuracy at "
             "every grid point and the same rollouts and learner tokens after every step.", "",
             "| configuration | runs | same computation | forked | earlier run time (min) | run time now (min) | "
             "now / earlier |", "|---|---|---|---|---|---|---|"]
    for key, group in sorted(by_config.items()):
        t0, t1 = sum(r["before_seconds"] for r in group), sum(r["after_seconds"] for r in group)
        n_same = sum(r in same for r in group)
        lines.append(f"| {key} | {len(group)} | {n_same} | {sum(r['forked'] for r in group)} | {t0 / 60:.1f} | "
                     f"{t1 / 60:.1f} | {t1 / t0:.2f}x |")
    unforked = [r["after_seconds"] / r["before_seconds"] for r in rows if not r["forked"]]
    lines += ["", f"Run time in all: {total_before / 3600:.2f} hours earlier, {total_after / 3600:.2f} hours now "
              f"({total_after / total_before:.2f}x; {len(unforked)} runs that were not forked took median "
              f"{statistics.median(unforked):.2f}x [{min(unforked):.2f}-{max(unforked):.2f}] of their earlier time, "
              "which also carries the difference between the two sessions' machines). "
              f"**Measured span of the study now: {span / 3600:.2f} hours** from its first run's start to its last "
              f"run's end, at {cfg.workers} runs at a time (run time / {cfg.workers} = "
              f"{total_after / 3600 / cfg.workers:.2f} hours)."]
    differ = [r for r in rows if r not in same]
    if differ:
        lines += ["", "Runs that did not compute the same:", ""]
        lines += [f"- {r['run']}: {r['first_difference'] or ''}"
                  f"{'; config: ' + '; '.join(r['config_differences'][:3]) if r['config_differences'] else ''}"
                  for r in differ]
    only = sorted(set(after) - set(before))
    if only:
        lines += ["", f"Runs without an earlier counterpart (counted in the times, not compared): {', '.join(only)}."]
    data = {"date": dt.date.today().isoformat(), "machine": machine_description(), "before": str(cfg.before),
            "after": str(cfg.after), "runs": rows, "same_computation": len(same), "compared": len(rows),
            "run_seconds_before": total_before, "run_seconds_after": total_after, "span_seconds_after": span,
            "workers": cfg.workers, "commits_after": commits}
    write_report(cfg.out, "study_time", lines, data)


if __name__ == "__main__":
    main(tyro.cli(StudyTimeConfig))
