"""The Problem record and `load_task`, which turns the data config into train and held-out problems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch

PACKAGED = Path(__file__).parent / "train"
PACKAGED_TASKS = {"math": PACKAGED / "math.jsonl", "aime": PACKAGED / "aime.jsonl"}
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str | list[str]
    """One answer or a list of acceptable answers, graded with math-verify."""


class ProblemSource(Generic[T]):
    """An endless, seeded stream of training items (the trainer's are problems with their prompt ids);
    reshuffles at each epoch. Its cursor is state."""

    def __init__(self, problems: list[T], seed: int) -> None:
        if not problems:
            raise ValueError("the training split is empty")
        self.problems = problems
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.problems), generator=g).tolist()

    def next(self, n: int) -> list[T]:
        out = []
        for _ in range(n):
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.problems[self._order[self.position]])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffle()


def load_task(task: str, path: Path | None, heldout_size: int, levels: tuple[int, ...], validation_size: int = 0
              ) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """(train, heldout, validation) problems for `--task` / `--data.path`. Neither the held-out nor the
    validation split ever trains, and they are disjoint; validation (for choosing hyperparameters) is
    empty unless asked for. From a file or a packaged set the held-out split has min(heldout_size,
    rows // 5) problems and validation min(validation_size, rows // 5); asking for validation never
    changes the held-out split."""
    from remix.data.arith import ArithTask
    from remix.data.files import DataError, load_problem_file

    if task == "arith":
        arith = ArithTask(levels)
        pool = arith.heldout_problems(heldout_size + validation_size)  # held-out first: the same with or without
        return arith.train_problems(), pool[:heldout_size], pool[heldout_size:]
    if task == "file":
        rows = load_problem_file(path)
    elif task in PACKAGED_TASKS:
        rows = load_problem_file(PACKAGED_TASKS[task])
    else:
        raise ValueError(f"unknown task {task!r}: use arith, {', '.join(PACKAGED_TASKS)} or --data.path FILE")
    # Small datasets work by default: the held-out split is at most a fifth of the rows.
    heldout_size = min(heldout_size, len(rows) // 5)
    validation_size = min(validation_size, len(rows) // 5)
    if heldout_size < 1:
        raise DataError(path or task, None, None, f"{len(rows)} problems are too few: at least 5 are needed, "
                        "one of them held out for evaluation")
    # A fixed split (independent of --seed) so held-out accuracy is comparable across runs.
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(12345)).tolist()
    heldout = [rows[i] for i in order[:heldout_size]]
    # validation comes from the end of the order, so the held-out split stays what it is without it
    split = len(order) - validation_size
    validation = [rows[i] for i in order[split:]]
    train = [rows[i] for i in order[heldout_size:split]]
    return train, heldout, validation
