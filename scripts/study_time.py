"""The efficiency study's time with the current code, projected from a sample of its runs run again.

    python scripts/bench_efficiency.py --seeds 0 --sweep-seeds 1 --runs-dir runs/bench-efficiency-sample \\
        --out runs/bench-efficiency-sample/report            # seed 0 of every configuration: 22 runs
    python scripts/study_time.py                              # compares them with the study's runs

For every run of --sample (the same configuration as a run of --study, seed 0), it checks that the two
computed the same thing: the same config apart from where it ran, and every logged metric of every step
equal except the timings and the sampling engine's own log-probs (ENGINE_ROUNDING). Then it projects the
whole study's run time with the current code: each study run's
wall time times its configuration's ratio (sample run / study run of seed 0). That ratio also carries the
difference in speed between the two sessions' machines (the study measured 0.79-0.85x between sessions for
identical computations), which is why it is a projection and not a measurement of the whole study.
Writes OUT/study_time.md and OUT/study_time.json.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import efficiency_analysis as ea  # noqa: E402
from bench_efficiency import NOT_THE_EXPERIMENT  # noqa: E402

from remix.reporting import machine_description, write_report  # noqa: E402
from remix.tracking import read_metrics  # noqa: E402

# The sampling engine's log-probs against the learner's: the one logged number that depends on how the engine
# batched its rows (compaction changes a batch's row count, hence the last bits of a matrix product).
ENGINE_ROUNDING = {"sampler/logp_abs_diff"}


@dataclass
class StudyTimeConfig:
    study: Path = Path("runs/bench-efficiency")
    """The whole study's runs."""
    sample: Path = Path("runs/bench-efficiency-sample")
    """Some of them run again with the current code (same run names)."""
    workers: int = 2
    """Runs at a time in the study (elapsed time = run time / workers)."""
    out: Path = Path("docs/benchmarks")
    """Where study_time.md and study_time.json go."""


def finished_runs(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted(root.glob("*/summary.json"))}


def config_key(name: str) -> str:
    """A run's configuration: its name without the seed (grpo-lr1e-05-seed3 -> grpo-lr1e-05)."""
    return name.rsplit("-seed", 1)[0]


def metric_differences(a: Path, b: Path) -> dict[str, dict[str, float]]:
    """For each logged metric other than the timings that differs between two runs: on how many steps, and the
    largest absolute and relative differences (a step missing from one run counts under "step")."""
    ra, rb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    out: dict[str, dict[str, float]] = {}
    if len(ra) != len(rb):
        out["step"] = {"steps": abs(len(ra) - len(rb)), "max_absolute": math.inf, "max_relative": math.inf}
    for x, y in zip(ra, rb):
        for k in sorted((x.keys() | y.keys()) - {"step"}):
            if k.startswith("time/") or x.get(k) == y.get(k):
                continue
            d = out.setdefault(k, {"steps": 0, "max_absolute": 0.0, "max_relative": 0.0})
            d["steps"] += 1
            both = isinstance(x.get(k), (int, float)) and isinstance(y.get(k), (int, float))
            gap = abs(x[k] - y[k]) if both else math.inf
            d["max_absolute"] = max(d["max_absolute"], gap)
            d["max_relative"] = max(d["max_relative"], gap / max(abs(x[k]), abs(y[k])) if both else math.inf)
    return out


def differing(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} ({d['steps']})" for k, d in metrics.items()) or "none"


def wall(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["wall_seconds"]


def main(cfg: StudyTimeConfig) -> None:
    study, sample = finished_runs(cfg.study), finished_runs(cfg.sample)
    pairs = sorted(set(study) & set(sample))
    if not pairs:
        print(f"study_time: no run of --sample {cfg.sample} is also a finished run of --study {cfg.study}",
              file=sys.stderr)
        raise SystemExit(2)
    rows, ratio = [], {}
    for name in pairs:
        diffs = ea.config_differences(json.loads((study[name] / "config.json").read_text()),
                                      json.loads((sample[name] / "config.json").read_text()), NOT_THE_EXPERIMENT)
        r = wall(sample[name]) / wall(study[name])
        ratio[config_key(name)] = r
        rows.append({"run": name, "config_differences": diffs, "metrics": metric_differences(study[name], sample[name]),
                     "study_seconds": wall(study[name]), "sample_seconds": wall(sample[name]), "ratio": r})
    covered = [n for n in study if config_key(n) in ratio]
    study_total = sum(wall(study[n]) for n in covered)
    projected = sum(wall(study[n]) * ratio[config_key(n)] for n in covered)
    uncovered = sorted({config_key(n) for n in study} - set(ratio))
    same = [r for r in rows if not r["config_differences"] and set(r["metrics"]) <= ENGINE_ROUNDING]
    rounding = [r["metrics"][k] for r in rows for k in ENGINE_ROUNDING if k in r["metrics"]]
    lines = ["# The efficiency study's time with the current code (projected from a sample)", "",
             f"Measured {dt.date.today().isoformat()} on {machine_description()}.", "",
             "Commands: `python scripts/bench_efficiency.py --seeds 0 --sweep-seeds 1 --runs-dir "
             f"{cfg.sample} --out {cfg.sample}/report`, then `python scripts/study_time.py"
             f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`.", "",
             f"{len(rows)} runs of `{cfg.study}` (seed 0 of each configuration) were run again with the current code "
             f"into `{cfg.sample}`. {len(same)} of {len(rows)} computed what the study's run did: the same config "
             "apart from where it ran, and every logged metric of every step equal (rewards, losses, KL, held-out and "
             "validation accuracy at every grid point), except the timings and "
             + ("`" + "`, `".join(sorted(ENGINE_ROUNDING)) + "`"
                + (f" (on {sum(d['steps'] for d in rounding)} steps, by at most "
                   f"{max(d['max_absolute'] for d in rounding):.1e}): the sampling engine's log-probs changed in "
                   "their last bits where a batch lost its finished rows; the learner's, and every token, did not."
                   if rounding else ", which did not differ either."))]
    lines += ["", "| run | metrics that differ (steps) | study run | sample run | sample / study |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {differing(r['metrics'])}"
              f"{'; config: ' + '; '.join(r['config_differences'][:2]) if r['config_differences'] else ''} | "
              f"{r['study_seconds']:.0f} s | {r['sample_seconds']:.0f} s | {r['ratio']:.2f}x |" for r in rows]
    ratios = [r["ratio"] for r in rows]
    lines += ["", f"Per-run ratio: median {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]; "
              f"these {len(rows)} runs took {sum(r['study_seconds'] for r in rows) / 60:.0f} min in the study and "
              f"{sum(r['sample_seconds'] for r in rows) / 60:.0f} min now.", "",
              f"The whole study: {len(study)} runs, {study_total / 3600:.2f} hours of run time as measured "
              f"({study_total / 3600 / cfg.workers:.2f} hours elapsed at {cfg.workers} runs at a time); each run's "
              f"wall time times its configuration's ratio gives {projected / 3600:.2f} hours of run time, "
              f"**{projected / 3600 / cfg.workers:.2f} hours elapsed**, projected. The ratio carries both the code's "
              "change and the difference in speed between the two sessions' machines; the study itself was not run "
              "again end to end."]
    if uncovered:
        lines += ["", f"Configurations without a sample run (not projected, not counted): {', '.join(uncovered)}."]
    data = {"date": dt.date.today().isoformat(), "machine": machine_description(), "study": str(cfg.study),
            "sample": str(cfg.sample), "runs": rows, "study_run_seconds": study_total,
            "projected_run_seconds": projected, "workers": cfg.workers, "uncovered": uncovered,
            "same_computation": len(same)}
    write_report(cfg.out, "study_time", lines, data)


if __name__ == "__main__":
    main(tyro.cli(StudyTimeConfig))
