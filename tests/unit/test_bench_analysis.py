"""The efficiency study's arithmetic (bench/efficiency/analysis.py) and its run bookkeeping
(bench/efficiency/study.py): interpolation, crossings, paired ratios, the bootstrap, the config check."""

from __future__ import annotations

import importlib
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from remix import schedule

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    return importlib.import_module(f"bench.efficiency.{name}")


@pytest.fixture(scope="module")
def ea():
    return _load("analysis")


@pytest.fixture(scope="module")
def bench():
    return _load("study")


CURVE = [(0, 0.20), (400, 0.24), (800, 0.32), (1200, 0.28), (1600, 0.36)]


def test_interpolate_is_linear_between_evaluations_and_never_extrapolates(ea):
    assert ea.interpolate(CURVE, 0) == 0.20
    assert ea.interpolate(CURVE, 200) == pytest.approx(0.22)
    assert ea.interpolate(CURVE, 1000) == pytest.approx(0.30)  # on the way down from 0.32 to 0.28
    assert ea.interpolate(CURVE, 1600) == 0.36
    assert ea.interpolate(CURVE, 1601) is None and ea.interpolate(CURVE, -1) is None
    assert ea.on_grid(CURVE, [0, 600, 2000]) == [0.20, pytest.approx(0.28), None]


def test_crossing_interpolates_the_first_time_the_target_is_reached(ea):
    assert ea.crossing(CURVE, 0.20) == 0.0
    assert ea.crossing(CURVE, 0.22) == pytest.approx(200.0)
    # 0.30 is first reached between 400 (0.24) and 800 (0.32), not read at the evaluation at 800
    assert ea.crossing(CURVE, 0.30) == pytest.approx(700.0)
    assert ea.crossing(CURVE, 0.34) == pytest.approx(1500.0)  # after the dip: 1200 (0.28) -> 1600 (0.36)
    assert ea.crossing(CURVE, 0.37) is None


def test_two_grids_give_the_same_crossing_of_the_same_underlying_line(ea):
    """The bias of reading at the first evaluation: two methods on the same straight line, evaluated on
    different rollout grids, must cross at the same rollouts when interpolated."""
    line = lambda x: 0.2 + x / 10_000  # noqa: E731
    a = [(x, line(x)) for x in range(0, 3001, 640)]
    b = [(x, line(x)) for x in range(0, 3001, 384)]
    assert ea.crossing(a, 0.3) == pytest.approx(1000.0) and ea.crossing(b, 0.3) == pytest.approx(1000.0)


def test_cumulative_cost_at_a_crossing(ea):
    xs, wall = [0, 40, 80, 120], [0.0, 1.0, 2.0, 4.0]
    assert ea.cumulative_at(xs, wall, 100) == pytest.approx(3.0)
    assert ea.cumulative_at(xs, wall, None) is None


def test_paired_ratios_keep_seeds_that_reached_on_one_side_only(ea):
    baseline = [800, None, 600, None, 0]
    method = [400, 500, None, None, 0]
    assert ea.paired_ratios(baseline, method) == [2.0, math.inf, 0.0, 1.0]  # seed 3 (neither got there) is left out
    with pytest.raises(ValueError):
        ea.paired_ratios([1], [1, 2])  # unpaired seeds are an error, not silently truncated


def test_bootstrap_interval_covers_the_median_and_shrinks_with_more_data(ea):
    small = [1.0, 1.5, 2.0, 0.8, 1.2]
    lo, hi = ea.bootstrap_interval(small)
    assert lo <= statistics.median(small) <= hi
    big = small * 20
    lo2, hi2 = ea.bootstrap_interval(big)
    assert hi2 - lo2 < hi - lo
    assert ea.bootstrap_interval(small, seed=3) == ea.bootstrap_interval(small, seed=3)  # seeded
    assert ea.bootstrap_interval([2.0] * 7) == (2.0, 2.0)
    m, lo3, hi3 = ea.median_interval([1.0, math.inf, 3.0])  # inf (only one side reached) is a valid value
    assert m == 3.0 and lo3 == 1.0 and hi3 == math.inf
    assert all(math.isnan(v) for v in ea.median_interval([]))


def test_bootstrap_interval_has_its_nominal_coverage(ea):
    """Of 200 samples of 15 from a known distribution, about 95% of the intervals hold the true median."""
    import random

    rng = random.Random(1)
    covered = 0
    for i in range(200):
        xs = [rng.gauss(0.0, 1.0) for _ in range(15)]
        lo, hi = ea.bootstrap_interval(xs, resamples=1000, seed=i)
        covered += lo <= 0.0 <= hi
    assert 0.88 <= covered / 200 <= 0.995


def test_choose_best_takes_the_highest_mean_score(ea):
    assert ea.choose_best({1e-5: [0.2, 0.3], 2e-5: [0.3, 0.3], 5e-5: [0.4, 0.1]}) == 2e-5
    assert ea.choose_best({1e-5: [0.3], 2e-5: [0.3]}) == 1e-5  # a tie goes to the smaller lr
    assert ea.mean_on_grid(CURVE, [0, 400, 2000]) == pytest.approx(0.22)  # 2000 is past the run: not counted


def test_config_differences(ea):
    saved = {"seed": 0, "optim": {"lr": 1e-5}, "run_dir": "a", "provenance": {"git_commit": "x"}}
    assert ea.config_differences(saved, {**saved, "run_dir": "b", "provenance": {}}, {"run_dir", "provenance"}) == []
    diffs = ea.config_differences(saved, {**saved, "optim": {"lr": 2e-5}}, {"run_dir", "provenance"})
    assert diffs == ["optim.lr: 1e-05 -> 2e-05"]


def test_binomial_se(ea):
    assert ea.binomial_se(0.3, 1024) == pytest.approx(0.01432, abs=1e-5)


def test_study_configs_differ_only_where_they_should(bench):
    cfg = bench.BenchConfig(seeds=(0, 1, 2), sweep_seeds=1)
    spec = bench.RunSpec("ReMix-GRPO w/o KL-Convex", 2e-5, 2)
    tc = bench.train_config(cfg, spec)
    assert tc.remix.kl_convex is False and tc.seed == 2 and tc.optim.lr == 2e-5 and tc.steps == cfg.steps
    assert tc.eval_at_rollouts == cfg.grid and tc.batch_size == cfg.train.batch_size
    assert str(tc.run_dir).endswith("remix-grpo-w-o-kl-convex-lr2e-05-seed2")
    assert tc.data.validation_size == 0  # not a sweep seed: no validation split needed
    sweep = bench.train_config(cfg, bench.RunSpec("GRPO", 2e-5, 0))
    assert sweep.data.validation_size == cfg.train.data.validation_size > 0 and sweep.variant == "onpolicy"
    lam = bench.train_config(cfg, bench.RunSpec(f"ReMix-GRPO, lam(t) from step {cfg.ablation_lambda_start}", 1e-5, 0))
    # the ablation's schedule gives KL-Convex weight before reincarnation
    assert schedule.kl_lambda(lam, lam.remix.reincarnation_step, None) < 1.0
    strong = bench.train_config(cfg, bench.RunSpec("ReMix-GRPO w/o KL-Convex, beta 0.5", 1e-5, 0))
    assert strong.objective.kl_coef == 0.5 and strong.remix.kl_convex is False
    assert lam.objective.kl_coef == cfg.train.objective.kl_coef  # only the beta pair changes beta
    default = bench.train_config(cfg, bench.RunSpec("ReMix-GRPO", 1e-5, 0))
    assert schedule.kl_lambda(default, default.remix.reincarnation_step, None) == 1.0
    # p = 0.4 of the batch is a whole number of groups, as the paper's p
    assert (tc.remix.offpolicy_fraction * tc.batch_size) % tc.rollout.group_size == 0


@pytest.mark.parametrize("algo", ["GRPO", "PPO"])
def test_the_m2_baseline_is_on_policy_training_with_two_passes(bench, algo):
    """'GRPO (m=2)' runs the ReMix loop, but every knob the loop reads (remix/schedule.py) is on-policy's except m:
    no reuse, no reincarnation, no KL-Convex weight, no precedent copy, at every step."""
    from remix.run_dir import config_json, flatten_config

    cfg = bench.BenchConfig(seeds=(0,))
    m2 = bench.train_config(cfg, bench.RunSpec(f"{algo} (m=2)", 1e-5, 0))
    plain = bench.train_config(cfg, bench.RunSpec(algo, 1e-5, 0))
    m2.validate()
    for reincarnated in (False, True):
        assert schedule.offpolicy_fraction(m2, reincarnated) == 0.0
    assert schedule.utd_ratio(m2, False) == 2 and schedule.utd_ratio(plain, False) == 1
    assert schedule.reincarnation_step(m2) is None and not schedule.uses_precedent(m2)
    assert all(schedule.kl_lambda(m2, t, None) == 1.0 for t in range(1, cfg.steps + 1))
    a, b = flatten_config(config_json(m2)), flatten_config(config_json(plain))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} - bench.NOT_THE_EXPERIMENT
    assert differ == {"variant", "remix.offpolicy_fraction", "remix.kl_convex", "remix.reincarnation_step"}
    assert m2.algo == plain.algo == algo.lower()


def test_the_sweep_extends_while_an_optimum_is_on_its_edge(bench, tmp_path, monkeypatch, capsys):
    """Validation peaks at lr 2.5e-6 for ReMix-GRPO: a sweep from (5e-6, 1e-5) adds 2.5e-6 (still the edge), then
    1.25e-6, where the optimum is inside; with one extension allowed it stays on the edge and says so."""
    from concurrent.futures import Future

    class Pool:
        def __init__(self):
            self.lrs = set()

        def submit(self, fn, tc):
            self.lrs.add(tc.optim.lr)
            done = Future()
            done.set_result({"heldout_accuracy_before": 0.2, "heldout_accuracy_after": 0.3, "rollouts": 40,
                             "this_call_seconds": 1.0})
            return done

    def choose(cfg):
        peak = {"ReMix-GRPO": 2.5e-6, "GRPO": 7e-6, "GRPO (m=2)": 7e-6}
        scores = {n: {lr: [-abs(math.log(lr / peak[n]))] * cfg.sweep_seeds for lr in cfg.lrs} for n in peak}
        return {n: max(sorted(s), key=lambda lr: s[lr][0]) for n, s in scores.items()}, scores

    monkeypatch.setattr(bench, "choose_lrs", choose)
    report = _load("report")
    for allowed, lrs, edges in ((2, (1.25e-6, 2.5e-6, 5e-6, 1e-5), ([], [])),
                                (1, (2.5e-6, 5e-6, 1e-5), (["ReMix-GRPO"], []))):
        cfg = bench.BenchConfig(runs_dir=tmp_path / str(allowed), steps=5, seeds=(0, 1), sweep_seeds=1,
                                lrs=(1e-5, 5e-6), methods=("grpo",), ablations=(), max_sweep_extensions=allowed)
        pool = Pool()
        chosen = bench._plan(cfg, pool)
        assert chosen["lrs"] == lrs and chosen["lrs_asked"] == (5e-6, 1e-5) and chosen["edges"] == edges
        assert pool.lrs == set(lrs) and chosen["best_lr"]["ReMix-GRPO"] == 2.5e-6
        assert {s.lr for s in chosen["sweep"]} == set(lrs)
        note = report.sweep_note(chosen)
        assert ("Still on an edge" in note) == bool(edges[0])
    assert "the sweep is extended to lrs 2.5e-06, 5e-06, 1e-05" in capsys.readouterr().out

    # a flat curve ties to the lowest lr but is no reason to extend; one strictly best at an end is
    flat = {"A": {1e-5: [0.0, 0.0], 2e-5: [0.0, 0.0]}, "B": {1e-5: [0.2, 0.3], 2e-5: [0.3, 0.3]}}
    assert bench.edge_methods(flat, (1e-5, 2e-5)) == ([], ["B"])


def test_a_finished_run_is_reused_only_with_the_same_config(bench, tmp_path):
    from remix.run_dir import config_json

    cfg = bench.BenchConfig(runs_dir=tmp_path, steps=5)
    tc = bench.train_config(cfg, bench.RunSpec("GRPO", 1e-5, 0))
    run_dir = Path(tc.run_dir)
    run_dir.mkdir(parents=True)
    assert not bench.finished(cfg, tc)  # nothing there yet
    (run_dir / "summary.json").write_text(json.dumps({"steps": 5}))
    saved = {**config_json(tc), "run_dir": "/elsewhere", "provenance": {"git_commit": "abc"}}
    (run_dir / "config.json").write_text(json.dumps(saved))
    assert bench.finished(cfg, tc)  # where it ran and its provenance are not the experiment
    (run_dir / "config.json").write_text(json.dumps({**saved, "batch_size": 64}))
    with pytest.raises(bench.StudyError, match="batch_size: 64 -> 40"):
        bench.finished(cfg, tc)
    (run_dir / "summary.json").write_text(json.dumps({"steps": 3}))
    assert not bench.finished(cfg, tc)  # unfinished: resumed, not reused


def test_phases_share_one_queue_without_repeats_or_finished_runs(bench, tmp_path, capsys):
    from concurrent.futures import Future

    from remix.run_dir import config_json

    class RecordingPool:  # what run_specs hands the worker processes, in order
        def __init__(self):
            self.run_dirs = []

        def submit(self, fn, tc):
            assert fn is bench._execute
            self.run_dirs.append(Path(tc.run_dir).name)
            done = Future()
            done.set_result({"heldout_accuracy_before": 0.2, "heldout_accuracy_after": 0.3, "rollouts": 40,
                             "this_call_seconds": 1.0})
            return done

    cfg = bench.BenchConfig(runs_dir=tmp_path, steps=5)
    a, b, c = (bench.RunSpec("GRPO", lr, 0) for lr in (1e-5, 2e-5, 5e-5))
    finished = bench.train_config(cfg, c)
    Path(finished.run_dir).mkdir(parents=True)
    (Path(finished.run_dir) / "summary.json").write_text(json.dumps({"steps": 5}))
    (Path(finished.run_dir) / "config.json").write_text(json.dumps(config_json(finished)))
    pool = RecordingPool()
    bench.run_specs(cfg, pool, [("first", [a, b, a]), ("second", [b, c])])
    assert pool.run_dirs == ["grpo-lr1e-05-seed0", "grpo-lr2e-05-seed0"]  # b once, c finished, in phase order
    out = capsys.readouterr().out
    assert "first: 0 of 2 runs finished earlier (or queued by a phase above), 2 to run" in out
    assert "second: 2 of 2 runs finished earlier (or queued by a phase above), 0 to run" in out
    assert out.count("] GRPO lr") == 2


def test_bad_study_flags_are_one_line_with_status_2(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bench.efficiency", "--sweep-seeds", "20",
                          "--runs-dir", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == ["error: --sweep-seeds: must be in 1..10"]
    assert not (tmp_path / "r").exists()


def _fake_run(bench, cfg, spec, speed: float) -> dict:
    """A run as read_run returns it, with accuracy rising linearly in rollouts at `speed` per 1,000."""
    per_step = 24 if spec.name.startswith("ReMix") else 40
    xs = [0] + [min(40 + per_step * (k - 1), 40 * k) for k in range(1, cfg.steps + 1)]
    acc = lambda x: min(0.2 + speed * x / 1000 + 0.002 * spec.seed, 0.5)  # noqa: E731
    evals = [x for x in xs if any(p <= x for p in cfg.grid)]
    curve = sorted({(x, acc(x)) for x in [0, *evals[::3], xs[-1]]})
    return {"name": spec.name, "lr": spec.lr, "seed": spec.seed, "run_dir": "r", "heldout": curve,
            "validation": curve, "wall_seconds": 100.0,
            "cost": {"rollouts": xs, "generate": [0.2 * k for k in range(len(xs))],
                     "grade": [0.01 * k for k in range(len(xs))], "learn": [0.5 * k for k in range(len(xs))],
                     "learner_tokens": [900 * k for k in range(len(xs))]},
            "diagnostics": {"response_length/mean": [30.0] * cfg.steps, "ratio/mean": [1.0] * cfg.steps,
                            "clip_frac": [0.0] * cfg.steps, "kl/ref": [0.01] * cfg.steps,
                            "loss/policy": [-0.01] * cfg.steps,
                            "reincarnated": [k == 50 for k in range(1, cfg.steps + 1)],
                            "kl_lambda": [1.0 if k <= 20 else 0.5 for k in range(1, cfg.steps + 1)]},
            "provenance": {"git_commit": "abc", "versions": {"torch": "2.13.0"}, "resumed": [],
                           "started": f"2026-12-04T08:{spec.seed:02d}:00"}, "config": {}}


def test_the_report_reads_a_faster_method_as_faster(bench, tmp_path):
    """The whole report on synthetic runs: ReMix-GRPO rises twice as fast per rollout as GRPO, so every
    rollout ratio must come out near 2 with an interval above 1, and the files must be written."""
    report = _load("report")
    out = tmp_path / "report"  # not there yet: the report makes it (the plots are written first)
    cfg = bench.BenchConfig(seeds=tuple(range(4)), sweep_seeds=2, lrs=(1e-5, 2e-5), steps=60, out=out,
                            methods=("grpo",))
    speeds = {"ReMix-GRPO": 0.1, "GRPO": 0.05, "GRPO (m=2)": 0.1}
    runs = {}
    specs = [bench.RunSpec(n, lr, s) for n in bench.method_table(cfg) for lr in cfg.lrs for s in cfg.seeds]
    for spec in specs:
        speed = speeds.get(spec.name, 0.08) * (1.2 if spec.lr == 2e-5 else 1.0)
        runs[(spec.name, spec.lr, spec.seed)] = _fake_run(bench, cfg, spec, speed)
    best, scores = {n: 2e-5 for n in speeds}, {n: {lr: [0.3, 0.3] for lr in cfg.lrs} for n in speeds}
    abl = [s for s in specs if s.name not in bench.METHODS and s.lr == 2e-5]
    chosen = {"best_lr": best, "validation_scores": scores, "ablations": abl, "lrs": cfg.lrs, "lrs_asked": cfg.lrs,
              "edges": bench.edge_methods(scores, cfg.lrs),
              "ablation_pairs": bench.ablation_pairs(cfg), "kl_schedule": bench.kl_schedule_name(cfg)}
    noise = {"run": {"name": "ReMix-GRPO", "lr": 2e-5, "seed": 0}, "problems": 1024, "greedy_accuracy": [0.3, 0.3],
             "greedy_repeats_identical": True, "sampled_accuracy": [0.2, 0.22], "sampled_sd": 0.014,
             "problem_sampling_se": {"256": 0.029, "1024": 0.014}}
    report.write_study_report(cfg, chosen, runs, noise, "python -m bench.efficiency")
    data = json.loads((out / "efficiency.json").read_text())
    rows = data["comparisons"]["best: ReMix-GRPO (lr 2e-05) vs GRPO (lr 2e-05)"]
    for row in rows[:len(cfg.targets)]:
        med, lo, _ = row["rollout_ratio"]
        assert med == pytest.approx(2.0, rel=0.1) and lo > 1
    text = (out / "efficiency.md").read_text()
    assert "fewer rollouts than GRPO" in text and (out / "efficiency.png").stat().st_size > 0
    # against the m = 2 baseline, which rises as fast per rollout: a ratio of about 1
    utd = data["comparisons"]["best: ReMix-GRPO (lr 2e-05) vs GRPO (m=2) (lr 2e-05)"]
    assert all(row["rollout_ratio"][0] == pytest.approx(1.0, rel=0.1) for row in utd[:len(cfg.targets)])
    # the ratio at each shared lr, on the sweep's seeds: about 2 against GRPO, about 1 against GRPO (m=2)
    by_lr = {(r["baseline"], r["lr"]): r for r in data["ratio_by_lr"]}
    assert set(by_lr) == {(b, lr) for b in ("GRPO", "GRPO (m=2)") for lr in cfg.lrs}
    for (b, _), row in by_lr.items():
        assert all(len(per_seed) == cfg.sweep_seeds for per_seed in row["ratios"])
        assert statistics.median(row["ratios"][0]) == pytest.approx(2.0 if b == "GRPO" else 1.0, rel=0.15)
    assert "## 5. The rollout ratio against the learning rate" in text and (out / "efficiency_lr.png").is_file()
    assert "every method's validation optimum is inside the sweep" in text  # flat scores: no edge to extend
    # seeds start a minute apart, each run takes 100 s: 3 min + 100 s from the first start to the last end
    assert "0.08 hours from the first run's start to the last run's end" in text
    # every ablation pair is reported, the KL pair at both KL coefficients, with where each part starts to act
    for removed, full in bench.ablation_pairs(cfg):
        assert f"ablation: {removed} vs {full}" in data["comparisons"]
    assert "ablation: ReMix-GRPO w/o KL-Convex, beta 0.5 vs ReMix-GRPO, lam(t) from step 20, beta 0.5" \
        in data["comparisons"]
    assert "KL-Convex (under 'ReMix-GRPO, lam(t) from step 20') from step 21" in text
    assert "reincarnation from step 51" in text and "the KL term beta x kl/ref is 1.0e-05" in text
    assert "Run from step 0, the wall-time ratio of such a row is the machine's own drift" in text


def test_the_ablations_wall_time_note_says_whether_rows_before_the_fork_are_copied():
    """A forked ablation's metrics through the fork are its base run's: its wall-time ratio there is 1.00x by
    construction, not the machine's drift, which only runs from step 0 measure."""
    note = _load("report").ablation_wall_time_note
    forked = {"provenance": {"forked_from": {"step": 20}}}
    from_zero = {"provenance": {}}
    assert "machine's own drift" in note([from_zero] * 3) and "forked" not in note([from_zero] * 3)
    assert "1.00x by construction too" in note([forked] * 2) and "drift" not in note([forked] * 2)
    mixed = note([forked, from_zero, from_zero])
    assert mixed.startswith("1 of the 3 ablation runs were forked") and "machine's own drift" in mixed


def test_report_only_without_runs_says_so_with_status_2(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bench.efficiency", "--report-only",
                          "--runs-dir", str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "runs of the lr sweep are not finished" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_ablations_fork_where_the_configs_compute_the_same(bench, tmp_path):
    """Each ablation starts from the configuration it shares the most steps with: lam(t) from step 20 is 1
    through step 20; without KL-Convex lam is 1 always, as the paper's schedule through step 50; without
    reincarnation the same through step T - 1 = 49 (reincarnation ends step 50). m = 1 differs from step 1."""
    cfg = bench.BenchConfig(runs_dir=tmp_path)
    kl = bench.kl_schedule_name(cfg)
    assert bench.forks(cfg) == {kl: ("ReMix-GRPO", 20), bench.NO_KL_CONVEX: ("ReMix-GRPO", 50),
                                bench.NO_KL_CONVEX + bench.beta_suffix(cfg): (kl + bench.beta_suffix(cfg), 20),
                                bench.NO_REINCARNATION: ("ReMix-GRPO", 49)}
    base = bench.train_config(cfg, bench.RunSpec("ReMix-GRPO", 1e-5, 3))
    fork = bench.train_config(cfg, bench.RunSpec(bench.NO_REINCARNATION, 1e-5, 3))
    assert base.checkpoint_steps == (20, 49, 50) and base.fork_from is None
    assert fork.fork_from == Path(base.run_dir) / "checkpoints" / "step-000049"
    plain = [bench.plain_config(cfg, bench.RunSpec(n, 1e-5, 0)) for n in ("ReMix-GRPO", bench.NO_UTD, "GRPO")]
    assert bench.same_through(plain[0], plain[1]) == 0 and bench.same_through(plain[0], plain[2]) == 0
    # a different lr is a different run from step 1
    other_lr = bench.plain_config(cfg, bench.RunSpec(bench.NO_REINCARNATION, 2e-5, 0))
    assert bench.same_through(plain[0], other_lr) == 0
    assert bench.train_config(bench.BenchConfig(runs_dir=tmp_path, fork_ablations=False),
                              bench.RunSpec(bench.NO_REINCARNATION, 1e-5, 3)).fork_from is None


def test_a_fork_waits_for_the_run_it_starts_from(bench, tmp_path, capsys):
    from concurrent.futures import Future

    order = []

    class FinishingPool:  # runs "finish" when handed over; a fork handed over before its base would be a bug
        def submit(self, fn, tc):
            if tc.fork_from is not None:
                assert (Path(tc.fork_from).parent.parent / "summary.json").is_file(), "fork before its base"
            order.append(Path(tc.run_dir).name)
            Path(tc.run_dir).mkdir(parents=True, exist_ok=True)
            (Path(tc.run_dir) / "summary.json").write_text(json.dumps({"steps": tc.steps}))
            if tc.checkpoint_steps:
                for step in tc.checkpoint_steps:
                    (Path(tc.run_dir) / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
            done = Future()
            done.set_result({"heldout_accuracy_before": 0.2, "heldout_accuracy_after": 0.3, "rollouts": 40,
                             "this_call_seconds": 1.0, "forked_from_step": None})
            return done

    cfg = bench.BenchConfig(runs_dir=tmp_path, workers=2, ablations=("reincarnation",))
    fork, base = bench.RunSpec(bench.NO_REINCARNATION, 1e-5, 0), bench.RunSpec("ReMix-GRPO", 1e-5, 0)
    other = bench.RunSpec("GRPO", 1e-5, 0)
    assert bench.forks(cfg) == {bench.NO_REINCARNATION: ("ReMix-GRPO", 49)}
    # with 49 steps or fewer the two compute the same throughout: nothing to fork
    assert bench.forks(bench.BenchConfig(runs_dir=tmp_path, steps=49, ablations=("reincarnation",))) == {}
    bench.run_specs(cfg, FinishingPool(), [("one", [fork, base, other])])
    assert order == ["remix-grpo-lr1e-05-seed0", "grpo-lr1e-05-seed0", "remix-grpo-w-o-reincarnation-lr1e-05-seed0"]
    # a base made without the checkpoint: the fork runs from step 0, and says so
    order.clear()
    lone = bench.RunSpec(bench.NO_REINCARNATION, 1e-5, 1)
    (tmp_path / "remix-grpo-lr1e-05-seed1").mkdir()
    (tmp_path / "remix-grpo-lr1e-05-seed1" / "summary.json").write_text("{}")
    bench.run_specs(cfg, FinishingPool(), [("two", [lone])])
    assert order == ["remix-grpo-w-o-reincarnation-lr1e-05-seed1"]
    assert "kept no checkpoint at this step): run from step 0" in capsys.readouterr().out
    with pytest.raises(bench.StudyError, match="neither finished nor queued"):
        bench.run_specs(cfg, FinishingPool(), [("three", [bench.RunSpec(bench.NO_REINCARNATION, 1e-5, 2)])])


def test_a_ratio_cell_shows_each_seed_and_says_where_neither_got_there():
    report = _load("report")
    assert report._ratio_cell([1.5, 2.5]) == "2.00x (1.50, 2.50)"
    assert report._ratio_cell([None, None]) == "neither"
    # one seed reached it on one side only: no finite median to print, each seed's value instead
    assert report._ratio_cell([math.inf, 1.2]) == "inf, 1.20"
    assert report._ratio_cell([None, 0.8]) == "0.80x (-, 0.80)"
