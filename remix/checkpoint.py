"""Writing models to disk atomically: a temporary folder, complete, then renamed into place."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_dir(final: Path):
    """Yields a temporary sibling folder; on success it replaces `final` (the old one is removed last).

    If anything fails (or the process dies) before the rename, `final` is untouched and only a
    hidden `.name.tmp-PID` folder is left behind, which the next write removes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            os.rename(final, old)  # keep the previous version until the new one is in place
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def save_hf_model(state_dict: dict[str, torch.Tensor], base_model_dir: Path, out: Path) -> Path:
    """Saves policy weights as an HF folder (config, safetensors, tokenizer) loadable with from_pretrained.

    The architecture and tokenizer come from `base_model_dir`; the weights from `state_dict` (host
    tensors, as `Learner.policy_state_dict()` returns them), so every platform saves the same way.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(base_model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(tmp)
        generation = Path(base_model_dir) / "generation_config.json"
        if generation.is_file():
            shutil.copy(generation, tmp / "generation_config.json")
    return Path(out)
