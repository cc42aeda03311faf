"""The one-backend refactor and multi-process training, timed side by side.

    python -m bench.backend                      # about 8 minutes on 2 cores
    python -m bench.backend --baseline-ref 96bd1e5 --repeats 3 --steps 20

Two comparisons, each run in alternation (A B A B ...) so that drift of a shared machine hits both sides:

1. the CPU platform of this checkout against a baseline commit (default: the last commit before the
   backend existed, when platforms/cpu held its own learner and rollout), checked out into a temporary
   git worktree; the same `scripts/run.py` command on both;
2. this checkout on 2 processes (`torchrun --nproc-per-node 2`, FSDP2 over gloo) against 1 process, the
   same global batch. On a 2-core machine the two processes share the cores that one process uses
   alone, so this measures the overhead of sharding and collectives, not a speed-up.

Every run is the default ReMix-GRPO job (tiny-arith, batch 64) for --steps steps without evaluation in
between. The step time is time/generate + time/grade + time/learn from metrics.jsonl, steps 2..N
(step 1 includes torch.compile); a run's figure is its median step time, and the table gives the median
and min-max of those over the repeats. Writes OUT/backend.md and OUT/backend.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro

from bench.reporting import machine_description, write_report

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BackendBenchConfig:
    baseline_ref: str = "96bd1e5"
    """Git commit of the previous CPU path (before platforms/backend)."""
    repeats: int = 3
    """Runs of each side, alternating."""
    steps: int = 20
    """Training steps per run."""
    out: Path = Path("docs/benchmarks")
    """Where backend.md and backend.json go."""


def run_flags(run_dir: Path, steps: int) -> list[str]:
    return ["--steps", str(steps), "--eval-every", "0", "--checkpoint-every", "0", "--run-dir", str(run_dir)]


def step_times(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["time/generate"] + r["time/grade"] + r["time/learn"] for r in rows if r.get("step", 0) >= 2
            and "time/learn" in r]


def timed_run(command: list[str], cwd: Path, run_dir: Path) -> float:
    """Runs one training job and returns its median step time (seconds)."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{proc.stderr[-3000:]}")
    return statistics.median(step_times(run_dir))


def summarise(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(cfg: BackendBenchConfig) -> None:
    python = sys.executable
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    results: dict[str, list[float]] = {"baseline": [], "backend": [], "backend-2proc": []}
    with tempfile.TemporaryDirectory(prefix="bench-backend-") as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), cfg.baseline_ref], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            for r in range(cfg.repeats):
                for side, cwd, launcher in (("baseline", baseline, [python]), ("backend", ROOT, [python]),
                                            ("backend-2proc", ROOT, torchrun)):
                    run_dir = tmp / f"{side}-{r}"
                    seconds = timed_run([*launcher, "scripts/run.py", *run_flags(run_dir, cfg.steps)], cwd, run_dir)
                    results[side].append(seconds)
                    print(f"repeat {r + 1}/{cfg.repeats} {side}: median step {seconds:.3f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)

    stats = {side: summarise(v) for side, v in results.items()}
    pair = [b / a for a, b in zip(results["baseline"], results["backend"])]
    procs = [b / a for a, b in zip(results["backend"], results["backend-2proc"])]
    command = f"python -m bench.backend --baseline-ref {cfg.baseline_ref} --repeats {cfg.repeats} " \
              f"--steps {cfg.steps}"
    lines = [
        "# One backend, and 2 processes against 1",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {machine_description()}",
        "",
        f"Default ReMix-GRPO job (tiny-arith, batch 64, 40 new tokens), {cfg.steps} steps, no evaluation in "
        f"between; a run's figure is its median step time over steps 2-{cfg.steps} (generate + grade + learn); "
        f"{cfg.repeats} runs per side, alternating. Median (min-max) over the runs:",
        "",
        "| side | step time (s) |",
        "|---|---|",
        f"| CPU path before the backend ({cfg.baseline_ref}) | {_fmt(stats['baseline'])} |",
        f"| CPU path on platforms/backend (this checkout) | {_fmt(stats['backend'])} |",
        f"| the same on 2 processes (torchrun, FSDP2 over gloo) | {_fmt(stats['backend-2proc'])} |",
        "",
        f"Backend / before, run by run: {', '.join(f'{x:.3f}' for x in pair)} "
        f"(median {statistics.median(pair):.3f}).  ",
        f"2 processes / 1 process, run by run: {', '.join(f'{x:.3f}' for x in procs)} "
        f"(median {statistics.median(procs):.3f}).",
        "",
        "The 2-process job shares the machine's 2 cores that the 1-process job uses alone (torch uses both "
        "cores in one process; torchrun gives each process one thread), so its step time measures what "
        "sharding, all-gathers and reductions cost here, not the speed-up of a real cluster.",
    ]
    write_report(cfg.out, "backend", lines, {"command": command, "date": dt.date.today().isoformat(),
                                             "machine": machine_description(), "runs": results, "stats": stats,
                                             "ratio_backend_over_baseline": pair, "ratio_2proc_over_1proc": procs})


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


if __name__ == "__main__":
    main(tyro.cli(BackendBenchConfig))
