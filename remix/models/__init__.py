"""Models by name: built-in names, local HF folders, or hub ids (the last only where a network is).

Built-in models are built once into the cache directory (`--model.cache-dir`, env REMIX_CACHE) and
loaded from there afterwards. A build writes into a temporary folder that is renamed into place
only when complete, so an interrupted build never leaves a half-written model behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from remix.checkpoint import atomic_dir
from remix.config import default_cache_dir
from remix.models.smollm2 import build_smollm2
from remix.models.tiny_arith import BUILD_VERSION as TINY_ARITH_VERSION
from remix.models.tiny_arith import build_tiny_arith, build_tiny_random_model

__all__ = ["BUILTIN_MODELS", "ModelNotFound", "build_tiny_random_model", "quiet_transformers", "resolve_model"]

# name -> (cache folder name, builder). Bump a folder name when its recipe changes.
BUILTIN_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "tiny-arith": (f"tiny-arith-{TINY_ARITH_VERSION}", build_tiny_arith),
    "smollm2-135m": ("smollm2-135m-instruct-v1", build_smollm2),
}


class ModelNotFound(ValueError):
    """The model name is neither built in, nor a local folder, nor downloadable."""


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str | Path, cache_dir: Path | None = None) -> Path:
    """A local folder with config.json, weights and tokenizer for `name`, building it if needed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = str(name)
    if name in BUILTIN_MODELS:
        folder, build = BUILTIN_MODELS[name]
        return _cached_build(cache_dir / folder, build)
    path = Path(name).expanduser()
    if path.exists():
        if (path / "model").is_dir() and (path / "metrics.jsonl").is_file():
            raise ModelNotFound(f"model {name!r}: {path} is a remix run directory; its trained model is "
                                f"{path / 'model'}")
        if not _is_model_folder(path):
            raise ModelNotFound(f"model {name!r}: {path} exists but has no config.json (not an HF model folder)")
        check_model_folder(path, name)
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _from_hub(name, cache_dir)
    raise ModelNotFound(
        f"unknown model {name!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), not an existing folder, "
        "and not a hub id of the form owner/name"
    )


def check_model_folder(path: Path, name: str) -> None:
    """A model folder must hold weights and a tokenizer: say which is missing before anything is loaded."""
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise ModelNotFound(f"model {name!r}: {path} has no weights (*.safetensors or pytorch_model*.bin)")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelNotFound(f"model {name!r}: {path} has no tokenizer (tokenizer.json or tokenizer_config.json)")


def _cached_build(final: Path, build: Callable[[Path], Path]) -> Path:
    if _is_model_folder(final):
        return final
    with atomic_dir(final) as tmp:
        build(tmp)
        if not _is_model_folder(tmp):
            raise RuntimeError(f"building {final.name} wrote no config.json")
    print(f"cached {final}", flush=True)
    return final


def _from_hub(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir / "hub"))
    except Exception as e:  # noqa: BLE001 -- every failure becomes one clear message, with its cause
        raise ModelNotFound(
            f"model {repo_id!r} is not a built-in name or a local folder, and downloading it from the hub failed "
            f"({type(e).__name__}: {e}). Offline, pass a local HF folder or one of {', '.join(BUILTIN_MODELS)}."
        ) from e


@contextmanager
def quiet_peft():
    """peft 0.21 reads an attribute transformers 5 deprecated (`is_gradient_checkpointing`) when it wraps or loads
    a model: the FutureWarning is about peft's code, not ours, and is silenced inside."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def quiet_transformers() -> None:
    """No per-file loading bars or info logs from transformers: the run prints its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
