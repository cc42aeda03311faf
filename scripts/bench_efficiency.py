"""Rollout efficiency: ReMix against on-policy training, side by side, over seeds, with ablations.

    python scripts/bench_efficiency.py                # the default study on tiny-arith (about 30 min on 2 cores)
    python scripts/bench_efficiency.py --help

Every configuration shares the model, task, batch size, group size, learning rate, response length,
number of steps and evaluation schedule; only the algorithm knobs differ (ReMix: p = 0.4, N = 2,
m = 2, reincarnation at T; on-policy: p = 0, m = 1, no reincarnation). Runs go to --runs-dir (a run
that already finished is read back, not repeated; an interrupted one resumes). The result is written
to OUT/efficiency.md with efficiency.png (held-out accuracy against rollouts, mean over seeds with a
min-max band), efficiency_diagnostics.png and efficiency.json (the measured curves, as data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remix.config import TrainConfig  # noqa: E402
from remix.reporting import machine_description, write_report  # noqa: E402
from remix.tracking import eval_curve, read_metrics  # noqa: E402

# name -> (algo, variant, changes to ReMixConfig). The first four are the main comparison.
MAIN = {
    "ReMix-GRPO": ("grpo", "remix", {}),
    "GRPO": ("grpo", "onpolicy", {}),
    "ReMix-PPO": ("ppo", "remix", {}),
    "PPO": ("ppo", "onpolicy", {}),
}
ABLATIONS = {  # the paper's ablations (section 7 of ALGORITHM.md), on the GRPO side
    "ReMix-GRPO w/o higher UTD (m=1)": ("grpo", "remix", {"utd_ratio": 1}),
    "ReMix-GRPO w/o KL-Convex": ("grpo", "remix", {"kl_convex": False}),
    "ReMix-GRPO w/o reincarnation": ("grpo", "remix", {"reincarnation_step": None}),
}
DIAGNOSTICS = {
    "response_length/mean": "mean response length (tokens)",
    "reflection/keyword_rate": "self-reflection rate (paper's keywords, training samples)",
    "ratio/mean": "mean importance ratio r",
    "clip_frac": "clip fraction (low + high)",
}


@dataclass
class BenchConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds per configuration."""
    steps: int = 120
    """Training steps of every run."""
    eval_every: int = 10
    """Held-out evaluation interval (steps), the same for every run."""
    algos: tuple[str, ...] = ("grpo", "ppo")
    """Which main comparisons to run (grpo: ReMix-GRPO vs GRPO; ppo: ReMix-PPO vs PPO)."""
    ablations: bool = True
    """Also run the paper's three ablations of ReMix-GRPO."""
    thresholds: tuple[float, ...] = (0.25, 0.30, 0.35, 0.40)
    """Held-out accuracies for the rollouts-to-reach table."""
    runs_dir: Path = Path("runs/bench-efficiency")
    """Where the individual runs go."""
    out: Path = Path("docs/benchmarks")
    """Where efficiency.md, the plots and efficiency.json go."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(checkpoint_every=0))
    """Shared training settings (model, task, batch, lr, ...), the same for every configuration."""


def configurations(cfg: BenchConfig) -> dict[str, tuple[str, str, dict]]:
    chosen = {k: v for k, v in MAIN.items() if v[0] in cfg.algos}
    if cfg.ablations:
        chosen.update(ABLATIONS)
    return chosen


def run_config(cfg: BenchConfig, name: str, algo: str, variant: str, remix: dict, seed: int) -> TrainConfig:
    base = cfg.train
    return dataclasses.replace(
        base, algo=algo, variant=variant, seed=seed, steps=cfg.steps, eval_every=cfg.eval_every,
        remix=dataclasses.replace(base.remix, **remix) if remix else base.remix,
        run_dir=cfg.runs_dir / f"{slug(name)}-seed{seed}",
    )


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


# --- reading curves ---------------------------------------------------------------------------------


def rollouts_to_reach(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """Rollouts at the first evaluation with accuracy >= threshold; None if never reached."""
    return next((x for x, y in curve if y >= threshold), None)


def accuracy_at(curve: list[tuple[int, float]], rollouts: int) -> float:
    """Accuracy of the last evaluation made with at most `rollouts` rollouts (what a user would have)."""
    return [y for x, y in curve if x <= rollouts][-1]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# --- the study ---------------------------------------------------------------------------------------


def run_all(cfg: BenchConfig) -> tuple[dict[str, list[list[dict]]], float]:
    """Metrics records of every run, by configuration name, one list per seed; and the runs' total
    wall time (from their summaries, so a study read back from finished runs reports the same)."""
    from remix.runner import run

    configs = configurations(cfg)
    total, done = len(configs) * len(cfg.seeds), 0
    records: dict[str, list[list[dict]]] = {}
    wall = 0.0
    os.environ.setdefault("TQDM_DISABLE", "1")  # one line per run here; each run's own log is in its folder
    for name, (algo, variant, remix) in configs.items():
        for seed in cfg.seeds:
            tc = run_config(cfg, name, algo, variant, remix, seed)
            done += 1
            start = time.time()
            summary_path = Path(tc.run_dir) / "summary.json"
            if summary_path.exists() and json.loads(summary_path.read_text())["steps"] >= cfg.steps:
                summary = json.loads(summary_path.read_text())
                note = "(finished earlier, read back)"
            else:
                logs = cfg.runs_dir / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                with open(logs / f"{Path(tc.run_dir).name}.log", "a") as log, contextlib.redirect_stdout(log):
                    summary = run(tc)
                note = f"in {time.time() - start:.0f}s"
            print(f"[{done}/{total}] {name} seed {seed}: held-out {summary['heldout_accuracy_before']:.3f} -> "
                  f"{summary['heldout_accuracy_after']:.3f}, {summary['rollouts']} rollouts {note}", flush=True)
            records.setdefault(name, []).append(read_metrics(Path(tc.run_dir) / "metrics.jsonl"))
            wall += summary["wall_seconds"]
    return records, wall


def analyse(cfg: BenchConfig, records: dict[str, list[list[dict]]]) -> dict:
    curves = {name: [eval_curve(r) for r in runs] for name, runs in records.items()}
    common = min(c[-1][0] for runs in curves.values() for c in runs)  # every run got at least this far
    budgets = sorted({round(common * f / 100) * 100 for f in (0.25, 0.5, 1.0)})
    result = {"budgets": budgets, "configs": {}}
    for name, runs in curves.items():
        reach = {str(t): [rollouts_to_reach(c, t) for c in runs] for t in cfg.thresholds}
        result["configs"][name] = {
            "curves": runs,
            "final_accuracy": [c[-1][1] for c in runs],
            "final_rollouts": [c[-1][0] for c in runs],
            "initial_accuracy": [c[0][1] for c in runs],
            "rollouts_to_reach": reach,
            "accuracy_at": {str(b): [accuracy_at(c, b) for c in runs] for b in budgets},
            "diagnostics": diagnostics(records[name]),
        }
    return result


def diagnostics(runs: list[list[dict]]) -> dict[str, list[float]]:
    """Per-step means over seeds of the paper's diagnostics."""
    steps = [r for r in runs[0] if r["step"] >= 1]
    out: dict[str, list[float]] = {"step": [r["step"] for r in steps]}
    for key in DIAGNOSTICS:
        per_seed = []
        for run in runs:
            rows = [r for r in run if r["step"] >= 1]
            if key == "clip_frac":
                per_seed.append([r["clip_frac/low"] + r["clip_frac/high"] for r in rows])
            else:
                per_seed.append([r[key] for r in rows])
        out[key] = [mean(list(vals)) for vals in zip(*per_seed)]
    return out


# --- writing -------------------------------------------------------------------------------------------


def plot(result: dict, out: Path) -> tuple[Path, Path]:
    from remix.plots import plt

    configs = result["configs"]
    panels = [("ReMix against on-policy", [n for n in configs if n in MAIN])]
    ablations = [n for n in configs if n in ABLATIONS]
    if ablations:
        panels.append(("Ablations of ReMix-GRPO", [n for n in ("ReMix-GRPO", "GRPO") if n in configs] + ablations))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), sharey=True, squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(configs)}
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            curves = configs[name]["curves"]
            grid = sorted({x for curve in curves for x, _ in curve})
            per_seed = [[accuracy_at(curve, x) * 100 for x in grid] for curve in curves]
            mid = [mean(list(v)) for v in zip(*per_seed)]
            lo, hi = [min(v) for v in zip(*per_seed)], [max(v) for v in zip(*per_seed)]
            ax.plot(grid, mid, label=name, drawstyle="steps-post", color=colors[name])
            ax.fill_between(grid, lo, hi, step="post", alpha=0.12, color=colors[name])
        ax.set_xlabel("rollouts (fresh responses generated)")
        ax.set_title(f"{title} (mean over seeds, band: min-max)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("held-out accuracy (%)")
    fig.tight_layout()
    curve_png = out / "efficiency.png"
    fig.savefig(curve_png, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, (key, label) in zip(axes.flat, DIAGNOSTICS.items()):
        for name, c in configs.items():
            d = c["diagnostics"]
            ax.plot(d["step"], smooth(d[key]), "-" if name in MAIN else ":", label=name, linewidth=1,
                    color=colors[name])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    diag_png = out / "efficiency_diagnostics.png"
    fig.savefig(diag_png, dpi=110)
    plt.close(fig)
    return curve_png, diag_png


def smooth(values: list[float], window: int = 9) -> list[float]:
    half = window // 2
    return [mean(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def _fmt_reach(values: list[int | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return f"never (0/{len(values)})"
    return f"{mean(reached):,.0f} ({len(reached)}/{len(values)})"


def _pm(values: list[float]) -> str:
    m = mean(values)
    spread = (max(values) - min(values)) / 2
    return f"{100 * m:.1f} ± {100 * spread:.1f}"


def markdown(cfg: BenchConfig, result: dict, command: str, seconds: float) -> list[str]:
    t = cfg.train
    names = list(result["configs"])
    lines = [
        "# Rollout efficiency: ReMix against on-policy training",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()} (CPU platform), in "
        f"{seconds / 60:.0f} minutes of training and evaluation (the runs' wall time, summed).",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
        f"Shared settings: model `{t.model.name}`, task `{t.data.task}` (levels {list(t.data.arith_levels)}), "
        f"{cfg.steps} steps, batch {t.batch_size} responses ({t.batch_size // t.rollout.group_size} prompts x "
        f"{t.rollout.group_size}), lr {t.optim.lr:g}, temperature {t.rollout.temperature:g}, "
        f"{t.rollout.max_new_tokens} new tokens, greedy held-out accuracy on {t.data.heldout_size} problems every "
        f"{cfg.eval_every} steps, seeds {list(cfg.seeds)}. ReMix: p = {t.remix.offpolicy_fraction}, "
        f"N = {t.remix.history_window}, m = {t.remix.utd_ratio}, T = {t.remix.reincarnation_step}, "
        f"KL coefficient {t.objective.kl_coef:g}. Numbers are mean over seeds; ± is half the min-max spread.",
        "",
        "![accuracy against rollouts](efficiency.png)",
        "",
        "## Rollouts needed to reach a held-out accuracy",
        "",
        "Mean rollouts over the seeds that reached it (how many did).",
        "",
        "| configuration | " + " | ".join(f"{100 * x:.0f}%" for x in cfg.thresholds) + " |",
        "|---|" + "---|" * len(cfg.thresholds),
    ]
    for n in names:
        reach = result["configs"][n]["rollouts_to_reach"]
        lines.append(f"| {n} | " + " | ".join(_fmt_reach(reach[str(x)]) for x in cfg.thresholds) + " |")
    budgets = result["budgets"]
    lines += [
        "",
        "## Held-out accuracy (%) at equal rollouts",
        "",
        "| configuration | start | " + " | ".join(f"{b:,} rollouts" for b in budgets)
        + " | end of run | rollouts at end |",
        "|---|---|" + "---|" * len(budgets) + "---|---|",
    ]
    for n in names:
        c = result["configs"][n]
        lines.append(f"| {n} | {_pm(c['initial_accuracy'])} | "
                     + " | ".join(_pm(c["accuracy_at"][str(b)]) for b in budgets)
                     + f" | {_pm(c['final_accuracy'])} | {mean(c['final_rollouts']):,.0f} |")
    T = t.remix.reincarnation_step or 0
    lines += [
        "",
        "## Diagnostics over training",
        "",
        "![diagnostics](efficiency_diagnostics.png)",
        "",
        f"Means over steps 1-{T} (ReMix's off-policy phase) / {T + 1}-{cfg.steps} (after reincarnation):",
        "",
        "| configuration | " + " | ".join(f"{DIAGNOSTICS[k]}" for k in DIAGNOSTICS) + " |",
        "|---|" + "---|" * len(DIAGNOSTICS),
    ]
    for n in names:
        d = result["configs"][n]["diagnostics"]
        cells = []
        for k in DIAGNOSTICS:
            early = f"{mean(d[k][:T]):.3g}" if T else "n/a"
            late = f"{mean(d[k][T:]):.3g}" if len(d[k]) > T else "n/a"
            cells.append(f"{early} / {late}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdict (computed from the tables above)", ""] + verdict(cfg, result) + [""]
    lines += ["Per-run data: `efficiency.json` (every evaluation of every run). Each run's metrics.jsonl and "
              f"config are in `{cfg.runs_dir}/`, its log in `{cfg.runs_dir}/logs/`, on the machine that ran it.", ""]
    return lines


def verdict(cfg: BenchConfig, result: dict) -> list[str]:
    out = []
    configs = result["configs"]
    budget = result["budgets"][-1]
    for remix_name, base_name in (("ReMix-GRPO", "GRPO"), ("ReMix-PPO", "PPO")):
        if remix_name not in configs or base_name not in configs:
            continue
        a, b = configs[remix_name], configs[base_name]
        acc_a, acc_b = mean(a["accuracy_at"][str(budget)]), mean(b["accuracy_at"][str(budget)])
        out.append(f"- At {budget:,} rollouts, {remix_name} {100 * acc_a:.1f}% against {base_name} "
                   f"{100 * acc_b:.1f}% ({100 * (acc_a - acc_b):+.1f} points).")
        for x in cfg.thresholds:
            ra, rb = a["rollouts_to_reach"][str(x)], b["rollouts_to_reach"][str(x)]
            if all(v is not None for v in ra + rb):
                out.append(f"- {100 * x:.0f}% held-out: {remix_name} needed {mean(ra):,.0f} rollouts, {base_name} "
                           f"{mean(rb):,.0f} ({mean(rb) / mean(ra):.2f}x).")
            elif all(v is not None for v in ra):
                out.append(f"- {100 * x:.0f}% held-out: {remix_name} reached it on every seed, {base_name} on "
                           f"{sum(v is not None for v in rb)}/{len(rb)}.")
    return out


def main(cfg: BenchConfig) -> None:
    command = "python scripts/bench_efficiency.py " + " ".join(sys.argv[1:])
    records, seconds = run_all(cfg)
    result = analyse(cfg, records)
    cfg.out.mkdir(parents=True, exist_ok=True)
    plot(result, cfg.out)
    write_report(cfg.out, "efficiency", markdown(cfg, result, command.strip(), seconds), result)


if __name__ == "__main__":
    main(tyro.cli(BenchConfig, description=__doc__))
