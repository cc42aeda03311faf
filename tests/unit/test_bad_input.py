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
from remix.data.tasks import load_task
from remix.models import ModelNotFound, resolve_model
from remix.runner import RunError, encode_problems
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


def test_small_datasets_cap_the_heldout_split_at_a_fifth(tmp_path):
    rows = [json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(40)]
    train, heldout, _ = load_task("file", _jsonl(tmp_path / "small.jsonl", rows), heldout_size=256, levels=(1,))
    assert (len(train), len(heldout)) == (32, 8)
    with pytest.raises(DataError, match="4 problems are too few"):
        load_task("file", _jsonl(tmp_path / "tiny.jsonl", rows[:4]), heldout_size=256, levels=(1,))


def test_long_prompts_are_dropped_counted_and_reported(capsys):
    from remix.models.tokenizer import train_arith_tokenizer

    tok = train_arith_tokenizer()
    problems = [Problem("a", "What is 1 + 1?", "2"), Problem("b", "What is 1 + 1? " * 40, "2")]
    kept = encode_problems(tok, problems, max_tokens=64, what="training set")
    assert [e.problem.id for e in kept] == ["a"]
    assert "training set: dropped 1 of 2 prompts longer than 64 tokens" in capsys.readouterr().out
    with pytest.raises(RunError, match="every prompt is longer than --data.max-prompt-tokens"):
        encode_problems(tok, problems[1:], max_tokens=64, what="training set")


def test_unknown_model_names_and_folders(tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'no-such-model'.*tiny-arith"):
        resolve_model("no-such-model", tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(tmp_path / "folder", tmp_path)


def test_model_folders_without_weights_or_tokenizer_are_refused(tiny_model_dir, tmp_path):
    import shutil

    no_weights, no_tokenizer = tmp_path / "no-weights", tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, no_weights)
    shutil.copytree(tiny_model_dir, no_tokenizer)
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    for f in no_tokenizer.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ModelNotFound, match="no weights"):
        resolve_model(no_weights, tmp_path)
    with pytest.raises(ModelNotFound, match="no tokenizer"):
        resolve_model(no_tokenizer, tmp_path)
    assert resolve_model(tiny_model_dir, tmp_path) == tiny_model_dir


@pytest.mark.parametrize("case", ["model-without-weights", "run-dir-is-a-file", "run-dir-read-only",
                                  "every-prompt-too-long"])
def test_cli_user_errors_are_one_line_before_anything_is_loaded_or_written(case, tiny_model_dir, tmp_path):
    import shutil

    model, run_dir, extra = tiny_model_dir, tmp_path / "run", []
    if case == "model-without-weights":
        model = tmp_path / "m"
        shutil.copytree(tiny_model_dir, model)
        for f in model.glob("*.safetensors"):
            f.unlink()
    elif case == "run-dir-is-a-file":
        run_dir.write_text("not a folder")
    elif case == "run-dir-read-only":
        run_dir = Path("/proc/remix-run")  # a read-only file system even for root
    else:
        extra = ["--data.max-prompt-tokens", "8"]
    proc = subprocess.run([sys.executable, "scripts/run.py", "--model", str(model), "--run-dir", str(run_dir),
                           "--grader-workers", "1", *extra], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    needle = {"model-without-weights": "no weights", "run-dir-is-a-file": "not a directory",
              "run-dir-read-only": "cannot write", "every-prompt-too-long": "--data.max-prompt-tokens"}[case]
    assert needle in lines[0]
    if case != "run-dir-is-a-file":
        assert not run_dir.exists()


def test_cli_reports_bad_data_before_training_and_writes_nothing(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [GOOD, json.dumps({"problem": "p", "answer": {"x": 1}})])
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "scripts/run.py", "--data.path", str(path), "--run-dir", str(run_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert f"error: {path}, row 2, field 'answer'" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()


def test_a_directory_as_data_path_says_so(tmp_path):
    from remix.data import DataError, load_problem_file

    with pytest.raises(DataError, match="is a folder without .parquet shards or a datasets save_to_disk folder"):
        load_problem_file(tmp_path)


def test_a_run_directory_as_model_points_to_its_model(tmp_path):
    from remix.models import ModelNotFound, resolve_model

    (tmp_path / "model").mkdir()
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=f"is a remix run directory; its trained model is {tmp_path / 'model'}"):
        resolve_model(tmp_path)
