"""`arith`: generated arithmetic problems with exact integer answers at four difficulty levels.

Level 1: a + b with one-digit operands.      Level 2: a + b or a - b with two-digit operands.
Level 3: a * b, a in 2..30, b in 2..9.       Level 4: a + b * c or (a - b) * c.

Every problem of a level is enumerable, and the held-out split is a fixed hash-based subset
(about 10% of each level), so held-out problems never appear in training whatever the seed.
"""

from __future__ import annotations

import hashlib
import itertools

from remix.data.problems import Problem

HELDOUT_MODULUS = 10  # problems whose hash is 0 mod 10 are held out


def _level_problems(level: int) -> list[tuple[str, int]]:
    if level == 1:
        return [(f"What is {a} + {b}?", a + b) for a, b in itertools.product(range(10), range(10))]
    if level == 2:
        pairs = itertools.product(range(10, 100), range(10, 100))
        return [q for a, b in pairs for q in ((f"What is {a} + {b}?", a + b), (f"What is {a} - {b}?", a - b))]
    if level == 3:
        return [(f"What is {a} * {b}?", a * b) for a, b in itertools.product(range(2, 31), range(2, 10))]
    if level == 4:
        triples = itertools.product(range(1, 20), range(2, 10), range(2, 10))
        return [q for a, b, c in triples
                for q in ((f"What is {a} + {b} * {c}?", a + b * c), (f"What is ({a} - {b}) * {c}?", (a - b) * c))]
    raise ValueError(f"arith level must be 1..4, got {level}")


def _is_heldout(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % HELDOUT_MODULUS == 0


class ArithTask:
    """The problems of the chosen levels, split into train and held-out."""

    def __init__(self, levels: tuple[int, ...] = (1, 2, 3)) -> None:
        self.levels = tuple(levels)
        self._train: list[Problem] = []
        self._heldout_by_level: list[list[Problem]] = []
        for level in self.levels:
            held = []
            for i, (text, answer) in enumerate(_level_problems(level)):
                pid = f"arith-L{level}-{i}"
                p = Problem(id=pid, problem=text, answer=str(answer),
                            row={"id": pid, "problem": text, "answer": str(answer)})
                (held if _is_heldout(text) else self._train).append(p)
            self._heldout_by_level.append(held)

    def train_problems(self) -> list[Problem]:
        return list(self._train)

    def heldout_problems(self, n: int) -> list[Problem]:
        """n held-out problems, balanced across levels (round robin), in a fixed order."""
        out: list[Problem] = []
        for row in itertools.zip_longest(*self._heldout_by_level):
            out.extend(p for p in row if p is not None)
        if n > len(out):
            raise ValueError(f"arith levels {self.levels} have only {len(out)} held-out problems, asked for {n}")
        return out[:n]
