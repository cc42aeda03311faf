"""Bad input is reported before any training, naming the file, the row and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from remix.data import DataError, load_problem_file
from remix.data.problems import load_task
from remix.models import ModelNotFound, resolve_model
from remix.runner import encode_problems
from remix.data.problems import Problem

ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"problem": "What is 1 + 1?", "answer": "2"})


@pytest.mark.parametrize(
    "lines, needle",
    [
        ([GOOD, "{not json"], "row 2: malformed JSON"),
        ([GOOD, GOOD, json.dumps({"answer": "3"})], "row 3, field 'problem': missing"),
        ([json.dumps({"problem": "p"})], "row 1, field 'answer': missing"),
        ([GOOD, json.dumps({"problem": "", "answer": "1"})], "row 2, field 'problem': expected a non-empty string"),
        ([json.dumps({"problem": "p", "answer": None})], "row 1, field 'answer'"),
        ([json.dumps({"problem": "p", "answer": True})], "row 1, field 'answer'"),
        ([json.dumps({"problem": "p", "answer": []})], "row 1, field 'answer': empty list"),
        ([json.dumps({"problem": "p", "answer": "  "})], "row 1, field 'answer': empty string"),
        ([json.dumps(["a", "b"])], "row 1: expected an object"),
        (["", "  "], "the dataset is empty"),
    ],
)
def test_jsonl_errors_name_file_row_field(tmp_path, lines, needle):
    path = _jsonl(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as e:
        load_problem_file(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_json_and_parquet_errors(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text('{"problem": "p", "answer": "1"}')
    with pytest.raises(DataError, match="must be a list"):
        load_problem_file(bad_json)
    truncated = tmp_path / "b.json"
    truncated.write_text('[{"problem": "p", "answer": "1"},')
    with pytest.raises(DataError, match=r"b\.json: malformed JSON at line 1"):
        load_problem_file(truncated)
    table = pa.table({"problem": ["What is 2 + 2?", "What is 3 + 3?"], "solution": ["4", "6"]})
    pq.write_table(table, tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet, row 1, field 'answer': missing"):
        load_problem_file(tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"definitely not parquet")
    with pytest.raises(DataError, match=r"d\.parquet: unreadable parquet file"):
        load_problem_file(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        (tmp_path / "e.csv").write_text("problem,answer\n")
        load_problem_file(tmp_path / "e.csv")
    with pytest.raises(DataError, match="no such file"):
        load_problem_file(tmp_path / "missing.jsonl")


def test_good_files_load_with_ids_and_answer_lists(tmp_path):
    path = _jsonl(tmp_path / "ok.jsonl", [GOOD, json.dumps({"id": 7, "problem": "q", "answer": [1.0, "x=1"]})])
    rows = load_problem_file(path)
    assert rows[0].id == "ok-1" and rows[0].answer == "2"
    assert rows[1].id == "7" and rows[1].answer == ["1", "x=1"]
    pq.write_table(pa.table({"problem": ["p"], "answer": [3]}), tmp_path / "ok.parquet")
    assert load_problem_file(tmp_path / "ok.parquet")[0].answer == "3"


def test_dataset_too_small_for_the_heldout_split(tmp_path):
    path = _jsonl(tmp_path / "small.jsonl", [GOOD] * 5)
    with pytest.raises(ValueError, match="lower --data.heldout-size"):
        load_task("file", path, heldout_size=5, levels=(1,))


def test_long_prompts_are_dropped_counted_and_reported(capsys):
    from remix.models.tokenizer import train_arith_tokenizer

    tok = train_arith_tokenizer()
    problems = [Problem("a", "What is 1 + 1?", "2"), Problem("b", "What is 1 + 1? " * 40, "2")]
    kept = encode_problems(tok, problems, max_tokens=64, what="training set")
    assert [e.problem.id for e in kept] == ["a"]
    assert "training set: dropped 1 of 2 prompts longer than 64 tokens" in capsys.readouterr().out
    with pytest.raises(ValueError, match="every prompt is longer"):
        encode_problems(tok, problems[1:], max_tokens=64, what="training set")


def test_unknown_model_names_and_folders(tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'no-such-model'.*tiny-arith"):
        resolve_model("no-such-model", tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(tmp_path / "folder", tmp_path)


def test_cli_reports_bad_data_before_training_and_writes_nothing(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [GOOD, json.dumps({"problem": "p", "answer": {"x": 1}})])
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "scripts/run.py", "--data.path", str(path), "--run-dir", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert f"error: {path}, row 2, field 'answer'" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()
