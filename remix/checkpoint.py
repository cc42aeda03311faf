"""Atomic folder writes (a temporary folder, complete, then renamed into place), the policy as an HF
folder, and run checkpoints: save, verify, find, load, clean up after a killed write, export the final model.

A checkpoint is complete when its folder exists under its final name (the atomic rename, as orbax and DCP's
file system writer commit theirs) and intact when every file matches `manifest.json`, written last, with each
file's size and SHA-256 (DCP's `.metadata` and HF Trainer's folders have no checksums: a truncated file shows
only when loading fails). A resumed run takes the newest checkpoint that verifies and says which it skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from remix import distributed as dist


@contextmanager
def atomic_dir(final: Path, collective: bool = False):
    """Yields a temporary sibling folder; on success it replaces `final` (the old one is removed last).

    If anything fails (or the process dies) before the rename, `final` is untouched and only a
    hidden `.name.tmp-PID` folder is left behind, which the next write removes.
    `collective=True` (every rank of a torchrun job enters it together): rank 0 makes the folder, every
    rank writes its part into it, and rank 0 renames it once all have finished.
    """
    final = Path(final)
    main = dist.is_main() or not collective
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if main:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    if collective:
        tmp, old = dist.broadcast_object((tmp, old))  # rank 0's names
    try:
        yield tmp
        if collective:
            dist.barrier()  # every rank's files are written
        if main:
            _fsync_tree(tmp)
            if final.exists():
                os.rename(final, old)  # keep the previous version until the new one is in place
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        if collective:
            dist.barrier()  # nobody reads or writes on before the rename
    finally:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def save_hf_model(state_dict: dict[str, torch.Tensor], base_model_dir: Path, out: Path) -> Path:
    """Saves policy weights as an HF folder (config, safetensors, tokenizer) loadable with from_pretrained.

    The architecture and tokenizer come from `base_model_dir`; the weights from `state_dict` (whole host
    tensors, as gathered from `Learner.policy_weights()`), so every platform saves the same way.
    Writes into `out` directly: call it inside an `atomic_dir` (as checkpoints do) for atomicity.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(base_model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(out)
    generation = Path(base_model_dir) / "generation_config.json"
    if generation.is_file():
        shutil.copy(generation, out / "generation_config.json")
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():  # the weights come out 0600 from a temporary file: readable like the rest
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)
    return out


# --------------------------------------------------------------------------------------------- run checkpoints
# RUN_DIR/checkpoints/step-000010/
#     learner/                   the learner's files: model/ (HF folder), learner.json, state/ (DCP: optimizer,
#                                precedent, reference, critic; one shard file per rank); with --lora.rank adapter/
#                                (peft's format) instead of model/, and in state/ the adapter and its snapshots
#     trainer_state-rank0.pt     per rank: step, rollouts, RNG states, data cursor, its buffer
#                                (torch.load(weights_only=True))
#     meta.json                  step, format version, number of processes, training time so far
#     manifest.json              every other file's size and SHA-256, written last
# A checkpoint folder is complete exactly when it exists under its final name (atomic_dir), and intact when its
# files match the manifest.

CHECKPOINT_FORMAT = 3  # 3: manifest.json
MANIFEST = "manifest.json"
_PREFIX = "step-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{_PREFIX}{step:06d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (unfinished writes are hidden temporary folders)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint folder belongs to (RUN/checkpoints/step-NNNNNN -> RUN)."""
    return Path(checkpoint).parent.parent


def checkpoint_step(folder: Path) -> int:
    """The step of a checkpoint folder, from its name (step-000010 -> 10)."""
    return int(Path(folder).name[len(_PREFIX):])


def trainer_state_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"trainer_state-rank{rank}.pt"


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """`manifest.json`: the size and SHA-256 of every file in `folder` (written into it last). Collective under
    torchrun: the ranks hash a share of the files each (the folder is on a file system every rank sees), rank 0
    writes."""
    folder = Path(folder)
    names = dist.broadcast_object(sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                         if p.is_file() and p.name != MANIFEST))
    mine = {n: {"bytes": (folder / n).stat().st_size, "sha256": file_sha256(folder / n)}
            for n in names[dist.rank()::dist.world_size()]}
    files = {n: entry for part in dist.all_gather_objects(mine) for n, entry in part.items()}
    if dist.is_main():
        (folder / MANIFEST).write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n")


def why_damaged(folder: Path) -> str | None:
    """What is wrong with a checkpoint's files (a file missing, cut short or changed), or None when every file
    matches its manifest. Sizes first, for all files; then checksums."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return f"{folder.name} has no {MANIFEST}"
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (ValueError, KeyError):
        return f"{folder.name}/{MANIFEST} cannot be read"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{folder.name}/{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{folder.name}/{name} has {path.stat().st_size:,} bytes, the manifest says {entry['bytes']:,}"
    for name, entry in files.items():
        if file_sha256(folder / name) != entry["sha256"]:
            return f"{folder.name}/{name} does not match its checksum"
    return None


def save_checkpoint(trainer, run_dir: Path, keep: int = 1, keep_steps: tuple[int, ...] = (),
                    elapsed_s: float = 0.0) -> Path:
    """Writes the trainer's complete state atomically, its manifest last, then deletes all but the newest `keep`
    checkpoints and those of `keep_steps`. Under torchrun every rank calls it: each writes its own trainer state and
    learner shards. `elapsed_s`: the run's training time so far (kept across invocations)."""
    final = checkpoint_dir(run_dir, trainer.step)
    with atomic_dir(final, collective=True) as tmp:
        trainer.learner.save_state(tmp / "learner")
        torch.save(trainer.state_dict(), trainer_state_file(tmp, dist.rank()))
        if dist.is_main():
            meta = {"step": trainer.step, "format": CHECKPOINT_FORMAT, "world_size": dist.world_size(),
                    "elapsed_s": round(elapsed_s, 3)}
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        dist.barrier()  # every rank's files are in place before they are hashed
        write_manifest(tmp)
    if dist.is_main():
        _fsync_dir(final.parent)
        for old in list_checkpoints(run_dir)[:-keep]:  # only once the new one is complete
            if checkpoint_step(old) not in keep_steps:
                shutil.rmtree(old)
    dist.barrier()
    return final


def why_not_resumable(folder: Path) -> str | None:
    """Why this job cannot load the checkpoint `folder` (another format, another number of processes), or None.
    Whether its files are intact is `why_damaged`'s question."""
    meta = read_meta(folder)
    fmt, written_by = meta.get("format"), meta.get("world_size", 1)
    if fmt != CHECKPOINT_FORMAT:
        return (f"{folder} was written by another version of remix (checkpoint format {fmt}, this version reads "
                f"{CHECKPOINT_FORMAT})")
    if written_by != dist.world_size():
        return (f"{folder} was written by {written_by} process(es) and this job has {dist.world_size()}; resume "
                f"with torchrun --nproc-per-node (x --nnodes) = {written_by}")
    return None


def load_checkpoint(trainer, folder: Path) -> None:
    """Restores a trainer (built from the same config and base model, in a job of as many processes) to
    the state saved in `folder`; each rank reads its own trainer state."""
    problem = why_not_resumable(folder)
    if problem is not None:
        raise ValueError(problem)
    trainer.learner.load_state(Path(folder) / "learner")
    trainer.load_state_dict(torch.load(trainer_state_file(folder, dist.rank()), weights_only=True))


def export_policy(checkpoint: Path, out: Path) -> Path:
    """Makes `out` a copy of the checkpoint's policy HF folder (`learner/model`, see `Learner.save_state`).

    A copy, never a hard link: damage to one (a checkpoint file cut short by a full disk) must not reach the
    other, and the final model must survive the checkpoint's deletion.

    A LoRA checkpoint holds the adapter alone (`learner/adapter`): `out` is then the base model with the adapter
    merged (peft's `merge_and_unload`, float32, on the host), and `out`'s sibling `adapter/` a copy of the adapter.
    """
    learner = Path(checkpoint) / "learner"
    if (learner / "adapter").is_dir():
        return _export_merged(learner, Path(out))
    src = learner / "model"
    with atomic_dir(out) as tmp:
        for f in src.iterdir():
            shutil.copy2(f, tmp / f.name)
    return Path(out)


def _export_merged(learner: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from remix.models import quiet_peft

    base_dir = Path(json.loads((learner / "learner.json").read_text())["base_model"])
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with quiet_peft():
        merged = PeftModel.from_pretrained(base, learner / "adapter").merge_and_unload()
    with atomic_dir(out) as tmp:
        save_hf_model(merged.state_dict(), base_dir, tmp)
    with atomic_dir(out.parent / "adapter") as tmp:
        for f in (learner / "adapter").iterdir():
            shutil.copy2(f, tmp / f.name)
    return out


def remove_unfinished(run_dir: Path) -> int:
    """Cleans up after a checkpoint write that was killed; returns how many leftovers were handled.

    A `.NAME.tmp-PID` folder is an unfinished write: deleted. A `.NAME.old-PID` folder is a complete
    checkpoint that was being replaced: put back if NAME is missing, else deleted.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return 0
    handled = 0
    for p in root.iterdir():
        if not p.name.startswith("."):
            continue
        name, _, kind = p.name[1:].rpartition(".")
        if kind.startswith("old-") and not (root / name).exists():
            os.rename(p, root / name)
        elif kind.startswith(("tmp-", "old-")):
            shutil.rmtree(p, ignore_errors=True)
        else:
            continue
        handled += 1
    return handled


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
