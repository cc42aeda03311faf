"""PNG plots of held-out accuracy against rollouts (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from remix.tracking import eval_curve, eval_measure  # noqa: E402


def plot_accuracy_vs_rollouts(records: list[dict[str, Any]], out: Path, title: str) -> Path:
    """One run's held-out accuracy (greedy) against the rollouts generated so far."""
    return plot_runs({"": records}, out, title)


def plot_runs(runs: dict[str, list[dict[str, Any]]], out: Path, title: str) -> Path:
    """Held-out accuracy against rollouts for several runs (label -> metrics records) in one PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    accuracy = all(eval_measure(records) == "accuracy" for records in runs.values())
    for label, records in runs.items():
        x, y = zip(*eval_curve(records))
        ax.plot(x, [100 * v for v in y] if accuracy else y, marker="o", label=label or None)
    ax.set_xlabel("rollouts (fresh responses generated)")
    ax.set_ylabel("held-out accuracy (%)" if accuracy else "held-out mean reward (greedy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(runs):
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
