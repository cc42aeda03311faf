"""Nothing lost: a checkpoint carries a manifest of its files' sizes and SHA-256, written last; a damaged newest
checkpoint is skipped for the newest intact one (one line says which and why), none intact refuses in one line
with nothing overwritten; the exported model is a copy, so damage to a checkpoint never reaches it; the run's time
adds up over invocations; --steps below the checkpoint's step is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from remix.checkpoint import MANIFEST, checkpoint_dir, list_checkpoints, why_damaged
from remix.run_dir import RunError
from tests.helpers import run, small_config

MODEL_FILE = Path("learner") / "model" / "model.safetensors"


def _cut_short(path: Path) -> None:
    """A copy cut short, a disk that filled: the file loses its last half."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _config(model_dir, run_dir, steps, **overrides):
    return small_config(model_dir, steps=steps, run_dir=run_dir, checkpoint_every=2, **overrides)


def test_the_manifest_lists_every_file_and_catches_a_changed_byte(tiny_model_dir, tmp_path):
    run(_config(tiny_model_dir, tmp_path / "run", 2))
    (checkpoint,) = list_checkpoints(tmp_path / "run")
    files = json.loads((checkpoint / MANIFEST).read_text())["files"]
    on_disk = {str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(files) == on_disk and str(MODEL_FILE) in files and "meta.json" in files
    assert why_damaged(checkpoint) is None
    path = checkpoint / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a bad sector: the size stays, the content changes
    path.write_bytes(bytes(data))
    assert "does not match its checksum" in why_damaged(checkpoint)
    (checkpoint / "meta.json").unlink()
    assert "meta.json is missing" in why_damaged(checkpoint)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(_config(tiny_model_dir, run_dir, 4, keep_checkpoints=2))
    exported = load_file(run_dir / "model" / "model.safetensors")
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000002", "step-000004"]
    _cut_short(checkpoint_dir(run_dir, 4) / MODEL_FILE)
    # the exported model is a copy: the damage did not reach it
    assert (run_dir / "model" / "model.safetensors").stat().st_nlink == 1
    assert all(torch.equal(v, exported[k]) for k, v in load_file(run_dir / "model" / "model.safetensors").items())
    capsys.readouterr()
    summary = run(_config(tiny_model_dir, run_dir, 6, keep_checkpoints=2))
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped the damaged checkpoint")]
    assert len(skipped) == 1 and "step-000004" in skipped[0] and "manifest says" in skipped[0]
    assert "kept as .step-000004.damaged" in skipped[0] and (run_dir / "checkpoints" / ".step-000004.damaged").is_dir()
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 6
    assert why_damaged(checkpoint_dir(run_dir, 6)) is None


def test_a_run_that_ends_before_a_damaged_checkpoint_exports_its_own_last_step(tiny_model_dir, tmp_path):
    """Resumed from step 2 past a damaged step 4 and stopped at 3: the exported model is step 3's, not the damaged
    step 4's (which was set aside), and cleanups do not take the damaged one for the newest."""
    run_dir = tmp_path / "run"
    run(_config(tiny_model_dir, run_dir, 4, keep_checkpoints=2))
    (checkpoint_dir(run_dir, 4) / "meta.json").unlink()  # a damaged meta.json: skipped as well, not a traceback
    run(_config(tiny_model_dir, run_dir, 5, keep_checkpoints=2, checkpoint_steps=(3,)))
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000003", "step-000004", "step-000005"]
    final = load_file(checkpoint_dir(run_dir, 5) / MODEL_FILE)
    exported = load_file(run_dir / "model" / "model.safetensors")
    assert all(torch.equal(v, final[k]) for k, v in exported.items())


def test_no_intact_checkpoint_refuses_in_one_line_and_keeps_the_exported_model(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run(_config(tiny_model_dir, run_dir, 2))  # --keep-checkpoints 1: only step 2
    exported = load_file(run_dir / "model" / "model.safetensors")
    _cut_short(checkpoint_dir(run_dir, 2) / MODEL_FILE)
    with pytest.raises(RunError, match="no intact checkpoint to resume from .*--resume never") as e:
        run(_config(tiny_model_dir, run_dir, 4))
    assert "\n" not in str(e.value)
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000002"]  # nothing deleted or overwritten
    assert all(torch.equal(v, exported[k]) for k, v in load_file(run_dir / "model" / "model.safetensors").items())


def test_a_damaged_checkpoint_is_refused_as_a_fork_source(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    run(_config(tiny_model_dir, base, 2))
    _cut_short(checkpoint_dir(base, 2) / MODEL_FILE)
    with pytest.raises(RunError, match="--fork-from: step-000002/learner/model/model.safetensors has"):
        run(_config(tiny_model_dir, tmp_path / "fork", 4, fork_from=checkpoint_dir(base, 2)))
    assert not (tmp_path / "fork").exists()


def test_time_adds_up_over_invocations_and_fewer_steps_than_done_are_refused(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    first = run(_config(tiny_model_dir, run_dir, 2))
    second = run(_config(tiny_model_dir, run_dir, 4))
    assert second["wall_seconds"] > second["wall_seconds_this_invocation"]
    assert second["wall_seconds"] >= first["wall_seconds_this_invocation"] - 1e-6
    saved = json.loads((run_dir / "config.json").read_text())
    with pytest.raises(RunError, match="--steps 3: .* is already at step 4"):
        run(_config(tiny_model_dir, run_dir, 3))
    assert json.loads((run_dir / "config.json").read_text()) == saved  # untouched


def test_wandb_without_a_login_is_one_line_before_anything_is_written(monkeypatch, tmp_path):
    import importlib.util

    from remix.config import TrainConfig
    from remix.tracking import wandb_login_problem
    from remix.validation import ConfigError

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert "WANDB_MODE=offline" in wandb_login_problem()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="^--loggers: wandb: no W&B login here .*WANDB_MODE=offline"):
        TrainConfig(loggers=("wandb",), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert wandb_login_problem() is None
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_login_problem() is None
