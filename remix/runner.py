"""One training run from a TrainConfig: set up, evaluate, train with progress output, save.

`scripts/run.py` is the command-line face of `run(cfg, platform)`: it resolves the platform
(platforms.get_platform) and hands it in, so the core never imports platforms/. The step itself lives in
`remix.trainer.Trainer`; this module wires the pieces together, decides when to evaluate and to
checkpoint, and writes the run directory. Under torchrun every process runs `run`; rank 0 alone decides
the run directory, prints and writes what is listed here (checkpoints are written by all ranks together):

    RUN_DIR/config.json     the full config
    RUN_DIR/metrics.jsonl   one record per step (and per evaluation)
    RUN_DIR/model/          the final policy as an HF folder (safetensors)
    RUN_DIR/accuracy.png    held-out accuracy against rollouts
    RUN_DIR/summary.json    accuracy before/after, rollouts, steps, wall time
    RUN_DIR/checkpoints/    the newest complete checkpoint(s): the same command resumes from it

A run may start from another run's checkpoint (--fork-from): it loads that state, copies the other run's metrics
through that step, and trains on with its own config.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from remix import distributed as dist
from remix.checkpoint import (
    checkpoint_dir,
    checkpoint_step,
    export_policy,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from remix.config import TrainConfig
from remix.data import ProblemSource, load_task
from remix.interfaces import Platform
from remix.plots import plot_accuracy_vs_rollouts
from remix.prompts import PromptConfig, encode_prompt
from remix.rewards.functions import BUILTIN as BUILTIN_REWARD
from remix.rewards import GraderPool
from remix.run_dir import (
    RunError,
    RunStart,
    choose_run_dir,
    config_json,
    forked_from_step,
    write_config,
    write_metrics_through,
)
from remix.tracking import MetricsLog, NoLog, eval_curve, eval_measure, read_metrics
from remix.trainer import EncodedProblem, Trainer


def say(*args, **kwargs) -> None:
    """print on rank 0 only: one progress line per job, not one per process."""
    if dist.is_main():
        print(*args, **kwargs, flush=True)


def encode_problems(tokenizer, problems, max_tokens: int, what: str, form: PromptConfig | None = None
                    ) -> list[EncodedProblem]:
    """Prompt ids of every problem in the prompt form `form` (default: the benchmark's); prompts over `max_tokens`
    are dropped, counted and reported."""
    form = form or PromptConfig()
    try:
        form.check_tokenizer(tokenizer)
    except ValueError as e:
        raise RunError(str(e)) from None
    kept = []
    for p in problems:
        ids = encode_prompt(tokenizer, p.problem, form)
        if len(ids) <= max_tokens:
            kept.append(EncodedProblem(p, ids))
    dropped = len(problems) - len(kept)
    if dropped:
        say(f"{what}: dropped {dropped} of {len(problems)} prompts longer than {max_tokens} tokens "
              "(--data.max-prompt-tokens)")
    if not kept:
        raise RunError(f"{what}: every prompt is longer than --data.max-prompt-tokens={max_tokens}; raise it")
    return kept


def step_line(m: dict[str, Any], steps: int) -> str:
    """The one-line progress report of a step."""
    parts = [
        f"step {m['step']}/{steps}",
        f"reward {m['reward/mean']:.3f}",
        *([f"heldout {m['heldout/reward']:.3f}"] if "heldout/reward" in m else []),
        f"rollouts {m['rollouts']}",
        f"len {m['response_length/mean']:.1f}",
        f"hist {m['historical_share']:.2f}",
        f"clip lo/hi {m['clip_frac/low']:.3f}/{m['clip_frac/high']:.3f}",
        f"kl ref/prev {m['kl/ref']:.2e}/" + (f"{m['kl/prev']:.2e}" if "kl/prev" in m else "-"),
        f"time gen/grade/learn {m['time/generate']:.1f}/{m['time/grade']:.1f}/{m['time/learn']:.1f}s",
    ]
    if m.get("reincarnated"):
        parts.append(f"reincarnated: the reference is now this policy; on-policy (p = 0, m = 1) from step "
                     f"{m['step'] + 1}")
    return " | ".join(parts)


def build_trainer(cfg: TrainConfig, platform: Platform, grader) -> Trainer:
    """The model (resolved and cached), the platform's Rollout and Learner, the data, as a Trainer."""
    from transformers import AutoTokenizer

    from remix.models import ModelNotFound, resolve_model

    # Data first: a bad file is reported before any model is built or loaded.
    d = cfg.data
    # The math reward grades the answer column; without it the column is checked only if named (it is the
    # user's rewards' to read), and a task without an answer column needs none.
    graded = BUILTIN_REWARD in cfg.reward
    answer_key = d.answer_key if graded or d.answer_key != "answer" else None
    train_problems, heldout_problems, validation_problems = load_task(
        d.task, d.path, d.heldout_size, d.arith_levels, d.validation_size, d.problem_key, answer_key, graded)
    if len(heldout_problems) < cfg.data.heldout_size:
        say(f"held-out split: {len(heldout_problems)} of {len(train_problems) + len(heldout_problems)} problems "
            f"(--data.heldout-size {cfg.data.heldout_size} capped at a fifth of the data)")
    # Rank 0 builds a built-in model into the cache; the other ranks then load that folder.
    model_dir = dist.on_main(lambda: resolve_model(cfg.model.name, cfg.model.cache_dir), errors=(ModelNotFound,))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # the rollout engines load theirs the same way
    form = d  # a PromptConfig: its errors name --data.* flags
    train = encode_problems(tokenizer, train_problems, d.max_prompt_tokens, "training set", form)
    heldout = encode_problems(tokenizer, heldout_problems, d.max_prompt_tokens, "held-out set", form)
    validation = encode_problems(tokenizer, validation_problems, d.max_prompt_tokens, "validation set", form) \
        if validation_problems else []
    # A static KV cache (CUDA, XLA) is sized once for the run from the longest prompt the run has, not from the
    # --data.max-prompt-tokens limit: every decode step attends over the whole cache (552 slots for the default
    # job's 30-token prompts made XLA's generation 3.7x slower than 104).
    longest = max(len(e.prompt_ids) for e in (*train, *heldout, *validation))
    # --lora.sync adapter (checked: only with --rollout.engine sglang, on cuda) is the one rollout option outside
    # --rollout.*: the engine must start with LoRA enabled for the adapter's rank and modules
    adapter_sync = {"lora": cfg.lora} if cfg.lora.sync == "adapter" else {}
    rollout = platform.make_rollout(model_dir, seed=cfg.seed + dist.rank(), dtype=cfg.model.dtype,
                                     options=cfg.rollout, prompt_tokens=longest, **adapter_sync)
    learner = platform.make_learner(model_dir, cfg)
    trainer = Trainer(cfg, rollout, learner, grader, tokenizer, ProblemSource(train, cfg.seed), heldout, validation)
    return trainer


class TrainingHalted(RuntimeError):
    """Training stopped on purpose (too many skipped updates); a checkpoint was written first."""


class Interrupted(RuntimeError):
    """SIGINT (Ctrl-C) or SIGTERM: the current step was finished and checkpointed, then the run stopped."""

    def __init__(self, signum: int, step: int, checkpointed: bool = True) -> None:
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        name = signal.Signals(signum).name
        super().__init__(f"interrupted at step {step} ({name}); checkpointed, run the same command to resume"
                         if checkpointed else f"interrupted ({name}) before anything was written")


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops where it is; the last checkpoint is where it resumes."""

    def __init__(self, signum: int) -> None:
        self.exit_code = 128 + signum
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}; the steps since the last "
                         "checkpoint are lost, the same command resumes from it")


@contextmanager
def finish_step_on_signal() -> Iterator[list[int]]:
    """The first SIGINT or SIGTERM is recorded (the loop finishes its step, checkpoints and stops); a second
    one stops at once (KeyboardInterrupt), losing the steps since the last checkpoint."""
    received: list[int] = []

    def handler(signum, frame):
        if received:
            raise StoppedAtOnce(signum)
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class CheckpointSchedule:
    """When the loop saves a checkpoint, and what it saved last: every --checkpoint-every steps, at the
    --checkpoint-steps, at the end, before a halt, and when a signal stops the run (unless that step is saved)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, last_saved: int | None, clock: Callable[[], float]) -> None:
        self.cfg, self.run_dir, self.last_saved = cfg, run_dir, last_saved
        self.clock = clock  # the run's training time so far, across invocations (kept in each checkpoint)

    def due(self, step: int) -> bool:
        every = self.cfg.checkpoint_every
        return step == self.cfg.steps or bool(every and step % every == 0) or step in self.cfg.checkpoint_steps

    def save(self, trainer: Trainer) -> None:
        save_checkpoint(trainer, self.run_dir, self.cfg.keep_checkpoints, self.cfg.checkpoint_steps, self.clock())
        self.last_saved = trainer.step

    def save_unsaved(self, trainer: Trainer) -> None:
        """Saves the trainer's step unless it is already the last one saved."""
        if self.last_saved != trainer.step:
            self.save(trainer)


def evaluation_due(cfg: TrainConfig, step: int, rollouts_before: int, rollouts_after: int) -> bool:
    """Held-out evaluation after this step: every --eval-every steps, at the end, and at the first step whose
    rollouts reach each of --eval-at-rollouts."""
    grid_point = any(rollouts_before < r <= rollouts_after for r in cfg.eval_at_rollouts)
    return step == cfg.steps or bool(cfg.eval_every and step % cfg.eval_every == 0) or grid_point


# How a run evaluates its policy before training; the efficiency study passes one that evaluates a shared base
# model once per worker process (bench/efficiency/initial_evaluation.py).
StartEvaluation = Callable[[TrainConfig, Trainer], dict[str, float]]


def evaluate_now(cfg: TrainConfig, trainer: Trainer) -> dict[str, float]:
    return trainer.evaluate()


def run(cfg: TrainConfig, platform: Platform, evaluate_start: StartEvaluation = evaluate_now) -> dict[str, Any]:
    """Trains as `cfg` says on `platform` and returns the summary (also written to RUN_DIR/summary.json).

    Resumes from the newest complete checkpoint in --run-dir when there is one (--resume auto). Under
    torchrun, joins the job's process group first (the platform names the collective backend).
    """
    dist.init(platform.DIST_BACKEND)
    try:
        with finish_step_on_signal() as signals:  # the whole run: a signal at any point ends it cleanly
            return _train(cfg, platform, signals, evaluate_start)
    finally:
        dist.shutdown()


def _train(cfg: TrainConfig, platform: Platform, signals: list[int], evaluate_start: StartEvaluation) -> dict[str, Any]:
    from remix.models import quiet_transformers

    def signalled() -> bool:  # a signal on any rank stops every rank at the same point
        return dist.sum_floats({"signals": float(len(signals))})["signals"] > 0

    def signum() -> int:
        return signals[0] if signals else signal.SIGTERM

    wall_start = time.time()
    quiet_transformers()
    main = dist.is_main()
    start: RunStart = dist.on_main(lambda: choose_run_dir(cfg), errors=(RunError,))
    run_dir = start.run_dir
    torch.manual_seed(cfg.seed)
    with GraderPool(cfg.grader_workers, cfg.grader_timeout_s, rewards=cfg.rewards()) as grader:
        trainer = build_trainer(cfg, platform, grader)  # bad data or model: stop before writing anything
        if signalled():
            raise Interrupted(signum(), trainer.step, checkpointed=False)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, cfg, start.saved_config, start.fork_from)
        processes = f" on {dist.world_size()} processes" if dist.world_size() > 1 else ""
        say(f"run {run_dir}: {cfg.algo} {cfg.variant} on {cfg.data.task} ({len(trainer.train.problems)} train / "
            f"{len(trainer.heldout)} held-out problems), model {cfg.model.name}, {cfg.steps} steps of "
            f"{cfg.batch_size} responses{processes}")
        before = _restore(trainer, start) if start.checkpoint is not None else None
        # the training time of the invocations before this one, as the checkpoint it starts from recorded it
        earlier_s = read_meta(start.checkpoint).get("elapsed_s", 0.0) if start.checkpoint is not None else 0.0
        checkpoints = CheckpointSchedule(cfg, run_dir, trainer.step if start.resume_from is not None else None,
                                         clock=lambda: earlier_s + time.time() - wall_start)
        log = MetricsLog(run_dir, cfg.loggers, config=config_json(cfg), append=start.checkpoint is not None) \
            if main else NoLog()
        with log:
            if before is None:
                before = {"step": 0, "rollouts": 0, **evaluate_start(cfg, trainer), "time/unix": round(time.time(), 3)}
                log.log(before)
                measure = eval_measure([before])
                say(f"held-out {measure} before training: {before[f'heldout/{measure}']:.3f}")
            if signalled():  # during the first evaluation: keep it, so that the same command goes on from here
                checkpoints.save_unsaved(trainer)
                raise Interrupted(signum(), trainer.step)
            _train_steps(cfg, trainer, log, checkpoints, signalled, signum)
    summary = dist.on_main(lambda: _finish(cfg, run_dir, trainer, before, start.resume_from, wall_start, earlier_s))
    dist.barrier()
    return summary


def _restore(trainer: Trainer, start: RunStart) -> dict[str, Any]:
    """Loads the checkpoint a resumed or forked run starts from and writes its metrics through that step (rank 0);
    returns the step-0 record (empty on other ranks, which write nothing)."""
    load_checkpoint(trainer, start.checkpoint)
    before: dict[str, Any] = {}
    if dist.is_main():
        records = write_metrics_through(start.metrics_source, start.run_dir, trainer.step)
        before = next(r for r in records if r["step"] == 0)
    say(f"{'resumed' if start.fork_from is None else 'forked'} from {start.checkpoint} (step {trainer.step}, "
        f"{trainer.rollouts} rollouts)")
    return before


def _train_steps(cfg: TrainConfig, trainer: Trainer, log, checkpoints: CheckpointSchedule,
                 signalled: Callable[[], bool], signum: Callable[[], int]) -> None:
    """The steps from the trainer's to --steps, each logged, evaluated and checkpointed when due; stops with a
    checkpoint after too many skipped updates (TrainingHalted) or a signal (Interrupted)."""
    main = dist.is_main()
    # disable=None: a bar on a terminal, none in logs and pipes (the per-step lines are the record there)
    with tqdm(total=cfg.steps, initial=trainer.step, desc="training", unit="step", dynamic_ncols=True,
              disable=None if main else True) as bar:
        while trainer.step < cfg.steps:
            rollouts_before = trainer.rollouts
            metrics = trainer.train_step()
            k = metrics["step"]
            if evaluation_due(cfg, k, rollouts_before, trainer.rollouts):
                metrics.update(trainer.evaluate())
            metrics["time/unix"] = round(time.time(), 3)  # wall-clock time the step was logged
            log.log(metrics)
            if main:
                bar.update(1)
                bar.write(step_line(metrics, cfg.steps), file=sys.stdout)
                sys.stdout.flush()  # one line per step even when stdout is a file or a pipe
            halt = trainer.consecutive_skips >= cfg.max_consecutive_skips  # the same on every rank
            if halt or checkpoints.due(k):
                checkpoints.save(trainer)
            if halt:
                raise TrainingHalted(
                    f"stopped after {trainer.consecutive_skips} consecutive updates were skipped for a non-finite "
                    f"loss or gradient (--max-consecutive-skips {cfg.max_consecutive_skips}); the state at step "
                    f"{k} is checkpointed in {checkpoint_dir(checkpoints.run_dir, k)}; the same command resumes "
                    "from there.")
            if k < cfg.steps and signalled():  # checked after any save: a signal during it counts too
                checkpoints.save_unsaved(trainer)
                raise Interrupted(signum(), k)
    checkpoints.save_unsaved(trainer)  # e.g. resumed a finished run with the same --steps


def _finish(cfg: TrainConfig, run_dir: Path, trainer: Trainer, before: dict[str, Any], resume_from: Path | None,
            wall_start: float, earlier_s: float) -> dict[str, Any]:
    """Rank 0: the final model folder, the plot and summary.json."""
    records = read_metrics(run_dir / "metrics.jsonl")
    export_policy(checkpoint_dir(run_dir, trainer.step), run_dir / "model")  # a copy of the final step's policy
    this_invocation = time.time() - wall_start
    plot_accuracy_vs_rollouts(records, run_dir / "accuracy.png",
                              f"{cfg.algo} {cfg.variant}, {cfg.model.name} on {cfg.data.task}")
    measure = eval_measure(records)  # accuracy (the math reward alone) or the mean of the --reward functions' sum
    summary = {
        f"heldout_{measure}_before": before[f"heldout/{measure}"],
        f"heldout_{measure}_after": eval_curve(records)[-1][1],
        "rollouts": trainer.rollouts,
        "steps": trainer.step,
        "wall_seconds": round(earlier_s + this_invocation, 1),  # every invocation's kept work
        "wall_seconds_this_invocation": round(this_invocation, 1),
        "resumed_from_step": None if resume_from is None else checkpoint_step(resume_from),
        "forked_from_step": forked_from_step(run_dir),
        "skipped_updates": sum(r.get("skipped/grad_norm", 0) for r in records),
        "algo": cfg.algo,
        "variant": cfg.variant,
        "model": cfg.model.name,
        "task": cfg.data.task,
        "seed": cfg.seed,
        "processes": dist.world_size(),
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sinks = "".join(f", {name}/" for name in cfg.loggers if (run_dir / name).is_dir())
    adapter = " (merged), adapter/" if (run_dir / "adapter").is_dir() else ""  # --lora.rank
    took = f"{summary['wall_seconds']:.0f}s" + (f" ({this_invocation:.0f}s in this invocation)" if earlier_s else "")
    print(f"held-out {measure} {summary[f'heldout_{measure}_before']:.3f} -> {summary[f'heldout_{measure}_after']:.3f} "
          f"with {trainer.rollouts} rollouts in {took}; model/{adapter}, metrics.jsonl{sinks}, accuracy.png and "
          f"summary.json in {run_dir}", flush=True)
    return summary
