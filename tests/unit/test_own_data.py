"""Your own task's data and prompts: dataset columns (--data.problem-key, --data.answer-key, the rest passed through),
datasets' save_to_disk folders and parquet shards, and the prompt form (--data.prompt-template, --data.system-prompt,
--data.no-chat-template)."""

from __future__ import annotations

import json

import pytest

from remix.data import DataError, load_problem_file, load_task
from remix.prompts import PromptConfig, encode_prompt, format_prompt
from remix.validation import ConfigError

ROWS = [{"question": f"Reverse {w}", "solution": w[::-1], "level": i % 3, "tests": [w]}
        for i, w in enumerate(["abc", "hello", "remix", "token", "group", "batch", "prompt"])]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_columns_are_chosen_and_every_other_column_reaches_the_row(tmp_path):
    problems = load_problem_file(write_jsonl(tmp_path / "d.jsonl", ROWS), "question", "solution")
    assert [(p.problem, p.answer) for p in problems[:2]] == [("Reverse abc", "cba"), ("Reverse hello", "olleh")]
    assert problems[1].row == ROWS[1]  # level and tests too, for the reward functions
    # no answer column read: a reward that needs none
    assert load_problem_file(tmp_path / "d.jsonl", "question", None)[0].answer is None


def test_a_key_that_is_not_a_column_names_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match=r"d.jsonl, row 1, field 'problem': missing \(--data.problem-key\); the row's "
                                        r"columns are question, solution, level, tests$"):
        load_problem_file(path)
    with pytest.raises(DataError, match=r"row 1, field 'answer': missing \(--data.answer-key\)"):
        load_problem_file(path, "question")


def test_a_save_to_disk_folder_and_a_dataset_dict_are_read(tmp_path):
    datasets = pytest.importorskip("datasets")  # a dev dependency: the real writer, not a copy of its format
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(tmp_path / "single")
    datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(tmp_path / "dict")
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "no_train")
    for folder in ("single", "dict"):
        problems = load_problem_file(tmp_path / folder, "question", "solution")
        assert [p.row for p in problems] == ROWS
    with pytest.raises(DataError, match=r"a DatasetDict without a 'train' split \(its splits: test\); give the "
                                        r"split's folder, e.g. --data.path .*no_train/test$"):
        load_problem_file(tmp_path / "no_train", "question", "solution")


def test_parquet_shards_are_read_in_name_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[4:]), tmp_path / "shards" / "part-1.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[:4]), tmp_path / "shards" / "part-0.parquet")
    assert [p.row for p in load_problem_file(tmp_path / "shards", "question", "solution")] == ROWS


def test_a_file_task_splits_as_before_with_other_columns(tmp_path):
    """The split depends on the number of rows only: the same problems held out whatever the column names."""
    renamed = write_jsonl(tmp_path / "a.jsonl", ROWS)
    plain = write_jsonl(tmp_path / "b.jsonl", [{"problem": r["question"], "answer": r["solution"]} for r in ROWS])
    ours = load_task("file", renamed, 1, (1,), problem_key="question", answer_key="solution")
    theirs = load_task("file", plain, 1, (1,))
    assert [[p.problem for p in split] for split in ours] == [[p.problem for p in split] for split in theirs]


def test_the_default_prompt_is_the_benchmark_form():
    assert format_prompt("  What is 2 + 2?\n") == ("What is 2 + 2? Let's think step by step and output the final "
                                                 "answer within \\boxed{}.")


def test_template_system_prompt_and_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    form = PromptConfig("Q: {problem}\nA: {not a field}", "Be brief.")
    text = tok.decode(encode_prompt(tok, "Reverse abc", form))
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ: Reverse abc\nA: {not a field}"
                    "<|im_end|>\n<|im_start|>assistant\n")
    plain = tok.decode(encode_prompt(tok, "Reverse abc", PromptConfig("Q: {problem}", chat_template=False)))
    assert plain == "Q: Reverse abc"


@pytest.mark.parametrize("kwargs, flag", [
    ({"prompt_template": "Solve it."}, "--data.prompt-template: must contain {problem}"),
    ({"system_prompt": "x", "chat_template": False}, "--data.system-prompt: needs the chat template"),
    ({"problem_key": "question"}, "--data.problem-key: names a column of --data.path; the arith task's columns"),
])
def test_prompt_and_column_flags_are_checked(kwargs, flag):
    from remix.config import DataConfig

    with pytest.raises(ConfigError, match=flag):
        DataConfig(**kwargs)


def test_hub_style_parquet_shards_read_the_train_split_only(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:3]), data / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[3:5]), data / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[5:]), data / "test-00000-of-00001.parquet")
    assert [p.row for p in load_problem_file(tmp_path / "hub", "question", "solution")] == ROWS[:5]
    (data / "train-00000-of-00002.parquet").rename(data / "validation-00000-of-00001.parquet")
    (data / "train-00001-of-00002.parquet").unlink()
    with pytest.raises(DataError, match=r"parquet shards of several splits \(test, validation\) and none named train"):
        load_problem_file(tmp_path / "hub", "question", "solution")


def test_an_answer_column_the_rewards_read_must_exist_and_may_hold_anything(tmp_path):
    rows = [{"question": "q", "tests": {"in": [1], "out": [2]}}] * 5
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    problems = load_problem_file(path, "question", "tests", answer_is_graded=False)
    assert problems[0].answer is None and problems[0].row["tests"] == {"in": [1], "out": [2]}
    with pytest.raises(DataError, match=r"field 'solution': missing \(--data.answer-key\)"):
        load_problem_file(path, "question", "solution", answer_is_graded=False)


def test_a_system_prompt_needs_a_tokenizer_with_a_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    from remix.config import DataConfig

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match=r"^--data.system-prompt: the model's tokenizer \(.*\) has no chat template"):
        encode_prompt(tok, "q", DataConfig(system_prompt="Be brief."))
    assert encode_prompt(tok, "q", DataConfig()) == tok(format_prompt("q"))["input_ids"]  # plain text
