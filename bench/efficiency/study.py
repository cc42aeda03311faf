"""The rollout-efficiency study: ReMix against tuned on-policy baselines, over paired seeds, with ablations.

    python -m bench.efficiency                # the whole study on tiny-arith (172 runs, 2.24 hours on 2 cores,
                                                      # 2026-12-06, with other jobs on the cores for part of it)
    python -m bench.efficiency --report-only  # the report from the finished runs in --runs-dir
    python -m bench.efficiency --seeds 0 --sweep-seeds 1 --runs-dir runs/bench-efficiency-sample \
        --out runs/bench-efficiency-sample/report     # seed 0 of every configuration
    python -m bench.efficiency --help

The study, in the order it runs (two runs at a time, one CPU thread each):
  1. lr sweep: every method (ReMix-GRPO, GRPO, GRPO (m=2), ReMix-PPO, PPO, PPO (m=2)) at every --lrs, on the first
     --sweep-seeds seeds. Each method's lr is chosen on its own by mean validation accuracy over the rollout grid;
     the validation split is disjoint from the reported held-out split, which plays no part in any choice. While a
     method's choice is the lowest (highest) lr swept, the sweep is extended below (above) for every method
     (--max-sweep-extensions), so that every optimum is inside it and every lr is shared by all methods: the
     report reads the rollout ratio of each pair at every lr (section 5: ratio against lr).
  2. best against best: every method at its chosen lr on all --seeds (the sweep's runs are reused). The "(m=2)"
     baselines are on-policy training with ReMix's two passes over each batch and no reuse (p = 0): they say
     whether reusing old rollouts adds anything beyond more updates per rollout.
  3. same lr: each ReMix method also at the lr chosen for its plain on-policy baseline (a labelled comparison).
  4. ablations of ReMix-GRPO at its chosen lr (--ablations): no KL-Convex, compared both with ReMix-GRPO and,
     because with the paper's lam(t) (1 through step 50) KL-Convex has no weight before reincarnation at
     T = 50, with ReMix-GRPO whose lam(t) starts at step --ablation-lambda-start (the schedule in which
     KL-Convex has weight); that pair again at KL coefficient --ablation-kl-coef (at the shared 1e-3 the KL
     term is too small to move a run); m = 1; no reincarnation.
  5. evaluation noise: one finished run's final policy, evaluated greedily twice and sampled several times.

Every run evaluates held-out and validation accuracy at the same rollout counts (--grid, denser early;
each point is evaluated at the first step that reaches it, within one step of rollouts); every reading
interpolates linearly between evaluations (bench/efficiency/analysis.py). Seeds are paired: seed s of
every method has the same initial data order and sampling seed.

Ablations are forked (--no-fork-ablations: not): each starts from a checkpoint of the configuration it computes
the same as for the most steps, at the last such step (same_through: lam(t) from step 20 from ReMix-GRPO at step 20,
no KL-Convex from it at 50, no reincarnation at 49; its metrics through that step are the base run's), which the
base run keeps (--checkpoint-steps). Each worker process evaluates the base model's step 0 once for all its runs.

Runs go to --runs-dir/<configuration>-lr<lr>-seed<s>/. A finished run is reused only when its config.json
matches the config the study would run now (else the study stops and names the differing fields; nothing
is overwritten); an interrupted run resumes from its newest checkpoint. The report is OUT/efficiency.md
with efficiency.png, efficiency_diagnostics.png and efficiency.json (every run's curve, config, git
commit and package versions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import tyro


from bench.efficiency import analysis as ea

from remix.checkpoint import checkpoint_dir
from remix.config import TrainConfig
from remix.tracking import eval_curve, read_metrics

# On-policy training with ReMix's update-to-data ratio: the ReMix loop with no reuse (p = 0), no KL-Convex and no
# reincarnation is GRPO (PPO) making m = 2 passes of mini-batch updates over each fresh batch, as TRL's
# num_iterations = 2 and verl's ppo_epochs = 2 do (remix/schedule.py: nothing else tells the variants apart).
ON_POLICY_M2 = {"offpolicy_fraction": 0.0, "utd_ratio": 2, "kl_convex": False, "reincarnation_step": None}

# name -> (algo, variant, changes to ReMixConfig, changes to ObjectiveConfig)
METHODS = {
    "ReMix-GRPO": ("grpo", "remix", {}, {}),
    "GRPO": ("grpo", "onpolicy", {}, {}),
    "GRPO (m=2)": ("grpo", "remix", ON_POLICY_M2, {}),
    "ReMix-PPO": ("ppo", "remix", {}, {}),
    "PPO": ("ppo", "onpolicy", {}, {}),
    "PPO (m=2)": ("ppo", "remix", ON_POLICY_M2, {}),
}
# (ReMix method, its baseline): PAIRS against plain on-policy training (also compared at the baseline's lr),
# UTD_PAIRS against on-policy training with the same m = 2 (does reusing old rollouts add anything beyond more
# updates per rollout?).
PAIRS = (("ReMix-GRPO", "GRPO"), ("ReMix-PPO", "PPO"))
UTD_PAIRS = (("ReMix-GRPO", "GRPO (m=2)"), ("ReMix-PPO", "PPO (m=2)"))


Ablation = Literal["kl-convex", "utd", "reincarnation"]


NO_KL_CONVEX = "ReMix-GRPO w/o KL-Convex"
NO_UTD = "ReMix-GRPO w/o higher UTD (m=1)"
NO_REINCARNATION = "ReMix-GRPO w/o reincarnation"


def kl_schedule_name(cfg: BenchConfig) -> str:
    return f"ReMix-GRPO, lam(t) from step {cfg.ablation_lambda_start}"


def beta_suffix(cfg: BenchConfig) -> str:
    return f", beta {cfg.ablation_kl_coef:g}"


def ablations(cfg: BenchConfig) -> dict[str, tuple[str, str, dict, dict]]:
    """The chosen ablations, in the order they run: KL-Convex (the one the earlier study could not make act)
    first, then m = 1, then no reincarnation."""
    table: dict[str, tuple[str, str, dict, dict]] = {}
    if "kl-convex" in cfg.ablations:
        early = {"lambda_start": cfg.ablation_lambda_start, "lambda_every": cfg.ablation_lambda_every}
        table[kl_schedule_name(cfg)] = ("grpo", "remix", early, {})
        # plain KL to the reference: lam(t) is not used, so this one run serves both schedules
        table[NO_KL_CONVEX] = ("grpo", "remix", {"kl_convex": False}, {})
        if cfg.ablation_kl_coef is not None:
            # the same pair where the KL term is large enough to move the policy (see --ablation-kl-coef)
            beta = {"kl_coef": cfg.ablation_kl_coef}
            table[kl_schedule_name(cfg) + beta_suffix(cfg)] = ("grpo", "remix", early, beta)
            table[NO_KL_CONVEX + beta_suffix(cfg)] = ("grpo", "remix", {"kl_convex": False}, beta)
    if "utd" in cfg.ablations:
        table[NO_UTD] = ("grpo", "remix", {"utd_ratio": 1}, {})
    if "reincarnation" in cfg.ablations:
        table[NO_REINCARNATION] = ("grpo", "remix", {"reincarnation_step": None}, {})
    return table


def ablation_pairs(cfg: BenchConfig) -> list[tuple[str, str]]:
    """(ablation, the configuration it removes a part from), in report order: each removal at the shared beta
    against ReMix-GRPO, then the KL-Convex removal against the lam(t) schedule in which KL-Convex has weight."""
    pairs = [(n, "ReMix-GRPO") for n in ablations(cfg) if n in (NO_KL_CONVEX, NO_UTD, NO_REINCARNATION)]
    if "kl-convex" in cfg.ablations:
        pairs.append((NO_KL_CONVEX, kl_schedule_name(cfg)))
        if cfg.ablation_kl_coef is not None:
            pairs.append((NO_KL_CONVEX + beta_suffix(cfg), kl_schedule_name(cfg) + beta_suffix(cfg)))
    return pairs


def study_train_config() -> TrainConfig:
    """The shared training settings: tiny-arith at a batch that keeps p = 0.4 exact in whole groups
    (0.4 x 40 = 16 = 2 groups of 8). Each run takes 1-2 minutes on one core; the whole study (172 runs, two
    at a time, 40 of them forked) took 2.24 hours on 2 cores (2026-12-06, efficiency.md's header)."""
    t = TrainConfig(batch_size=40, mini_batch_size=20, micro_batch_size=20, checkpoint_every=20, eval_every=0,
                    grader_workers=1)
    return dataclasses.replace(t, data=dataclasses.replace(t.data, heldout_size=1024, validation_size=256))


@dataclass
class BenchConfig:
    seeds: tuple[int, ...] = tuple(range(10))
    """Seeds of every reported configuration (paired across configurations)."""
    sweep_seeds: int = 2
    """The lr sweep runs the first this many of --seeds."""
    lrs: tuple[float, ...] = (5e-6, 1e-5, 2e-5, 5e-5)
    """Learning rates swept for every method (extended, see --max-sweep-extensions)."""
    max_sweep_extensions: int = 2
    """While a method's validation optimum is the lowest (highest) lr swept, the sweep is extended for every method
    by one lr below (above) it, at half (twice) the edge, at most this many times; the report says where an
    optimum stayed on an edge."""
    steps: int = 80
    """Training steps of every run (ReMix reincarnates at --train.remix.reincarnation-step)."""
    grid: tuple[int, ...] = (0, 120, 240, 400, 640, 960, 1280, 1600, 2000, 2400)
    """The rollout counts at which every run is evaluated and read (denser early)."""
    targets: tuple[float, ...] = (0.24, 0.28, 0.32)
    """Absolute held-out accuracies for rollouts-to-target."""
    target_fractions: tuple[float, ...] = (0.75, 0.85, 0.95)
    """Targets as fractions of the on-policy baseline's median final held-out accuracy."""
    methods: tuple[str, ...] = ("grpo", "ppo")
    """Which comparisons to run (grpo: ReMix-GRPO vs GRPO; ppo: ReMix-PPO vs PPO)."""
    ablations: tuple[Ablation, ...] = ("kl-convex", "utd", "reincarnation")
    """Ablations of ReMix-GRPO to run (none: --ablations with no value)."""
    ablation_lambda_start: int = 20
    """The ablations' second schedule: lam(t) drops from this step (every --ablation-lambda-every steps)."""
    ablation_lambda_every: int = 5
    """With the defaults lam reaches its floor 0.5 at step 45, before reincarnation at 50."""
    ablation_kl_coef: float | None = 0.5
    """The KL-Convex pair is also run at this KL coefficient beta (None: not): at the shared beta of 1e-3 the KL
    term is about 1/1,000 of the policy loss (efficiency.md section 7), too small to show what KL-Convex does."""
    noise_samples: int = 4
    """Sampled (temperature 1) repeat evaluations of one checkpoint for the evaluation-noise measurement."""
    workers: int = 2
    """Runs at a time (each uses one CPU thread)."""
    fork_ablations: bool = True
    """Start each ablation from a checkpoint of the run it shares the most steps with, at the last step through
    which the two compute the same (see same_through); False: every run from step 0 (the same results, slower)."""
    report_only: bool = False
    """Write the report from the finished runs; run nothing."""
    runs_dir: Path = Path("runs/bench-efficiency")
    """Where the individual runs go."""
    out: Path = Path("docs/benchmarks")
    """Where efficiency.md, the plots and efficiency.json go."""
    train: TrainConfig = field(default_factory=study_train_config)
    """Shared training settings (model, task, batch, ...): the same for every configuration except lr."""

    def validate(self) -> None:
        from remix.validation import require

        self.train.validate()
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
        require(1 <= self.sweep_seeds <= len(self.seeds), "sweep_seeds", f"must be in 1..{len(self.seeds)}")
        require(len(self.lrs) >= 1 and all(lr > 0 for lr in self.lrs), "lrs", "must be > 0")
        require(self.max_sweep_extensions >= 0, "max_sweep_extensions", "must be >= 0")
        require(list(self.grid) == sorted(set(self.grid)) and self.grid and self.grid[0] == 0, "grid",
                "must start at 0 and increase")
        require(all(0 < t <= 1 for t in self.targets + self.target_fractions), "targets",
                "targets and target fractions must be in (0, 1]")
        require(set(self.methods) <= {"grpo", "ppo"} and self.methods, "methods", "must be grpo and/or ppo")
        require(self.workers >= 1, "workers", "must be >= 1")
        require(self.noise_samples >= 2, "noise_samples", "must be >= 2")
        require(self.ablation_kl_coef is None or self.ablation_kl_coef > 0, "ablation_kl_coef", "must be > 0")


@dataclass(frozen=True)
class RunSpec:
    name: str
    lr: float
    seed: int


def method_table(cfg: BenchConfig) -> dict[str, tuple[str, str, dict, dict]]:
    table = {k: v for k, v in METHODS.items() if v[0] in cfg.methods}
    if "grpo" in cfg.methods:
        table.update(ablations(cfg))
    return table


def slug(name: str) -> str:
    s = "".join(c if c.isalnum() else "-" for c in name.lower())
    while "--" in s:
        s = s.replace("--", "-")
    return s.strip("-")


def run_dir_of(cfg: BenchConfig, spec: RunSpec) -> Path:
    return cfg.runs_dir / f"{slug(spec.name)}-lr{spec.lr:g}-seed{spec.seed}"


def train_config(cfg: BenchConfig, spec: RunSpec) -> TrainConfig:
    """The run of `spec`: the study's settings, the configuration's changes, and where forks are used, the
    checkpoint it starts from (--fork-from) or the steps at which others start from it (--checkpoint-steps)."""
    tc = plain_config(cfg, spec)
    if not cfg.fork_ablations:
        return tc
    table = forks(cfg)
    keep = tuple(sorted({step for base, step in table.values() if base == spec.name}))
    fork = None
    if spec.name in table:
        base, step = table[spec.name]
        fork = checkpoint_dir(run_dir_of(cfg, RunSpec(base, spec.lr, spec.seed)), step)
    return dataclasses.replace(tc, checkpoint_steps=keep, fork_from=fork)


def plain_config(cfg: BenchConfig, spec: RunSpec) -> TrainConfig:
    algo, variant, remix, objective = method_table(cfg)[spec.name]
    base = cfg.train
    if spec.seed not in cfg.seeds[:cfg.sweep_seeds]:
        # Only the sweep's seeds choose the lr: the others skip the validation split (greedy evaluation draws
        # no random numbers, so this changes nothing in training, only the time spent evaluating).
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, validation_size=0))
    return dataclasses.replace(
        base, algo=algo, variant=variant, seed=spec.seed, steps=cfg.steps, eval_at_rollouts=tuple(cfg.grid),
        optim=dataclasses.replace(base.optim, lr=spec.lr),
        remix=dataclasses.replace(base.remix, **remix) if remix else base.remix,
        objective=dataclasses.replace(base.objective, **objective) if objective else base.objective,
        run_dir=run_dir_of(cfg, spec),
    )


# Config fields that say where or how a run was executed, not what it computes (a fork computes what the same
# run from step 0 computes: the study forks only where same_through says so).
NOT_THE_EXPERIMENT = {"run_dir", "model.cache_dir", "provenance", "grader_workers", "loggers", "resume",
                      "checkpoint_every", "keep_checkpoints", "checkpoint_steps", "fork_from"}

# The fields of lam(t), KL-Convex's weight schedule.
LAMBDA_FIELDS = {"remix.kl_convex", "remix.lambda_start", "remix.lambda_every", "remix.lambda_decay",
                 "remix.lambda_floor", "remix.restart_lambda_clock"}


def same_through(a: TrainConfig, b: TrainConfig) -> int:
    """The last step through which runs a and b compute the same (0: they differ from their first step).

    Only ReMix runs that differ in lam(t)'s fields and in the reincarnation step T count: step t's loss uses lam(t)
    alone (at lam = 1 the precedent policy takes no part, remix.trainer), and reincarnation happens at the end of
    step T (so a run's checkpoint at T is already reincarnated: they are the same through T - 1). Any other
    difference (lr, m, beta, the variant, ...) changes the first step."""
    from remix import schedule
    from remix.run_dir import config_json, flatten_config

    fa, fb = flatten_config(config_json(a)), flatten_config(config_json(b))
    differ = {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)} - NOT_THE_EXPERIMENT
    if a.variant != "remix" or b.variant != "remix" or not differ <= LAMBDA_FIELDS | {"remix.reincarnation_step"}:
        return 0
    last = min(a.steps, b.steps)
    if "remix.reincarnation_step" in differ:
        steps = (schedule.reincarnation_step(a), schedule.reincarnation_step(b))
        last = min(last, min(t for t in steps if t is not None) - 1)

    def reincarnated_at(c: TrainConfig, t: int) -> int | None:  # as the trainer holds it during step t
        T = schedule.reincarnation_step(c)
        return T if T is not None and t > T else None

    for t in range(1, last + 1):
        if schedule.kl_lambda(a, t, reincarnated_at(a, t)) != schedule.kl_lambda(b, t, reincarnated_at(b, t)):
            return t - 1
    return last


_forks: dict[str, dict[str, tuple[str, int]]] = {}


def forks(cfg: BenchConfig) -> dict[str, tuple[str, int]]:
    """ablation -> (the configuration it starts from, step): of the configurations that run before it and are not
    forks themselves, the one it computes the same as for the most steps (the earliest on a tie), where that is at
    least one step and fewer than --steps, and the saved state has what the ablation needs (KL-Convex's precedent
    policy)."""
    key = repr(cfg)
    if key not in _forks:
        from remix.schedule import uses_precedent

        table, names = {}, list(method_table(cfg))
        for i, name in enumerate(names):
            if name in METHODS:
                continue
            mine = plain_config(cfg, RunSpec(name, cfg.lrs[0], cfg.seeds[0]))
            best = (0, "")
            for base in names[:i]:
                theirs = plain_config(cfg, RunSpec(base, cfg.lrs[0], cfg.seeds[0]))
                if base in table or (uses_precedent(mine) and not uses_precedent(theirs)):
                    continue
                best = max(best, (same_through(theirs, mine), base), key=lambda x: x[0])
            if 1 <= best[0] < cfg.steps:  # at --steps it would have nothing of its own to compute
                table[name] = (best[1], best[0])
        _forks[key] = table
    return _forks[key]


class StudyError(ValueError):
    """The runs directory holds a run that does not match what the study would run (message says which)."""


def finished(cfg: BenchConfig, tc: TrainConfig) -> bool:
    """Whether tc's run is finished with the same config; raises StudyError on a finished mismatch."""
    from remix.run_dir import config_json

    run_dir = Path(tc.run_dir)
    summary = run_dir / "summary.json"
    if not summary.exists() or json.loads(summary.read_text())["steps"] < cfg.steps:
        return False
    diffs = ea.config_differences(json.loads((run_dir / "config.json").read_text()), config_json(tc),
                                  NOT_THE_EXPERIMENT)
    if diffs:
        raise StudyError(f"{run_dir}: a finished run with another config ({'; '.join(diffs[:4])}); move it away or "
                         "choose another --runs-dir")
    return True


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["TQDM_DISABLE"] = "1"


def _execute(tc: TrainConfig) -> dict[str, Any]:
    """One run in a worker process, its output in RUNS_DIR/logs/<run>.log. Every run starts from the same base
    model: each process evaluates its step 0 once (bench/efficiency/initial_evaluation.py)."""
    from bench.efficiency.initial_evaluation import once_per_process
    from platforms import get_platform
    from remix.checkpoint import list_checkpoints
    from remix.runner import run

    run_dir = Path(tc.run_dir)
    if run_dir.exists() and not list_checkpoints(run_dir):
        shutil.rmtree(run_dir)  # interrupted before its first checkpoint: nothing to resume, start it again
    logs = run_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(logs / f"{run_dir.name}.log", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        summary = run(tc, get_platform(tc.platform), evaluate_start=once_per_process)
    return {**summary, "this_call_seconds": time.time() - start}


def worker_pool(cfg: BenchConfig) -> ProcessPoolExecutor:
    """The study's processes, kept for all its phases: each imports torch and compiles the objective once."""
    return ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"), initializer=_init_worker)


def run_specs(cfg: BenchConfig, pool: ProcessPoolExecutor, phases: list[tuple[str, list[RunSpec]]]) -> None:
    """Runs the unfinished runs of every phase, in order, in one queue of --workers at a time (so that no
    worker waits for the end of a phase another needs nothing of), with a progress line per run. A fork waits
    until the run it starts from is finished; one whose checkpoint is missing (a base run made without
    --checkpoint-steps) runs from step 0."""
    todo, queued = [], set()
    for what, specs in phases:
        fresh = []
        for spec in dict.fromkeys(specs):
            tc = train_config(cfg, spec)
            if spec not in queued and not finished(cfg, tc):
                fresh.append((spec, tc))
                queued.add(spec)
        print(f"{what}: {len(set(specs)) - len(fresh)} of {len(set(specs))} runs finished earlier (or queued by "
              f"a phase above), {len(fresh)} to run", flush=True)
        todo += fresh
    if not todo:
        return
    start, done, total = time.time(), 0, len(todo)
    running: dict[Any, tuple[RunSpec, TrainConfig]] = {}
    waiting_on = {Path(tc.run_dir) for _, tc in todo}  # unfinished: a fork of one of these waits
    while todo or running:
        i = 0
        while len(running) < cfg.workers and i < len(todo):
            spec, tc = todo[i]
            base = None if tc.fork_from is None else Path(tc.fork_from).parent.parent
            if base is not None and base in waiting_on:
                i += 1
                continue
            todo.pop(i)
            if base is not None and not Path(tc.fork_from).is_dir():
                if not (base / "summary.json").is_file():
                    raise StudyError(f"{tc.run_dir}: starts from {base}, which is neither finished nor queued")
                print(f"  {spec.name} lr {spec.lr:g} seed {spec.seed}: {tc.fork_from} is not there (that run kept no "
                      "checkpoint at this step): run from step 0", flush=True)
                tc = dataclasses.replace(tc, fork_from=None)
            running[pool.submit(_execute, tc)] = (spec, tc)
        finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished_now:
            (spec, tc), s = running.pop(fut), fut.result()
            waiting_on.discard(Path(tc.run_dir))
            done += 1
            eta = (time.time() - start) / done * (total - done)
            forked = f" (forked at step {s['forked_from_step']})" if s.get("forked_from_step") else ""
            print(f"  [{done}/{total}] {spec.name} lr {spec.lr:g} seed {spec.seed}: held-out "
                  f"{s['heldout_accuracy_before']:.3f} -> {s['heldout_accuracy_after']:.3f} with {s['rollouts']} "
                  f"rollouts in {s['this_call_seconds']:.0f}s{forked}; about {eta / 60:.0f} min left", flush=True)


# --- reading runs ------------------------------------------------------------------------------------


def read_run(cfg: BenchConfig, spec: RunSpec) -> dict[str, Any]:
    """A finished run as data: curves, cumulative costs per step, config and provenance."""
    run_dir = Path(train_config(cfg, spec).run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r for r in records if r["step"] >= 1]
    cost = {"rollouts": [0], "generate": [0.0], "grade": [0.0], "learn": [0.0], "learner_tokens": [0]}
    for r in steps:
        cost["rollouts"].append(r["rollouts"])
        for phase in ("generate", "grade", "learn"):
            cost[phase].append(cost[phase][-1] + r[f"time/{phase}"])
        cost["learner_tokens"].append(cost["learner_tokens"][-1] + r["learner/tokens"])
    saved = json.loads((run_dir / "config.json").read_text())
    wall = json.loads((run_dir / "summary.json").read_text())["wall_seconds"]
    return {
        "name": spec.name, "lr": spec.lr, "seed": spec.seed, "run_dir": str(run_dir),
        "heldout": eval_curve(records), "validation": eval_curve(records, "validation"), "cost": cost,
        "wall_seconds": wall,
        "diagnostics": {k: [r[k] for r in steps] for k in ("response_length/mean", "ratio/mean", "kl_lambda",
                                                            "reincarnated", "loss/policy")}
        | {"clip_frac": [r["clip_frac/low"] + r["clip_frac/high"] for r in steps],
           "kl/ref": [r.get("kl/ref", 0.0) for r in steps]},
        "provenance": saved.pop("provenance"), "config": saved,
    }


def choose_lrs(cfg: BenchConfig) -> tuple[dict[str, float], dict[str, dict[float, list[float]]]]:
    """Each method's lr, by mean validation accuracy over the grid (sweep seeds only); and the scores."""
    scores: dict[str, dict[float, list[float]]] = {}
    for name in (n for n in METHODS if n in method_table(cfg)):
        scores[name] = {lr: [ea.mean_on_grid(read_run(cfg, RunSpec(name, lr, s))["validation"], cfg.grid)
                             for s in cfg.seeds[:cfg.sweep_seeds]] for lr in cfg.lrs}
    return {name: ea.choose_best(by_lr) for name, by_lr in scores.items()}, scores


def edge_methods(scores: dict[str, dict[float, list[float]]], lrs: list[float] | tuple[float, ...]
                 ) -> tuple[list[str], list[str]]:
    """The methods whose validation score is highest at the lowest lr swept, and those at the highest, strictly
    above the next lr in (a flat curve, whose tie goes to the lower lr, is no reason to sweep further): their
    optimum may lie outside the sweep."""
    import statistics

    lrs = sorted(lrs)
    if len(lrs) < 2:
        return [], []

    def edge(by_lr: dict[float, list[float]], end: float, inner: float) -> bool:
        mean = {lr: statistics.fmean(v) for lr, v in by_lr.items()}
        return mean[end] == max(mean.values()) and mean[end] > mean[inner]

    return ([n for n, by_lr in scores.items() if edge(by_lr, lrs[0], lrs[1])],
            [n for n, by_lr in scores.items() if edge(by_lr, lrs[-1], lrs[-2])])


def require_finished(cfg: BenchConfig, specs: list[RunSpec], what: str) -> None:
    missing = [s for s in specs if not finished(cfg, train_config(cfg, s))]
    if missing:
        m = missing[0]
        raise StudyError(f"--report-only: {len(missing)} runs of {what} are not finished in {cfg.runs_dir} (e.g. "
                         f"{m.name} lr {m.lr:g} seed {m.seed}); run the study without --report-only first")


def plan(cfg: BenchConfig) -> dict[str, Any]:
    """Runs every phase (or, with --report-only, checks they are there) and returns what was chosen."""
    with contextlib.ExitStack() as stack:
        pool = None if cfg.report_only else stack.enter_context(worker_pool(cfg))
        return _plan(cfg, pool)


def _plan(cfg: BenchConfig, pool: ProcessPoolExecutor | None) -> dict[str, Any]:
    table = method_table(cfg)
    methods = [n for n in METHODS if n in table]
    asked, lrs, extensions = tuple(sorted(cfg.lrs)), sorted(cfg.lrs), 0
    while True:
        swept = dataclasses.replace(cfg, lrs=tuple(lrs))
        sweep = [RunSpec(n, lr, s) for s in cfg.seeds[:cfg.sweep_seeds] for lr in lrs for n in methods]
        if pool is not None:
            run_specs(swept, pool, [("1. lr sweep" + (f", extension {extensions}" if extensions else ""), sweep)])
        else:
            require_finished(swept, sweep, "the lr sweep")
        best, scores = choose_lrs(swept)
        low, high = edge_methods(scores, lrs)
        if not (low or high) or extensions == cfg.max_sweep_extensions:
            break
        extensions += 1
        lrs = ([lrs[0] / 2] if low else []) + lrs + ([lrs[-1] * 2] if high else [])
        print("the sweep is extended to lrs " + ", ".join(f"{lr:g}" for lr in lrs) + ": the validation optimum of "
              + ", ".join(low + high) + " is at an edge", flush=True)
    cfg = swept
    print("chosen on validation: " + ", ".join(f"{n} lr {lr:g}" for n, lr in best.items()), flush=True)
    main = [RunSpec(n, best[n], s) for s in cfg.seeds for n in methods]
    same = [RunSpec(r, best[b], s) for s in cfg.seeds for r, b in PAIRS if r in best and b in best]
    # The KL-Convex pair first (the ablation the earlier study could not run), then m = 1, then no reincarnation.
    abl = [RunSpec(n, best["ReMix-GRPO"], s) for n in ablations(cfg) for s in cfg.seeds] if "grpo" in cfg.methods \
        else []
    if pool is not None and cfg.fork_ablations and forks(cfg):
        print("forks (an ablation starts from a checkpoint of the run it computes the same as through that step): "
              + "; ".join(f"{n} from {b} at step {k}" for n, (b, k) in forks(cfg).items()), flush=True)
    if pool is not None:  # all three need only the chosen lrs: one queue
        run_specs(cfg, pool, [("2. best against best", main), ("3. same lr", same), ("4. ablations", abl)])
    else:
        require_finished(cfg, main + same, "the main comparison")
        complete = {n for n in {s.name for s in abl}
                    if all(finished(cfg, train_config(cfg, s)) for s in abl if s.name == n)}
        for n in sorted({s.name for s in abl} - complete):
            print(f"--report-only: ablation '{n}' has unfinished seeds and is left out of the report", flush=True)
        abl = [s for s in abl if s.name in complete]
    return {"best_lr": best, "validation_scores": scores, "lrs": tuple(lrs), "lrs_asked": asked,
            "edges": edge_methods(scores, lrs), "sweep": sweep, "main": main, "same_lr": same, "ablations": abl,
            "ablation_pairs": ablation_pairs(cfg), "kl_schedule": kl_schedule_name(cfg)}


# --- evaluation noise ----------------------------------------------------------------------------------


def evaluation_noise(cfg: BenchConfig, spec: RunSpec) -> dict[str, Any]:
    """The final policy of one run, evaluated on the held-out split: greedily twice (is the measurement
    deterministic?), sampled at temperature 1 --noise-samples times (its spread), and the standard error from
    the finite number of problems (bootstrap over problems of the greedy per-problem scores)."""
    import random
    import statistics

    from platforms import get_platform
    from remix.data import load_task
    from remix.interfaces import SamplingParams
    from remix.rewards import GraderPool
    from remix.runner import encode_problems

    tc = train_config(cfg, spec)
    model_dir = Path(tc.run_dir) / "model"
    _, heldout, _ = load_task(tc.data.task, tc.data.path, tc.data.heldout_size, tc.data.arith_levels)
    rollout = get_platform("cpu").make_rollout(model_dir, seed=1234, options=tc.rollout)
    problems = encode_problems(rollout.tokenizer, heldout, tc.data.max_prompt_tokens, "held-out set")

    def scores(temperature: float) -> list[float]:
        params = SamplingParams(temperature=temperature, max_new_tokens=tc.rollout.max_new_tokens, n=1)
        texts = []
        for s in range(0, len(problems), 128):
            gens = rollout.generate([e.prompt_ids for e in problems[s:s + 128]], params)
            texts += [rollout.tokenizer.decode(g[0].token_ids, skip_special_tokens=True) for g in gens]
        return grader.grade(texts, [e.problem.answer for e in problems]).scores

    with GraderPool(1, tc.grader_timeout_s, rule=tc.grading) as grader:
        greedy = [scores(0.0) for _ in range(2)]
        sampled = [statistics.fmean(scores(1.0)) for _ in range(cfg.noise_samples)]
    per_problem = greedy[0]
    rng = random.Random(0)
    boot = {}
    for n in sorted({256, len(per_problem)}):
        means = [statistics.fmean(rng.choices(per_problem, k=n)) for _ in range(2000)]
        boot[str(n)] = statistics.stdev(means)  # str keys, as JSON reads them back
    return {
        "run": spec.__dict__, "problems": len(per_problem),
        "greedy_accuracy": [statistics.fmean(g) for g in greedy], "greedy_repeats_identical": greedy[0] == greedy[1],
        "sampled_accuracy": sampled, "sampled_sd": statistics.stdev(sampled) if len(sampled) > 1 else math.nan,
        "problem_sampling_se": boot,
    }


def main(cfg: BenchConfig) -> None:
    # --report-only is left out: the same command runs what is missing and writes the same report
    command = "python -m bench.efficiency " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    chosen = plan(cfg)
    cfg = dataclasses.replace(cfg, lrs=chosen["lrs"])  # the sweep as run, extensions included
    noise_spec = RunSpec("ReMix-GRPO" if "grpo" in cfg.methods else "ReMix-PPO",
                         chosen["best_lr"]["ReMix-GRPO" if "grpo" in cfg.methods else "ReMix-PPO"], cfg.seeds[0])
    noise_path = cfg.runs_dir / "evaluation_noise.json"
    if noise_path.exists() and json.loads(noise_path.read_text())["run"] == noise_spec.__dict__:
        noise = json.loads(noise_path.read_text())
    else:
        print("5. evaluation noise: repeat evaluations of one final policy", flush=True)
        noise = evaluation_noise(cfg, noise_spec)
        noise_path.write_text(json.dumps(noise, indent=1) + "\n")
    from bench.efficiency.report import write_study_report  # imported here: the runs need none of its plotting

    specs = [spec for key in ("sweep", "main", "same_lr", "ablations") for spec in chosen[key]]
    runs = {(spec.name, spec.lr, spec.seed): read_run(cfg, spec) for spec in specs}
    write_study_report(cfg, chosen, runs, noise, command.strip())


def cli() -> None:
    """`python -m bench.efficiency`: a bad value is one line naming the flag, exit status 2."""
    from remix.validation import ConfigError, deferred_validation

    with deferred_validation():
        config = tyro.cli(BenchConfig, description=__doc__)
    try:
        config.validate()
        main(config)
    except (ConfigError, StudyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
