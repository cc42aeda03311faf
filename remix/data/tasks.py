"""`load_task`: the data config (--task, --data.path, split sizes) as train, held-out and validation problems."""

from __future__ import annotations

from pathlib import Path

import torch

from remix.data.arith import ArithTask
from remix.data.files import DataError, load_problem_file
from remix.data.problems import Problem

PACKAGED = Path(__file__).parent / "train"
PACKAGED_TASKS = {"math": PACKAGED / "math.jsonl", "aime": PACKAGED / "aime.jsonl"}


def load_task(task: str, path: Path | None, heldout_size: int, levels: tuple[int, ...], validation_size: int = 0,
              problem_key: str = "problem", answer_key: str | None = "answer", answer_is_graded: bool = True
              ) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """(train, heldout, validation) problems for `--task` / `--data.path`. Neither the held-out nor the
    validation split ever trains, and they are disjoint; validation (for choosing hyperparameters) is
    empty unless asked for. From a file or a packaged set the held-out split has min(heldout_size,
    rows // 5) problems and validation min(validation_size, rows // 5); asking for validation never
    changes the held-out split. `problem_key`/`answer_key` name a file's columns (answer_key None: no answer
    column is read; `answer_is_graded` False: it must exist, holding anything); the built-in and packaged tasks have
    `problem` and `answer`."""
    if task == "arith":
        arith = ArithTask(levels)
        pool = arith.heldout_problems(heldout_size + validation_size)  # held-out first: the same with or without
        return arith.train_problems(), pool[:heldout_size], pool[heldout_size:]
    if task == "file":
        rows = load_problem_file(path, problem_key, answer_key, answer_is_graded)
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
