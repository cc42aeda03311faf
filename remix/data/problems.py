"""The Problem record, and ProblemSource: the endless seeded stream of training problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str | list[str] | None
    """One answer or a list of acceptable answers, graded with math-verify (None: the data has no answer column)."""
    row: dict[str, Any] = field(default_factory=dict, compare=False)
    """Every column of the dataset row, for the reward functions (arith: problem and answer)."""


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
