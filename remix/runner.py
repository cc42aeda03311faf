"""One training run from a TrainConfig: set up, evaluate, train with progress output, save.

`scripts/run.py` is the command-line face of `run(cfg)`; benchmarks call `run` directly. The step
itself lives in `remix.trainer.Trainer`; this module only wires the pieces together and writes the
run directory:

    RUN_DIR/config.json     the full config
    RUN_DIR/metrics.jsonl   one record per step (and per evaluation)
    RUN_DIR/model/          the final policy as an HF folder (safetensors)
    RUN_DIR/accuracy.png    held-out accuracy against rollouts
    RUN_DIR/summary.json    accuracy before/after, rollouts, steps, wall time
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from remix.checkpoint import save_hf_model
from remix.config import TrainConfig
from remix.data import ProblemSource, load_task
from remix.plots import plot_accuracy_vs_rollouts
from remix.prompts import encode_prompt
from remix.rewards import GraderPool
from remix.tracking import MetricsLog, read_metrics
from remix.trainer import EncodedProblem, Trainer


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.algo}-{cfg.variant}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def encode_problems(tokenizer, problems, max_tokens: int, what: str) -> list[EncodedProblem]:
    """Prompt ids of every problem; prompts over `max_tokens` are dropped, counted and reported."""
    kept = []
    for p in problems:
        ids = encode_prompt(tokenizer, p.problem)
        if len(ids) <= max_tokens:
            kept.append(EncodedProblem(p, ids))
    dropped = len(problems) - len(kept)
    if dropped:
        print(f"{what}: dropped {dropped} of {len(problems)} prompts longer than {max_tokens} tokens "
              "(--data.max-prompt-tokens)", flush=True)
    if not kept:
        raise ValueError(f"{what}: every prompt is longer than --data.max-prompt-tokens={max_tokens}")
    return kept


def step_line(m: dict[str, Any], steps: int) -> str:
    """The one-line progress report of a step."""
    parts = [
        f"step {m['step']}/{steps}",
        f"reward {m['reward/mean']:.3f}",
        *([f"heldout {m['heldout/accuracy']:.3f}"] if "heldout/accuracy" in m else []),
        f"rollouts {m['rollouts']}",
        f"len {m['response_length/mean']:.1f}",
        f"hist {m['historical_share']:.2f}",
        f"clip lo/hi {m['clip_frac/low']:.3f}/{m['clip_frac/high']:.3f}",
        f"kl ref/prev {m['kl/ref']:.2e}/{m['kl/prev']:.2e}",
        f"time gen/grade/learn {m['time/generate']:.1f}/{m['time/grade']:.1f}/{m['time/learn']:.1f}s",
    ]
    return " | ".join(parts)


def build_trainer(cfg: TrainConfig, grader) -> tuple[Trainer, Path]:
    """The model (resolved and cached), the platform's Rollout and Learner, the data, as a Trainer."""
    from platforms import get_platform
    from remix.models import resolve_model

    model_dir = resolve_model(cfg.model.name, cfg.model.cache_dir)
    platform = get_platform(cfg.platform)
    rollout = platform.make_rollout(model_dir, seed=cfg.seed, dtype=cfg.model.dtype)
    learner = platform.make_learner(model_dir, cfg)
    tokenizer = rollout.tokenizer
    train_problems, heldout_problems = load_task(cfg.data.task, cfg.data.path, cfg.data.heldout_size,
                                                 cfg.data.arith_levels, cfg.seed)
    train = encode_problems(tokenizer, train_problems, cfg.data.max_prompt_tokens, "training set")
    heldout = encode_problems(tokenizer, heldout_problems, cfg.data.max_prompt_tokens, "held-out set")
    trainer = Trainer(cfg, rollout, learner, grader, tokenizer, ProblemSource(train, cfg.seed), heldout)
    return trainer, model_dir


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Trains as `cfg` says and returns the summary (also written to RUN_DIR/summary.json)."""
    wall_start = time.time()
    from remix.models import quiet_transformers

    quiet_transformers()
    run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")
    torch.manual_seed(cfg.seed)

    log = MetricsLog(run_dir, cfg.loggers, config=asdict(cfg))
    with GraderPool(cfg.grader_workers, cfg.grader_timeout_s) as grader:
        trainer, model_dir = build_trainer(cfg, grader)
        print(f"run {run_dir}: {cfg.algo} {cfg.variant} on {cfg.data.task} ({len(trainer.train.problems)} train / "
              f"{len(trainer.heldout)} held-out problems), model {cfg.model.name}, {cfg.steps} steps of "
              f"{cfg.batch_size} responses", flush=True)
        before = trainer.evaluate()
        log.log({"step": 0, "rollouts": 0, **before})
        print(f"held-out accuracy before training: {before['heldout/accuracy']:.3f}", flush=True)
        with tqdm(total=cfg.steps, desc="training", unit="step", dynamic_ncols=True) as bar:
            for _ in range(cfg.steps):
                metrics = trainer.train_step()
                k = metrics["step"]
                if k == cfg.steps or (cfg.eval_every and k % cfg.eval_every == 0):
                    metrics.update(trainer.evaluate())
                log.log(metrics)
                bar.update(1)
                bar.write(step_line(metrics, cfg.steps), file=sys.stdout)
                sys.stdout.flush()  # one line per step even when stdout is a file or a pipe
        after = metrics["heldout/accuracy"]
    log.close()

    save_hf_model(trainer.learner.policy_state_dict(), model_dir, run_dir / "model")
    records = read_metrics(log.path)
    plot_accuracy_vs_rollouts(records, run_dir / "accuracy.png",
                              f"{cfg.algo} {cfg.variant}, {cfg.model.name} on {cfg.data.task}")
    summary = {
        "heldout_accuracy_before": before["heldout/accuracy"],
        "heldout_accuracy_after": after,
        "rollouts": trainer.rollouts,
        "steps": trainer.step,
        "wall_seconds": round(time.time() - wall_start, 1),
        "algo": cfg.algo,
        "variant": cfg.variant,
        "model": cfg.model.name,
        "task": cfg.data.task,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"held-out accuracy {summary['heldout_accuracy_before']:.3f} -> {after:.3f} with {trainer.rollouts} "
          f"rollouts in {summary['wall_seconds']:.0f}s; model, metrics.jsonl, accuracy.png and summary.json "
          f"in {run_dir}", flush=True)
    return summary
