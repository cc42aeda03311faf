"""Loading {problem, answer} rows from jsonl, json or parquet, with errors that name file, row, field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from remix.data.problems import Problem


class DataError(ValueError):
    """Bad training data: the message names the file, the row (1-based) and the field."""

    def __init__(self, path: Path | str, row: int | None, field: str | None, problem: str) -> None:
        where = str(path) + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


def _answer(value: Any, path: Path, row: int) -> str | list[str]:
    if isinstance(value, bool) or value is None:
        raise DataError(path, row, "answer", f"expected a string, number or list of them, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(path, row, "answer", f"not a finite number: {value!r}")
        return str(int(value)) if float(value).is_integer() else repr(value)
    if isinstance(value, str):
        if not value.strip():
            raise DataError(path, row, "answer", "empty string")
        return value.strip()
    if isinstance(value, list):
        if not value:
            raise DataError(path, row, "answer", "empty list")
        out = [_answer(v, path, row) for v in value]
        return [a for a in out for a in ([a] if isinstance(a, str) else a)]
    raise DataError(path, row, "answer", f"expected a string, number or list, got {type(value).__name__}")


def _row_to_problem(raw: Any, path: Path, row: int) -> Problem:
    if not isinstance(raw, dict):
        raise DataError(path, row, None, f"expected an object with 'problem' and 'answer', got {type(raw).__name__}")
    for name in ("problem", "answer"):
        if name not in raw:
            raise DataError(path, row, name, "missing")
    problem = raw["problem"]
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(path, row, "problem", f"expected a non-empty string, got {problem!r:.60}")
    pid = raw.get("id", raw.get("unique_id"))
    return Problem(id=str(pid) if pid is not None else f"{path.stem}-{row}", problem=problem,
                   answer=_answer(raw["answer"], path, row))


def _read_rows(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(path, i, None, f"malformed JSON: {e.msg} at column {e.colno}") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(path, None, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(data, list):
            raise DataError(path, None, None, "a .json dataset must be a list of {problem, answer} objects")
        return list(enumerate(data, start=1))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise DataError(path, None, None, f"unreadable parquet file: {e}") from None
        return list(enumerate(table.to_pylist(), start=1))
    raise DataError(path, None, None, f"unsupported file type {suffix!r}: use .jsonl, .json or .parquet")


def load_problem_file(path: Path | str) -> list[Problem]:
    """All rows of a dataset file as Problems; any bad row raises DataError before training starts."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a directory; give a .jsonl, .json or .parquet file")
    if not path.is_file():
        raise DataError(path, None, None, "no such file")
    problems = [_row_to_problem(raw, path, row) for row, raw in _read_rows(path)]
    if not problems:
        raise DataError(path, None, None, "the dataset is empty")
    return problems
