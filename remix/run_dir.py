"""A run's directory: choosing it (resume, fork, never overwrite), checking a resumed or forked config against
the saved one, and writing config.json (with provenance) and the metrics a resumed or forked run starts from.

`remix.runner` calls these on rank 0 before and while a run starts (`choose_run_dir` answers with a `RunStart`);
the efficiency study compares configs with `flatten_config` and `config_json`, the same flattening a resume uses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from remix import distributed as dist
from remix.checkpoint import (
    checkpoint_step,
    list_checkpoints,
    remove_unfinished,
    run_dir_of,
    why_damaged,
    why_not_resumable,
)
from remix.config import TrainConfig
from remix.provenance import code_version
from remix.schedule import keeps_precedent
from remix.tracking import read_metrics


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.algo}-{cfg.variant}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


class RunError(ValueError):
    """A run that cannot start or continue as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class RunStart:
    """Where a run writes and what it starts from, as `choose_run_dir` resolved it."""

    run_dir: Path
    resume_from: Path | None = None  # a checkpoint of this run: the same command goes on from it
    fork_from: Path | None = None  # a checkpoint of another run (--fork-from)
    saved_config: dict[str, Any] | None = None  # the resumed run's config.json, read once

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint the run loads, if any."""
        return self.resume_from or self.fork_from

    @property
    def metrics_source(self) -> Path:
        """The metrics.jsonl whose records up to the checkpoint's step this run starts with."""
        return (self.run_dir if self.fork_from is None else run_dir_of(self.fork_from)) / "metrics.jsonl"

# Config fields that may change when a run is resumed; any other difference is a conflict.
RESUMABLE_CHANGES = {
    "steps", "eval_every", "eval_at_rollouts", "loggers", "checkpoint_every", "keep_checkpoints", "checkpoint_steps",
    "resume",
    "max_consecutive_skips",
    "grader_workers", "grader_timeout_s", "run_dir", "model.cache_dir",
}


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config.json as {"optim.lr": ..., ...}: nested sections joined with dots."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_json(cfg: TrainConfig) -> dict[str, Any]:
    """The config as written to RUN_DIR/config.json (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def provenance(run_dir: Path, saved: dict[str, Any] | None = None, fork: Path | None = None) -> dict[str, Any]:
    """Where and with what a run was made: config.json's "provenance" (not part of the config: never a
    conflict on resume). A resumed run keeps its start and adds the time of each resume; a forked run names
    the checkpoint it started from (and that run's commit)."""
    now = dt.datetime.now().isoformat(timespec="seconds")
    before = (saved or {}).get("provenance", {})
    forked_from = before.get("forked_from")
    if fork is not None:
        base = json.loads((run_dir_of(fork) / "config.json").read_text()).get("provenance", {})
        forked_from = {"checkpoint": str(fork.absolute()), "step": checkpoint_step(fork),
                       "git_commit": base.get("git_commit")}
    return {
        "run_dir": str(run_dir.absolute()),
        "started": before.get("started", now),
        "resumed": [*before.get("resumed", []), now] if saved is not None else [],
        **code_version(),
        "processes": dist.world_size(),
        **({"forked_from": forked_from} if forked_from else {}),
    }


def write_config(run_dir: Path, cfg: TrainConfig, saved: dict[str, Any] | None, fork: Path | None = None) -> None:
    """RUN_DIR/config.json: the config (with the --steps of the latest invocation) and its provenance."""
    path = run_dir / "config.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**config_json(cfg), "provenance": provenance(run_dir, saved, fork)}, indent=2) + "\n")
    os.replace(tmp, path)


def differing_fields(saved: dict[str, Any], cfg: TrainConfig) -> tuple[list[str], dict, dict]:
    """The flattened fields in which a config.json (`saved`, provenance left out) and `cfg` differ, and both
    flattened configs."""
    old = flatten_config({k: v for k, v in saved.items() if k != "provenance"})
    new = flatten_config(config_json(cfg))
    # A field added to remix after that run started (its config.json lacks it) had, in effect, its default then.
    defaults = flatten_config(config_json(TrainConfig()))
    old.update({k: defaults[k] for k in new.keys() - old.keys() if k in defaults})
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)), old, new


def check_resumable(saved: dict[str, Any], cfg: TrainConfig, run_dir: Path) -> None:
    differ, old, new = differing_fields(saved, cfg)
    conflicts = [k for k in differ if k not in RESUMABLE_CHANGES]
    if conflicts:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in conflicts)
        raise RunError(f"{run_dir} was started with a different config ({detail}); resume with the same "
                       "values, or start a new run with --resume never or another --run-dir")


def fresh_run_dir(run_dir: Path) -> Path:
    """`run_dir` if it is new or empty, else the first free `run_dir-2`, `run_dir-3`, ...: never overwrite."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return run_dir
    n = 2
    while (candidate := run_dir.with_name(f"{run_dir.name}-{n}")).exists():
        n += 1
    return candidate


def check_writable(run_dir: Path) -> None:
    """Refuses a run directory that cannot be made or written, before any model or data is loaded."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--run-dir {run_dir}: exists and is not a directory")
    existing = run_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    try:  # a real probe: permission bits say nothing of read-only file systems, or of root
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".remix-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunError(f"--run-dir {run_dir}: cannot write in {existing} ({e.strerror})") from None


# What the shape of a run's saved state depends on: a fork must agree with the run it is forked from here.
FORK_MUST_MATCH = ("platform", "algo", "model.", "data.", "batch_size", "rollout.group_size", "lora.rank",
                   "lora.alpha", "lora.target_modules")


def _uses_precedent(c: dict[str, Any]) -> bool:  # schedule.uses_precedent on a flattened config.json
    return keeps_precedent(c["variant"], c["remix.kl_convex"], c["objective.kl_coef"])


def check_fork(cfg: TrainConfig, run_dir: Path) -> Path:
    """The checkpoint of --fork-from, checked: a complete checkpoint this job can load, of a run whose saved state
    has the shape this config needs, with its metrics through that step. Rank 0, before anything is written."""
    folder = Path(cfg.fork_from)
    base_dir = run_dir_of(folder)
    if not (folder / "meta.json").is_file():
        raise RunError(f"--fork-from {folder}: not a complete checkpoint (RUN/checkpoints/step-NNNNNN with meta.json)")
    if not (base_dir / "config.json").is_file() or not (base_dir / "metrics.jsonl").is_file():
        raise RunError(f"--fork-from {folder}: {base_dir} has no config.json and metrics.jsonl; fork from a "
                       "checkpoint inside its run directory")
    if base_dir.absolute() == run_dir.absolute():
        raise RunError(f"--fork-from {folder}: that is a checkpoint of --run-dir itself; fork into another directory")
    problem = why_not_resumable(folder) or why_damaged(folder)
    if problem is not None:
        raise RunError(f"--fork-from: {problem}")
    differ, base, new = differing_fields(json.loads((base_dir / "config.json").read_text()), cfg)
    differ = [k for k in differ if k.startswith(FORK_MUST_MATCH)]
    if differ:
        raise RunError(f"--fork-from {folder}: the saved state does not fit this config ("
                       + ", ".join(f"{k}: {base.get(k)!r} there, {new.get(k)!r} here" for k in differ) + ")")
    if _uses_precedent(new) and not _uses_precedent(base):
        raise RunError(f"--fork-from {folder}: this config uses KL-Convex's precedent policy and that run kept none "
                       "(it ran without KL-Convex or with --objective.kl-coef 0)")
    step = checkpoint_step(folder)
    if step >= cfg.steps:
        raise RunError(f"--fork-from {folder}: the checkpoint is at step {step}, not before --steps {cfg.steps}")
    logged = {r.get("step") for r in read_metrics(base_dir / "metrics.jsonl")}
    if not set(range(step + 1)) <= logged:
        raise RunError(f"--fork-from {folder}: {base_dir / 'metrics.jsonl'} lacks steps up to {step}")
    return folder


def choose_run_dir(cfg: TrainConfig) -> RunStart:
    """The run directory and the checkpoint to resume or fork from, following --resume and --fork-from (a fork
    that has written a checkpoint of its own resumes from it). Rank 0 only."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else default_run_dir(cfg)
    check_writable(run_dir)
    if cfg.resume == "auto" and run_dir.is_dir():
        remove_unfinished(run_dir)
        checkpoints = list_checkpoints(run_dir)
        if checkpoints:
            try:  # before the config: an old format may lack fields
                problem = why_not_resumable(checkpoints[-1])
            except (OSError, ValueError):  # its meta.json is damaged: newest_intact says so, and skips it
                problem = None
            if problem is not None:
                raise RunError(f"{problem}; or start a new run with --resume never or another --run-dir")
            saved = json.loads((run_dir / "config.json").read_text())
            check_resumable(saved, cfg, run_dir)
            checkpoint = newest_intact(checkpoints, run_dir)
            if checkpoint_step(checkpoint) > cfg.steps:
                raise RunError(f"--steps {cfg.steps}: {run_dir} is already at step {checkpoint_step(checkpoint)}; give "
                               "--steps at least that to go on, or start a new run with --resume never")
            return RunStart(run_dir, resume_from=checkpoint, saved_config=saved)
    new_dir = fresh_run_dir(run_dir)
    if new_dir != run_dir:
        check_writable(new_dir)  # RUN_DIR-2 is made beside RUN_DIR: its parent must take it
        why = "--resume never" if cfg.resume == "never" else "it has no checkpoint to resume from"
        print(f"{run_dir} is not empty and {why}: starting fresh in {new_dir}", flush=True)
    return RunStart(new_dir, fork_from=check_fork(cfg, new_dir) if cfg.fork_from is not None else None)


def newest_intact(checkpoints: list[Path], run_dir: Path) -> Path:
    """The newest of `checkpoints` whose files match its manifest. Each newer, damaged one is renamed aside
    (`.step-NNNNNN.damaged`: kept, but no longer a checkpoint that later cleanups or exports would take for the
    newest), in one line saying why. None intact: RunError, and nothing is renamed or overwritten (--resume never
    starts a new directory beside it)."""
    damaged = []
    for checkpoint in reversed(checkpoints):
        problem = why_damaged(checkpoint)
        if problem is None:
            for folder, why in damaged:
                aside = folder.with_name(f".{folder.name}.damaged")
                n = 2
                while aside.exists():
                    aside, n = folder.with_name(f".{folder.name}.damaged-{n}"), n + 1
                os.rename(folder, aside)
                print(f"skipped the damaged checkpoint {folder} ({why}), kept as {aside.name}; resuming from an "
                      "older one", flush=True)
            return checkpoint
        damaged.append((checkpoint, problem))
    raise RunError(f"{run_dir}: no intact checkpoint to resume from (the newest: {damaged[0][1]}); "
                   "start a new run with --resume never (RUN_DIR-2 beside it) or another --run-dir")


def write_metrics_through(source: Path, run_dir: Path, step: int) -> list[dict[str, Any]]:
    """RUN_DIR/metrics.jsonl: the records of `source` (this run's own file when resuming, the forked run's when
    forking) up to `step`, written atomically; a resumed run rewrites what came after its checkpoint."""
    records = [r for r in read_metrics(source) if r.get("step", 0) <= step] if source.exists() else []
    path = run_dir / "metrics.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return records


def forked_from_step(run_dir: Path) -> int | None:
    fork = json.loads((run_dir / "config.json").read_text())["provenance"].get("forked_from")
    return None if fork is None else fork["step"]
