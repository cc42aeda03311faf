"""Several runs side by side: their held-out accuracy against rollouts in one PNG, and a table of summaries.

    python scripts/compare_runs.py runs/grpo-remix-20261128-101500 runs/grpo-onpolicy-20261128-103000
    python scripts/compare_runs.py runs/a runs/b --out runs/a-vs-b.png

Each argument is a run directory (it needs metrics.jsonl; summary.json when the run finished). The table
lists algorithm, variant, model, task, steps, rollouts, held-out accuracy before and after, wall time.
The PNG (default runs/compare-<time>.png) is never written over an existing file. Exit status 2 with
one line for a folder that is not a run directory.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from remix.plots import plot_runs  # noqa: E402
from remix.tracking import eval_curve, eval_measure, read_metrics  # noqa: E402
from remix.validation import parse_cli  # noqa: E402


@dataclass
class CompareConfig:
    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories to compare (two or more, or one to tabulate)."""
    out: Path | None = None
    """The PNG to write (default: runs/compare-<time>.png); an existing file is never overwritten."""


class CompareError(ValueError):
    """A folder that is not a run directory, or an output that exists (one line, exit 2)."""


def load_run(run_dir: Path) -> tuple[list[dict], dict]:
    """(metrics records, summary) of a run directory; the summary is rebuilt from metrics if the run is unfinished."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise CompareError(f"{run_dir}: not a run directory (no metrics.jsonl)")
    try:
        records = read_metrics(metrics)
    except (OSError, json.JSONDecodeError) as e:
        raise CompareError(f"{metrics}: unreadable ({e})") from None
    curve = eval_curve(records)
    if not curve:
        raise CompareError(f"{run_dir}: metrics.jsonl has no held-out evaluation yet")
    try:
        summary_file, config_file = run_dir / "summary.json", run_dir / "config.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise CompareError(f"{run_dir}: unreadable summary.json or config.json ({e})") from None
    return records, {
        "algo": summary.get("algo", config.get("algo", "?")),
        "variant": summary.get("variant", config.get("variant", "?")),
        "model": summary.get("model", config.get("model", {}).get("name", "?")),
        "task": summary.get("task", config.get("data", {}).get("task", "?")),
        "steps": max(r.get("step", 0) for r in records),
        "rollouts": max(r.get("rollouts", 0) for r in records),
        "before": curve[0][1],
        "after": curve[-1][1],
        "wall_s": summary.get("wall_seconds"),
        "finished": bool(summary),
    }


def table(rows: dict[str, dict]) -> str:
    heads = ["run", "algo", "variant", "model", "task", "steps", "rollouts", "held-out before -> after", "wall s"]
    lines = [[name, s["algo"], s["variant"], s["model"], s["task"], str(s["steps"]), f"{s['rollouts']:,}",
              f"{s['before']:.3f} -> {s['after']:.3f}" + ("" if s["finished"] else " (unfinished)"),
              "-" if s["wall_s"] is None else f"{s['wall_s']:.0f}"] for name, s in rows.items()]
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(heads)]
    fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))
    return "\n".join([fmt(heads), "-+-".join("-" * w for w in widths), *map(fmt, lines)])


def main(cfg: CompareConfig) -> Path:
    out = cfg.out or Path("runs") / f"compare-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.png"
    if out.exists():
        raise CompareError(f"--out {out}: already exists; choose another file")
    if not cfg.runs:
        raise CompareError("runs: give at least one run directory")
    loaded = {}
    for run_dir in cfg.runs:
        name = run_dir.name if run_dir.name not in loaded else str(run_dir)
        loaded[name] = load_run(run_dir)
    measures = {name: eval_measure(records) for name, (records, _) in loaded.items()}
    if len(set(measures.values())) > 1:  # an accuracy and a mean reward on one axis would read as comparable
        raise CompareError("runs: some measured held-out accuracy (the math reward) and others a mean reward (their "
                           "own --reward): " + ", ".join(f"{n}: {m}" for n, m in measures.items()))
    measure = next(iter(measures.values()))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"--out {out}: cannot create its folder ({e.strerror})") from None
    print(table({name: summary for name, (_, summary) in loaded.items()}))
    plot_runs({name: records for name, (records, _) in loaded.items()}, out, f"held-out {measure} against rollouts")
    print(f"wrote {out}")
    return out


def cli(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CompareConfig, argv, __doc__)
    try:
        main(cfg)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
