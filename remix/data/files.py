"""Loading problem rows from jsonl, json or parquet files, a folder of parquet shards, or a Hugging Face `datasets`
folder written by `save_to_disk`; errors name the file, the row and the field.

The problem and the answer are read from the columns `--data.problem-key` and `--data.answer-key` (default `problem`
and `answer`); every other column stays with the row for the reward functions (remix/rewards/functions.py). The
answer column is needed only by the built-in math reward.
"""

from __future__ import annotations

import json
import math
import re
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


def _row_to_problem(raw: Any, path: Path, row: int, problem_key: str, answer_key: str | None,
                    answer_is_graded: bool) -> Problem:
    if not isinstance(raw, dict):
        raise DataError(path, row, None, f"expected an object with '{problem_key}'"
                        + (f" and '{answer_key}'" if answer_key else "") + f", got {type(raw).__name__}")
    for name, flag in ((problem_key, "--data.problem-key"), (answer_key, "--data.answer-key")):
        if name is not None and name not in raw:
            raise DataError(path, row, name, f"missing ({flag}); the row's columns are {', '.join(map(str, raw))}")
    problem = raw[problem_key]
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(path, row, problem_key, f"expected a non-empty string, got {problem!r:.60}")
    pid = raw.get("id", raw.get("unique_id"))
    answer = _answer(raw[answer_key], path, row) if answer_key is not None and answer_is_graded else None
    return Problem(id=str(pid) if pid is not None else f"{path.stem}-{row}", problem=problem, answer=answer, row=raw)


def _read_arrow_stream(path: Path) -> list[dict]:
    """The rows of one Arrow file of a `save_to_disk` folder (datasets writes the IPC stream format)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as f:
            return pa.ipc.open_stream(f).read_all().to_pylist()
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(path, None, None, f"unreadable Arrow file: {e}") from None


# A shard of a Hub dataset's split: train-00000-of-00003.parquet (directly in the folder or in data/).
_SPLIT_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-\d+-of-\d+\.parquet$")


def _parquet_shards(path: Path) -> list[Path]:
    """The parquet files of a folder (and its subfolders), in name order; of a Hub-style folder whose shards are
    named by split, those of the `train` split only (never test rows in training)."""
    shards = sorted(path.rglob("*.parquet"))
    splits = {m.group("split") for s in shards if (m := _SPLIT_SHARD.match(s.name))}
    if len(splits) > 1:
        if "train" not in splits:
            raise DataError(path, None, None, f"parquet shards of several splits ({', '.join(sorted(splits))}) and "
                            "none named train; give one split's file or folder")
        shards = [s for s in shards if (m := _SPLIT_SHARD.match(s.name)) and m.group("split") == "train"]
    return shards


def _read_folder(path: Path) -> list[Any]:
    """A `save_to_disk` folder (Dataset: state.json; DatasetDict: dataset_dict.json, whose `train` split is read), or
    a folder of parquet shards read in name order (a Hub-style folder: its train split's)."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (json.JSONDecodeError, AttributeError) as e:
            raise DataError(path / "dataset_dict.json", None, None, f"not a DatasetDict's split list: {e!r}") from None
        if "train" not in splits:
            raise DataError(path, None, None, f"a DatasetDict without a 'train' split (its splits: "
                            f"{', '.join(splits)}); give the split's folder, e.g. --data.path {path / splits[0]}"
                            if splits else "a DatasetDict without splits")
        return _read_folder(path / "train")
    if (path / "state.json").is_file():
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            files = [f["filename"] for f in state["_data_files"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(path / "state.json", None, None, f"not a datasets save_to_disk state: {e!r}") from None
        rows = [r for name in files for r in _read_arrow_stream(path / name)]
        return list(enumerate(rows, start=1))
    shards = _parquet_shards(path)
    if not shards:
        raise DataError(path, None, None, "is a folder without .parquet shards or a datasets save_to_disk folder; "
                        "give a .jsonl, .json or .parquet file or such a folder")
    rows = [r for shard in shards for _, r in _read_rows(shard)]
    return list(enumerate(rows, start=1))


def _read_rows(path: Path) -> list[Any]:
    if path.is_dir():
        return _read_folder(path)
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


def load_problem_file(path: Path | str, problem_key: str = "problem", answer_key: str | None = "answer",
                      answer_is_graded: bool = True) -> list[Problem]:
    """All rows of a dataset file or folder as Problems; any bad row raises DataError before training starts.
    `answer_key` None: no answer column is read (a reward that needs none). `answer_is_graded` False: the column must
    exist but may hold anything (the user's rewards read it from the row; `Problem.answer` is None)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "no such file or folder")
    problems = [_row_to_problem(raw, path, row, problem_key, answer_key, answer_is_graded)
                for row, raw in _read_rows(path)]
    if not problems:
        raise DataError(path, None, None, "the dataset is empty")
    return problems
