"""Where metrics go: metrics.jsonl always, TensorBoard and W&B when asked for (`--loggers`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def wandb_login_problem() -> str | None:
    """Why W&B could not log from here (no API key, no ~/.netrc entry for its host, not offline), or None; read
    before anything is written, so that a run without credentials stops in one line rather than after its run
    directory exists. wandb itself is not imported (it is an extra)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return None
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if netrc.netrc(str(path)).authenticators(host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (f"no W&B login here (no WANDB_API_KEY, no {host} entry in {path}): run `wandb login`, set WANDB_API_KEY, "
            "or set WANDB_MODE=offline to log into the run directory (`wandb sync` uploads it later)")


class MetricsLog:
    """Appends one JSON object per record to RUN_DIR/metrics.jsonl and forwards numbers to extra sinks."""

    def __init__(self, run_dir: Path, loggers: tuple[str, ...] = (), config: dict[str, Any] | None = None,
                 append: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = self._wandb = None  # the optional sinks first: a missing extra fails before any file is touched
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("--loggers tensorboard needs the extra: pip install 'remix-rft[tensorboard]'") from e
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("--loggers wandb needs the extra: pip install 'remix-rft[wandb]'") from e
            self._wandb = wandb.init(project="remix", dir=str(run_dir), config=config, name=Path(run_dir).name)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()
        step = int(record.get("step", 0))
        numbers = {k: float(v) for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step"}
        if self._tb is not None:
            for k, v in numbers.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoLog:
    """The metrics sink of ranks other than 0: records go nowhere."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoLog:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to metrics.jsonl")


def eval_measure(records: list[dict[str, Any]], split: str = "heldout") -> str:
    """What a run's evaluations measured: 'accuracy' (the math reward alone) or 'reward' (its --reward functions)."""
    return "accuracy" if any(f"{split}/accuracy" in r for r in records) else "reward"


def eval_curve(records: list[dict[str, Any]], split: str = "heldout") -> list[tuple[int, float]]:
    """(rollouts, accuracy or mean reward, see `eval_measure`) at every evaluation of `split` (heldout or validation)
    in a run's metrics, in order."""
    key = f"{split}/{eval_measure(records, split)}"
    return [(int(r["rollouts"]), float(r[key])) for r in records if key in r]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
