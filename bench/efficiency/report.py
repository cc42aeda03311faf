"""The efficiency study's report: efficiency.md, efficiency.png, efficiency_diagnostics.png, efficiency.json.

Called by bench/efficiency/study.py with the finished runs; every number in the report is computed here
from the runs' metrics, with the functions of bench/efficiency/analysis.py.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from pathlib import Path
from typing import Any

from bench.efficiency import analysis as ea
from bench.efficiency.study import PAIRS, UTD_PAIRS

from bench.reporting import machine_description, write_report

PHASES = ("generate", "grade", "learn")


# --- comparisons ------------------------------------------------------------------------------------------


def seed_runs(cfg, runs: dict, name: str, lr: float) -> list[dict]:
    return [runs[(name, lr, s)] for s in cfg.seeds]  # runs are keyed by (name, lr, seed)


def ablation_wall_time_note(ablation_runs: list[dict]) -> str:
    """What the wall-time ratio of a row reached before the removed part acts means: it depends on whether the
    ablations were forked (their metrics through the fork step are the base run's) or run from step 0."""
    forked = sum("forked_from" in r["provenance"] for r in ablation_runs)
    from_zero = ("the wall-time ratio of such a row is the machine's own drift between two sets of runs of the "
                 "same computation, made at different times: read the other wall-time ratios against it.")
    if not forked:
        return "Run from step 0, " + from_zero
    note = (f"{forked} of the {len(ablation_runs)} ablation runs were forked from a checkpoint of the run they "
            "compute the same as, at the last step they do (bench_efficiency.py's `same_through`): through that "
            "step their metrics, wall time included, are that run's, so such a row's wall-time ratio reads 1.00x "
            "by construction too (past it, a forked run's time is that run's up to the fork plus its own after it)")
    if forked < len(ablation_runs):
        return note + ". Of an ablation run from step 0, " + from_zero
    return note + "."


def cost_to(run: dict, rollouts: float | None) -> dict[str, float | None]:
    """Wall time (by phase and in all) and learner tokens a run spent to reach `rollouts`."""
    c = run["cost"]
    out = {p: ea.cumulative_at(c["rollouts"], c[p], rollouts) for p in PHASES}
    out["wall"] = None if rollouts is None else sum(out[p] for p in PHASES)
    out["learner_tokens"] = ea.cumulative_at(c["rollouts"], c["learner_tokens"], rollouts)
    return out


def compare(method: list[dict], baseline: list[dict], targets: list[float]) -> list[dict[str, Any]]:
    """Per target: both sides' per-seed crossings, the paired ratio baseline/method (median, 95% interval), and
    the same for wall time and learner tokens to the target."""
    rows = []
    for t in targets:
        xm = [ea.crossing(r["heldout"], t) for r in method]
        xb = [ea.crossing(r["heldout"], t) for r in baseline]
        cm = [cost_to(r, x) for r, x in zip(method, xm)]
        cb = [cost_to(r, x) for r, x in zip(baseline, xb)]
        row = {"target": t, "method_rollouts": xm, "baseline_rollouts": xb,
               "rollout_ratio": ea.median_interval(ea.paired_ratios(xb, xm))}
        for key in ("wall", "learner_tokens"):
            vm, vb = [c[key] for c in cm], [c[key] for c in cb]
            row[f"method_{key}"], row[f"baseline_{key}"] = vm, vb
            row[f"{key}_ratio"] = ea.median_interval(ea.paired_ratios(vb, vm))
        rows.append(row)
    return rows


def grid_band(cfg, group: list[dict]) -> list[tuple[float, float, float]]:
    """Median held-out accuracy over seeds at each grid point, with the bootstrap 95% interval of the median."""
    out = []
    for x in cfg.grid:
        ys = [y for y in (ea.interpolate(r["heldout"], x) for r in group) if y is not None]
        out.append(ea.median_interval(ys) if len(ys) == len(group) else (math.nan,) * 3)
    return out


def final_accuracy(group: list[dict]) -> list[float]:
    return [r["heldout"][-1][1] for r in group]


# --- formatting --------------------------------------------------------------------------------------------


def _n(values: list) -> str:
    return f"{sum(v is not None for v in values)}/{len(values)}"


def _med(values: list[float | None], fmt: str = "{:,.0f}") -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "never"
    if len(got) < len(values):
        # unreached seeds count as "more than any reached value": the median exists only if most seeds got there
        if len(got) * 2 <= len(values):
            return f"— ({_n(values)})"
        med = statistics.median(got + [math.inf] * (len(values) - len(got)))
        return fmt.format(med) + f" ({_n(values)})"
    return fmt.format(statistics.median(got))


def _ratio(r: tuple[float, float, float]) -> str:
    m, lo, hi = r
    if math.isnan(m):
        return "n/a"

    def f(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:.2f}"

    return f"{f(m)}x [{f(lo)}, {f(hi)}]"


def _verdict(r: tuple[float, float, float]) -> str:
    m, lo, hi = r
    if math.isnan(m):
        return "no seed reached it"
    if lo > 1:
        return "fewer (interval above 1)"
    if hi < 1:
        return "more (interval below 1)"
    return "not resolved (interval spans 1)"


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def _sentence(subject: str, r: tuple[float, float, float], other: str) -> str:
    """'ReMix-GRPO needed fewer rollouts than GRPO', from the interval of the per-seed ratio other/subject."""
    m, lo, hi = r
    if math.isnan(m):
        return f"neither {subject} nor {other} got there on any seed"
    if lo > 1:
        return f"{subject} needed fewer rollouts than {other}"
    if hi < 1:
        return f"{subject} needed more rollouts than {other}"
    return f"no difference between {subject} and {other} is resolved"


def comparison_table(label_m: str, label_b: str, rows: list[dict], target_names: list[str]) -> list[str]:
    lines = [
        f"| target | {label_m}: rollouts (seeds reaching) | {label_b}: rollouts | per-seed ratio {label_b}/{label_m}, "
        f"median [95% CI] | {label_m} needed | wall time {label_m} / {label_b} (s) | wall-time ratio | "
        f"learner tokens {label_m} / {label_b} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in zip(target_names, rows):
        lines.append(
            f"| {name} | {_med(row['method_rollouts'])} | {_med(row['baseline_rollouts'])} | "
            f"{_ratio(row['rollout_ratio'])} "
            f"| {_verdict(row['rollout_ratio'])} | {_med(row['method_wall'], '{:.0f}')} / "
            f"{_med(row['baseline_wall'], '{:.0f}')} | {_ratio(row['wall_ratio'])} | "
            f"{_med(row['method_learner_tokens'], '{:,.0f}')} / {_med(row['baseline_learner_tokens'], '{:,.0f}')} |")
    return lines


# --- the report --------------------------------------------------------------------------------------------


def write_study_report(cfg, chosen: dict, runs: dict, noise: dict, command: str) -> None:
    best = chosen["best_lr"]
    t = cfg.train
    abs_names = [f"{100 * x:.0f}%" for x in cfg.targets]
    result: dict[str, Any] = {"command": command, "date": dt.date.today().isoformat(), "machine": machine_description(),
                              "grid": list(cfg.grid), "targets": list(cfg.targets),
                              "target_fractions": list(cfg.target_fractions), "best_lr": best,
                              "validation_scores": {n: {str(lr): v for lr, v in s.items()}
                                                    for n, s in chosen["validation_scores"].items()},
                              "evaluation_noise": noise, "comparisons": {}, "runs": []}
    for run in runs.values():
        result["runs"].append({k: v for k, v in run.items() if k != "diagnostics"})
    wall_total = sum(r["wall_seconds"] for r in runs.values())
    span = ea.span_seconds([r["provenance"] for r in runs.values()], [r["wall_seconds"] for r in runs.values()])
    n_forked = sum("forked_from" in r["provenance"] for r in runs.values())
    commits = sorted({r["provenance"].get("git_commit") or "none" for r in runs.values()})
    versions = sorted({tuple(sorted(r["provenance"]["versions"].items())) for r in runs.values()})

    sections: list[str] = []
    verdict: list[str] = []
    bands: dict[str, list] = {}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)  # the plots are written before write_report makes it

    # lr sweep
    sections += ["## 1. Learning rates, chosen per method on the validation split", "",
                 f"Mean validation accuracy (%) over the rollout grid, mean of seeds "
                 f"{list(cfg.seeds[:cfg.sweep_seeds])}; "
                 f"validation is {t.data.validation_size} problems disjoint from the {t.data.heldout_size} reported "
                 "held-out ones, which no choice looks at. **Bold**: chosen.", "",
                 "| method | " + " | ".join(f"lr {lr:g}" for lr in cfg.lrs) + " |", "|---|" + "---|" * len(cfg.lrs)]
    for name, scores in chosen["validation_scores"].items():
        cells = [(f"**{_pct(statistics.fmean(v))}**" if lr == best[name] else _pct(statistics.fmean(v)))
                 for lr, v in scores.items()]
        sections.append(f"| {name} | " + " | ".join(cells) + " |")
    sections += ["", sweep_note(chosen), ""]

    # evaluation noise
    se = noise["problem_sampling_se"]
    n_full = str(noise["problems"])
    target_gap = min(b - a for a, b in zip(cfg.targets, cfg.targets[1:])) if len(cfg.targets) > 1 else math.nan
    sections += [
        "## 2. The evaluation's own noise", "",
        f"The final policy of {noise['run']['name']} (lr {noise['run']['lr']:g}, seed {noise['run']['seed']}) "
        f"evaluated again on the {noise['problems']} held-out problems:", "",
        f"- greedy, twice: {', '.join(_pct(a) + '%' for a in noise['greedy_accuracy'])} "
        f"({'identical per problem' if noise['greedy_repeats_identical'] else 'NOT identical'}): the greedy "
        "measurement itself adds no noise;",
        f"- sampled at temperature 1, {len(noise['sampled_accuracy'])} times: "
        f"{', '.join(_pct(a) for a in noise['sampled_accuracy'])}% (sd {100 * noise['sampled_sd']:.1f} points), "
        "which is why the study evaluates greedily;",
        "- the finite number of problems: bootstrap standard error over problems "
        + ", ".join(f"{100 * v:.1f} points with {n}" for n, v in se.items())
        + f" problems. With {n_full} problems it is {100 * se[n_full]:.1f} points, against "
        f"{100 * target_gap:.0f} points between adjacent absolute targets; the noise from seed to seed (the per-seed "
        "tables of section 3) is larger still, and is what the per-seed intervals measure.", ""]

    # best against best, same lr
    for title, key, lr_of in (("Best against best (each method at its own chosen lr)", "best",
                               lambda m, b: (best[m], best[b])),
                              ("Same lr (each ReMix method at its baseline's chosen lr; labelled, not tuned for ReMix)",
                               "same_lr", lambda m, b: (best[b], best[b]))):
        sections += [f"## {'3' if key == 'best' else '4'}. {title}", ""]
        if key == "best":
            sections += ["Against plain on-policy training (m = 1), and against on-policy training with ReMix's "
                         "update-to-data ratio m = 2 and no reuse (p = 0: two passes over each fresh batch, as TRL's "
                         "`num_iterations = 2`): the second says whether reusing old rollouts adds anything beyond "
                         "more updates per rollout. The m = 2 baselines keep m = 2 for every step; ReMix returns to "
                         "m = 1 with its reincarnation at T.", ""]
        for m, b in ea_pairs(best, PAIRS + UTD_PAIRS if key == "best" else PAIRS):
            lm, lb = lr_of(m, b)
            if key == "same_lr" and lm == best[m]:
                sections += [f"{m}'s chosen lr is {lm:g}, the same as {b}'s: this is the best-against-best comparison "
                             "above.", ""]
                continue
            gm, gb = seed_runs(cfg, runs, m, lm), seed_runs(cfg, runs, b, lb)
            final_b = statistics.median(final_accuracy(gb))
            frac_targets = [f * final_b for f in cfg.target_fractions]
            names = abs_names + [f"{100 * f:.0f}% of {b}'s final ({_pct(x)}%)" for f, x in zip(cfg.target_fractions,
                                                                                              frac_targets)]
            rows = compare(gm, gb, list(cfg.targets) + frac_targets)
            result["comparisons"][f"{key}: {m} (lr {lm:g}) vs {b} (lr {lb:g})"] = rows
            fm = ea.median_interval(final_accuracy(gm))
            fb = ea.median_interval(final_accuracy(gb))
            sections += [f"### {m} (lr {lm:g}) against {b} (lr {lb:g}), {len(cfg.seeds)} paired seeds", "",
                         f"Final held-out accuracy (median [95% CI]): {m} {_pct(fm[0])}% [{_pct(fm[1])}, "
                         f"{_pct(fm[2])}] "
                         f"after {statistics.median(r['heldout'][-1][0] for r in gm):,.0f} rollouts; {b} "
                         f"{_pct(fb[0])}% "
                         f"[{_pct(fb[1])}, {_pct(fb[2])}] after "
                         f"{statistics.median(r['heldout'][-1][0] for r in gb):,.0f}.",
                         "", *comparison_table(m, b, rows, names), ""]
            if key == "best":
                bands[m], bands[b] = grid_band(cfg, gm), grid_band(cfg, gb)
                sections += per_seed_table(cfg, m, b, gm, gb, rows, names)
            for name, row in zip(names, rows):
                verdict.append(f"- {title.split(' (')[0]}, target {name}: {_sentence(m, row['rollout_ratio'], b)} "
                               f"(per-seed ratio {b}/{m} {_ratio(row['rollout_ratio'])}); in wall time to the target "
                               f"{b}/{m} {_ratio(row['wall_ratio'])}.")

    # the rollout ratio at every shared lr
    by_lr = ratios_by_lr(cfg, runs, ea_pairs(best, PAIRS + UTD_PAIRS), chosen["lrs"])
    result["ratio_by_lr"] = by_lr
    sections += ratio_by_lr_section(cfg, by_lr, abs_names)
    plot_ratio_by_lr(cfg, by_lr, Path(cfg.out))

    # accuracy at equal rollouts
    cols = sorted(set(range(1, len(cfg.grid), 3)) | {len(cfg.grid) - 1})
    sections += ["## 6. Held-out accuracy at equal rollouts", "",
                 "Median over seeds [bootstrap 95% CI of the median], read on the common grid by interpolation.", "",
                 "| configuration | " + " | ".join(f"{cfg.grid[i]:,} rollouts" for i in cols) + " |",
                 "|---|" + "---|" * len(cols)]
    groups = {f"{n} (lr {best[n]:g})": seed_runs(cfg, runs, n, best[n]) for n in best}
    ablation_names = [n for n in {s.name for s in chosen["ablations"]}]
    for n in sorted(ablation_names):
        groups[f"{n} (lr {best['ReMix-GRPO']:g})"] = seed_runs(cfg, runs, n, best["ReMix-GRPO"])
    for label, group in groups.items():
        band = grid_band(cfg, group)
        sections.append(f"| {label} | " + " | ".join(f"{_pct(band[i][0])} [{_pct(band[i][1])}, {_pct(band[i][2])}]"
                                                     for i in cols) + " |")
    sections.append("")

    # ablations
    if ablation_names and "ReMix-GRPO" in best:
        lr = best["ReMix-GRPO"]
        base = seed_runs(cfg, runs, "ReMix-GRPO", lr)
        lam_name = chosen["kl_schedule"]
        beta = t.objective.kl_coef
        kl_term, pg_term = kl_magnitudes(base, beta)
        lam_runs = seed_runs(cfg, runs, lam_name, lr) if lam_name in ablation_names else []
        sections += ["## 7. Ablations of ReMix-GRPO", "",
                     f"At ReMix-GRPO's chosen lr {lr:g}, {len(cfg.seeds)} paired seeds. The ratio is the ablation's "
                     "rollouts over the full method's (> 1: removing the part costs rollouts). Until the removed "
                     "part first acts, an ablation's run is the same computation as the full method's (same seeds, "
                     "same data), so a target reached before then reads 1.00x by construction: "
                     f"{ablation_onsets(cfg, base, lam_name, lam_runs)}. "
                     + ablation_wall_time_note([r for n in ablation_names for r in seed_runs(cfg, runs, n, lr)]),
                     ""]
        if lam_name in ablation_names:
            sections += [
                f"With the paper's lam(t) (1 through step {t.remix.lambda_start}) and reincarnation at T = "
                f"{t.remix.reincarnation_step}, KL-Convex has no weight before reincarnation, so 'w/o KL-Convex' "
                f"is also compared with '{lam_name}' (lam drops every {cfg.ablation_lambda_every} steps and "
                f"reaches its floor before T). At the shared KL coefficient beta = {beta:g}, the KL term "
                f"beta x kl/ref is {kl_term:.1e} (median over ReMix-GRPO's steps and seeds) against a policy "
                f"loss of {pg_term:.1e} (median |loss/policy|)"
                + (f", so the pair is also run at beta = {cfg.ablation_kl_coef:g}." if cfg.ablation_kl_coef
                   is not None else "."), ""]
        # a pair is reported when both sides finished (--report-only leaves out unfinished ablations)
        comparisons = [(a, b) for a, b in chosen["ablation_pairs"] if a in ablation_names
                       and (b == "ReMix-GRPO" or b in ablation_names)]
        for removed, full_label in comparisons:
            full = base if full_label == "ReMix-GRPO" else seed_runs(cfg, runs, full_label, lr)
            rows = compare(full, seed_runs(cfg, runs, removed, lr), list(cfg.targets))
            result["comparisons"][f"ablation: {removed} vs {full_label}"] = rows
            sections += [f"### {removed} against {full_label}", "",
                         *comparison_table(full_label, removed, rows, abs_names), ""]
            for name, row in zip(abs_names, rows):
                verdict.append(f"- Ablation, target {name}: {_sentence(full_label, row['rollout_ratio'], removed)} "
                               f"(per-seed ratio {_ratio(row['rollout_ratio'])}).")
        bands["ReMix-GRPO (ablation base)"] = grid_band(cfg, base)
        for n in sorted(ablation_names):
            bands[n] = grid_band(cfg, seed_runs(cfg, runs, n, lr))

    # cost split
    sections += ["## 8. Where the time goes", "",
                 "Median over seeds of each phase over the whole run, per 1,000 rollouts (evaluation excluded), and "
                 "learner tokens (response tokens trained on, all m passes) per rollout.", "",
                 "| configuration | generate (s/1k) | grade (s/1k) | learn (s/1k) | learn share | learner "
                 "tokens / rollout |",
                 "|---|---|---|---|---|---|"]
    for label, group in list(groups.items())[:len(best)]:
        per = {p: statistics.median(r["cost"][p][-1] / r["cost"]["rollouts"][-1] * 1000 for r in group) for p in PHASES}
        tok = statistics.median(r["cost"]["learner_tokens"][-1] / r["cost"]["rollouts"][-1] for r in group)
        sections.append(f"| {label} | {per['generate']:.2f} | {per['grade']:.2f} | {per['learn']:.2f} | "
                        f"{per['learn'] / sum(per.values()):.0%} | {tok:.1f} |")
    sections += ["", "On this CPU, learning dominates a step, so ReMix's m = 2 passes over each batch cost wall time "
                 "that its fewer rollouts do not pay back. On a GPU with long reasoning responses, generation is "
                 "most of a step (the paper's setting; see docs/benchmarks/throughput.md for the split measured here), "
                 "so wall time there follows the rollout ratio above more closely than the wall-time ratio measured "
                 "here; it does not make a rollout saving out of a rollout ratio whose interval spans 1.", ""]

    # plots
    plot(cfg, bands, best, Path(cfg.out))
    plot_diagnostics(cfg, runs, best, Path(cfg.out))

    head = [
        "# Rollout efficiency: ReMix against tuned on-policy baselines",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()} (CPU platform): {len(runs)} runs "
        f"({n_forked} of them forked from a checkpoint of another), {wall_total / 3600:.2f} hours of run time in all "
        "(a resumed run counts its last invocation, a forked run its steps after the fork), two runs at a time with "
        f"one CPU thread each; {span / 3600:.2f} hours from the first run's start to the last run's end.",
        "",
        "Command (the same command reuses finished runs whose config matches and resumes interrupted ones):",
        "",
        f"    {command}",
        "",
        f"Shared settings: model `{t.model.name}`, task `{t.data.task}` (levels {list(t.data.arith_levels)}), "
        f"{cfg.steps} "
        f"steps, batch {t.batch_size} responses ({t.batch_size // t.rollout.group_size} prompts x "
        f"{t.rollout.group_size}), "
        f"mini-batch {t.mini_batch_size}, temperature {t.rollout.temperature:g}, {t.rollout.max_new_tokens} new "
        f"tokens, "
        f"grading `{t.grading}`, KL coefficient {t.objective.kl_coef:g}. ReMix: p = {t.remix.offpolicy_fraction} "
        f"({int(t.remix.offpolicy_fraction * t.batch_size)} of {t.batch_size} responses reused), N = "
        f"{t.remix.history_window}, m = {t.remix.utd_ratio}, T = {t.remix.reincarnation_step}, lam(t) from step "
        f"{t.remix.lambda_start}. Greedy held-out accuracy on {t.data.heldout_size} problems at the rollout grid "
        f"{list(cfg.grid)} (each point at the first step that reaches it) and at the end; lrs {list(cfg.lrs)}; "
        f"seeds {list(cfg.seeds)}, paired across methods. Every crossing is read by linear interpolation between "
        "evaluations; ratios are per seed (baseline rollouts over ReMix rollouts: > 1 means ReMix needed fewer), "
        "summarised by their median and a percentile-bootstrap 95% interval (10,000 resamples). A seed on which "
        "only one side reached a target counts as a ratio of 0 or inf; a table cell marked (k/n) had k of n seeds "
        "reach it, and its median counts the others as not yet there.",
        "",
        f"Code: git {', '.join(c[:12] for c in commits)}; "
        + "; ".join(", ".join(f"{k} {v}" for k, v in vs) for vs in versions) + ".",
        "",
        "## What the study shows (computed from the tables below)",
        "",
        *verdict,
        "",
        "![accuracy against rollouts](efficiency.png)",
        "",
    ]
    tail = ["## Diagnostics", "", "![diagnostics](efficiency_diagnostics.png)", "",
            "Per-run data: `efficiency.json` (every evaluation and per-step cost of every run, with its config, "
            "git commit "
            f"and package versions). The runs themselves are in `{cfg.runs_dir}/` (each with its log in "
            f"`{cfg.runs_dir}/logs/`) on the machine that ran them.", ""]
    write_report(Path(cfg.out), "efficiency", head + sections + tail, result)


def kl_magnitudes(group: list[dict], beta: float) -> tuple[float, float]:
    """The median over steps and seeds of beta * kl/ref, and of |loss/policy|: how much the KL term weighs."""
    kl = [beta * v for r in group for v in r["diagnostics"]["kl/ref"]]
    pg = [abs(v) for r in group for v in r["diagnostics"]["loss/policy"]]
    return statistics.median(kl), statistics.median(pg)


def ablation_onsets(cfg, base: list[dict], lam_name: str, lam_runs: list[dict]) -> str:
    """Where each removable part first acts, in steps and (median over seeds) rollouts: m and reincarnation in
    ReMix-GRPO's runs, KL-Convex in the runs of lam_name's schedule (if there are any)."""
    def rollouts_at(group: list[dict], step: int) -> float:
        return statistics.median(r["cost"]["rollouts"][step] for r in group)

    parts = ["m = 1 from the first update"]
    if lam_runs:
        step = next((k + 1 for k, v in enumerate(lam_runs[0]["diagnostics"]["kl_lambda"]) if v < 1), None)
        if step is not None:
            parts.append(f"KL-Convex (under '{lam_name}') from step {step}, about {rollouts_at(lam_runs, step):,.0f} "
                         "rollouts")
    step = next((k + 1 for k, v in enumerate(base[0]["diagnostics"]["reincarnated"]) if v), None)
    if step is not None and step < cfg.steps:
        parts.append(f"reincarnation from step {step + 1}, about {rollouts_at(base, step):,.0f} rollouts")
    return "; ".join(parts)


def ea_pairs(best: dict[str, float], pairs: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The (ReMix method, baseline) pairs of which both sides ran."""
    return [(m, b) for m, b in pairs if m in best and b in best]


def sweep_note(chosen: dict) -> str:
    """Which lrs the sweep began with, how it was extended, and where an optimum is still on an edge."""
    asked, lrs = list(chosen["lrs_asked"]), list(chosen["lrs"])
    note = f"The sweep began at lrs {', '.join(f'{lr:g}' for lr in asked)}"
    added = [lr for lr in lrs if lr not in asked]
    if added:
        note += (f" and was extended by {', '.join(f'{lr:g}' for lr in added)} (a method's optimum was at an edge; "
                 "--max-sweep-extensions)")
    low, high = chosen["edges"]
    if not (low or high):
        return note + ": every method's validation optimum is inside the sweep."
    parts = ([f"{', '.join(low)} at the lowest lr"] if low else []) + ([f"{', '.join(high)} at the highest"]
                                                                          if high else [])
    return note + ". **Still on an edge**: " + "; ".join(parts) + ", so that optimum may lie outside the sweep."


def ratios_by_lr(cfg, runs: dict, pairs: list[tuple[str, str]], lrs) -> list[dict[str, Any]]:
    """For each pair at each lr where both ran (the sweep's seeds): per target, each seed's rollout ratio baseline /
    ReMix (as the comparisons read it: inf where only ReMix got there, 0 where only the baseline did, None where
    neither did), and each side's final held-out accuracy per seed."""
    seeds = cfg.seeds[:cfg.sweep_seeds]
    out = []
    for m, b in pairs:
        for lr in lrs:
            gm = [runs.get((m, lr, s)) for s in seeds]
            gb = [runs.get((b, lr, s)) for s in seeds]
            if None in gm or None in gb:
                continue
            ratios = []
            for t in cfg.targets:
                per_seed = []
                for rm, rb in zip(gm, gb):
                    xm, xb = ea.crossing(rm["heldout"], t), ea.crossing(rb["heldout"], t)
                    per_seed.append(None if xm is None and xb is None else ea.paired_ratios([xb], [xm])[0])
                ratios.append(per_seed)
            out.append({"method": m, "baseline": b, "lr": lr, "targets": list(cfg.targets), "ratios": ratios,
                        "method_final": final_accuracy(gm), "baseline_final": final_accuracy(gb)})
    return out


def _ratio_cell(per_seed: list[float | None]) -> str:
    got = [v for v in per_seed if v is not None]
    if not got:
        return "neither"
    cells = ", ".join("-" if v is None else ("inf" if math.isinf(v) else f"{v:.2f}") for v in per_seed)
    return f"{statistics.median(got):.2f}x ({cells})" if all(math.isfinite(v) for v in got) else cells


def ratio_by_lr_section(cfg, by_lr: list[dict], target_names: list[str]) -> list[str]:
    seeds = list(cfg.seeds[:cfg.sweep_seeds])
    lines = ["## 5. The rollout ratio against the learning rate", "",
             f"Both methods of a pair at the same lr, for every lr of the sweep (seeds {seeds}, the sweep's runs: "
             "few seeds, so read the trend, not a cell). Per target: the median of the per-seed ratios baseline / "
             "ReMix (> 1: ReMix needed fewer rollouts) and each seed's ratio (inf: only ReMix reached it; 0: only "
             "the baseline; -: neither on that seed; neither: on no seed). Plot: efficiency_lr.png.", ""]
    for m, b in dict.fromkeys((row["method"], row["baseline"]) for row in by_lr):
        rows = [row for row in by_lr if (row["method"], row["baseline"]) == (m, b)]
        lines += [f"### {m} against {b}", "",
                  "| lr | " + " | ".join(f"ratio to {n}" for n in target_names) + f" | final {m} / {b} (%) |",
                  "|---|" + "---|" * len(target_names) + "---|"]
        for row in rows:
            final = f"{_pct(statistics.fmean(row['method_final']))} / {_pct(statistics.fmean(row['baseline_final']))}"
            lines.append(f"| {row['lr']:g} | " + " | ".join(_ratio_cell(r) for r in row["ratios"]) + f" | {final} |")
        lines.append("")
    return lines


def plot_ratio_by_lr(cfg, by_lr: list[dict], out: Path) -> None:
    """Median per-seed rollout ratio against lr, one panel per target, a line per pair; a point is drawn where
    every seed's ratio is finite (the tables give the others)."""
    from remix.plots import plt

    pairs = list(dict.fromkeys((row["method"], row["baseline"]) for row in by_lr))
    fig, axes = plt.subplots(1, len(cfg.targets), figsize=(4.6 * len(cfg.targets), 3.8), sharey=True, squeeze=False)
    for j, (ax, target) in enumerate(zip(axes[0], cfg.targets)):
        for i, (m, b) in enumerate(pairs):
            pts = [(row["lr"], statistics.median(row["ratios"][j])) for row in by_lr
                   if (row["method"], row["baseline"]) == (m, b) and row["ratios"][j]
                   and all(v is not None and math.isfinite(v) for v in row["ratios"][j])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{b} / {m}", color=f"C{i}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (the same for both)")
        ax.set_title(f"rollouts to {100 * target:.0f}% held-out: baseline / ReMix", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"median of {cfg.sweep_seeds} seeds' ratios")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "efficiency_lr.png", dpi=120)
    plt.close(fig)


def per_seed_table(cfg, m: str, b: str, gm: list[dict], gb: list[dict], rows: list[dict],
                   names: list[str]) -> list[str]:
    shown = list(range(len(cfg.targets)))
    lines = [f"Per seed, rollouts to each absolute target ({m} / {b}; '-' never reached):", "",
             "| seed | " + " | ".join(names[i] for i in shown) + f" | final {m} / {b} (%) |",
             "|---|" + "---|" * len(shown) + "---|"]

    def f(v):
        return "-" if v is None else f"{v:,.0f}"

    for j, seed in enumerate(cfg.seeds):
        cells = [f"{f(rows[i]['method_rollouts'][j])} / {f(rows[i]['baseline_rollouts'][j])}" for i in shown]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {_pct(gm[j]['heldout'][-1][1])} / "
                     f"{_pct(gb[j]['heldout'][-1][1])} |")
    return lines + [""]


def plot(cfg, bands: dict[str, list], best: dict[str, float], out: Path) -> None:
    from remix.plots import plt

    panels = []
    for m in dict.fromkeys(m for m, _ in ea_pairs(best, PAIRS + UTD_PAIRS)):
        against = [b for mm, b in ea_pairs(best, PAIRS + UTD_PAIRS) if mm == m]
        panels.append((f"{m} vs {' and '.join(against)}, each at its chosen lr", [m, *against]))
    ablation = [n for n in bands if n.startswith("ReMix-GRPO ") or n.startswith("ReMix-GRPO,")]
    if ablation:
        panels.append(("Ablations of ReMix-GRPO", ablation))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), sharey=True, squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for i, name in enumerate(names):
            band = bands[name]
            mid, lo, hi = ([100 * v[k] for v in band] for k in range(3))
            ax.plot(cfg.grid, mid, marker="o", markersize=3, label=name, color=f"C{i}")
            ax.fill_between(cfg.grid, lo, hi, alpha=0.15, color=f"C{i}")
        for y in cfg.targets:
            ax.axhline(100 * y, color="grey", linewidth=0.5, linestyle=":")
        ax.set_xlabel("rollouts (fresh responses generated)")
        ax.set_title(f"{title}\nmedian of {len(cfg.seeds)} seeds, band: 95% CI of the median", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("held-out accuracy (%)")
    fig.tight_layout()
    fig.savefig(out / "efficiency.png", dpi=120)
    plt.close(fig)


def plot_diagnostics(cfg, runs: dict, best: dict[str, float], out: Path) -> None:
    from remix.plots import plt

    keys = {"response_length/mean": "mean response length (tokens)", "ratio/mean": "mean importance ratio r",
            "clip_frac": "clip fraction (low + high)"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label) in zip(axes, keys.items()):
        for i, (name, lr) in enumerate(best.items()):
            group = seed_runs(cfg, runs, name, lr)
            per_step = [statistics.median(v) for v in zip(*(r["diagnostics"][key] for r in group))]
            ax.plot(range(1, len(per_step) + 1), per_step, label=f"{name} (lr {lr:g})", linewidth=1, color=f"C{i}")
        ax.set_title(f"{label}, median of seeds", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "efficiency_diagnostics.png", dpi=110)
    plt.close(fig)
