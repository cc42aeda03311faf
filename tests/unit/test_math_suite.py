"""eval.math_suite: benchmark data, --from-responses end to end, bad input, and model mode with a fake Rollout."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from eval import math_suite
from eval.math_suite import BENCHMARKS, SuiteConfig, SuiteError, load_benchmark, main
from remix.interfaces import Generation

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_ROWS = {"aime2024": 30, "amc2023": 83, "math500": 500, "minerva": 272, "olympiadbench": 675}

RESPONSES = [  # aime2024: (1/2 + 1) / 2 = 75 %, amc2023: (1 + 0) / 2 = 50 %, average 62.5 %
    {"benchmark": "aime2024", "id": "aime2024-0", "response": "<think>\\boxed{1}</think> So \\boxed{204}"},
    {"benchmark": "aime2024", "id": "aime2024-0", "response": "I get \\boxed{205}."},
    {"benchmark": "aime2024", "id": "aime2024-1", "response": "\\boxed{25}"},
    {"benchmark": "amc2023", "id": "amc2023-0", "response": "The answer is $\\boxed{142}$."},
    {"benchmark": "amc2023", "id": "amc2023-1", "response": "\\boxed{0}"},
]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_benchmark_files():
    for name, expected in EXPECTED_ROWS.items():
        rows = load_benchmark(name)
        assert len(rows) == expected, name
        assert len({r["id"] for r in rows}) == expected, f"{name}: ids not unique"
        for r in rows:
            assert isinstance(r["id"], str) and isinstance(r["problem"], str) and r["problem"]
            assert r["answer"] and all(isinstance(a, str) and a == a.strip() and a for a in r["answer"])
    assert load_benchmark("amc2023")[0]["answer"] == ["142"]
    assert load_benchmark("math500")[0]["id"] == "test/precalculus/807.json"
    assert len(load_benchmark("math500", limit=3)) == 3


def test_from_responses_end_to_end(tmp_path):
    src = _write_jsonl(tmp_path / "responses.jsonl", RESPONSES)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.math_suite", "--from-responses", str(src), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AIME24" in proc.stdout and "62.5" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"aime2024", "amc2023"}
    aime, amc = results["benchmarks"]["aime2024"], results["benchmarks"]["amc2023"]
    assert (aime["pass@1"], aime["n"], aime["timeouts"]) == (75.0, 2, 0)
    assert (amc["pass@1"], amc["n"], amc["timeouts"]) == (50.0, 2, 0)
    assert results["average"] == 62.5 and results["samples"] == 2
    assert {"model", "temperature", "max_new_tokens", "date", "limit"} <= set(results)
    again = subprocess.run(
        [sys.executable, "-m", "eval.math_suite", "--from-responses", str(src), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    assert json.loads((out / "results.json").read_text()) == results  # the earlier results are intact
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [(g["id"], g["sample"], g["score"]) for g in gens] == [
        ("aime2024-0", 0, 1.0),
        ("aime2024-0", 1, 0.0),
        ("aime2024-1", 0, 1.0),
        ("amc2023-0", 0, 1.0),
        ("amc2023-1", 0, 0.0),
    ]


def test_from_responses_needs_no_torch(tmp_path):
    src = _write_jsonl(tmp_path / "r.jsonl", RESPONSES[:1])
    code = (
        "import sys; from pathlib import Path; from eval.math_suite import SuiteConfig, main; "
        f"main(SuiteConfig(from_responses=Path({str(src)!r}), out=Path({str(tmp_path / 'o')!r}))); "
        "assert 'torch' not in sys.modules"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_benchmark_filter(tmp_path):
    src = _write_jsonl(tmp_path / "r.jsonl", RESPONSES)
    results = main(SuiteConfig(from_responses=src, benchmarks=("amc2023",), out=tmp_path / "o"))
    assert list(results["benchmarks"]) == ["amc2023"] and results["average"] == 50.0


@pytest.mark.parametrize(
    "line, lineno, needle",
    [
        ('{"benchmark": "aime2024", "id": "aime2024-0"', 2, "malformed JSON"),
        ('["aime2024", "aime2024-0", "x"]', 2, "JSON object"),
        ('{"benchmark": "aime2024", "response": "x"}', 2, "field 'id'"),
        ('{"id": "aime2024-0", "response": "x"}', 2, "field 'benchmark'"),
        ('{"benchmark": "aime2024", "id": "aime2024-0"}', 2, "field 'response'"),
        ('{"benchmark": "aime2024", "id": "aime2024-0", "response": 5}', 2, "field 'response'"),
        ('{"benchmark": "aime2025", "id": "aime2024-0", "response": "x"}', 2, "field 'benchmark'"),
        ('{"benchmark": "aime2024", "id": "aime2024-99", "response": "x"}', 2, "field 'id'"),
    ],
)
def test_bad_input_names_file_row_field(tmp_path, line, lineno, needle):
    src = _write_jsonl(tmp_path / "bad.jsonl", [RESPONSES[0], line])
    with pytest.raises(SuiteError) as err:
        main(SuiteConfig(from_responses=src, out=tmp_path / "o"))
    assert str(src) in str(err.value) and f"line {lineno}" in str(err.value) and needle in str(err.value)


def test_cli_bad_input_exit_code(tmp_path):
    src = _write_jsonl(tmp_path / "bad.jsonl", ['{"benchmark": "nope", "id": "1", "response": "x"}'])
    proc = subprocess.run(
        [sys.executable, "-m", "eval.math_suite", "--from-responses", str(src)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{src}, line 1: field 'benchmark'" in proc.stderr and "aime2024" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({}, "exactly one"),
        ({"model": "m", "from_responses": Path("x.jsonl")}, "exactly one"),
        ({"model": "m", "samples": 0}, "--samples"),
        ({"model": "m", "temperature": -1.0}, "--temperature"),
        ({"model": "m", "samples": 4}, "--temperature > 0"),
        ({"model": "m", "benchmarks": ("aime2024", "aime")}, "olympiadbench"),
    ],
)
def test_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("+", r"\+")):
        SuiteConfig(**kwargs)


# --- model mode with a fake tokenizer and Rollout ----------------------------------------------


class FakeTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))


class FakeRollout:
    """Answers every AMC problem correctly on even samples, and wrongly on odd ones."""

    def __init__(self):
        self.answers = {r["problem"].strip(): r["answer"][0] for r in load_benchmark("amc2023")}
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        out = []
        for p in prompts:
            text = "".join(map(chr, p))
            answer = next(a for q, a in self.answers.items() if text.startswith(q))
            texts = [f"\\boxed{{{answer if k % 2 == 0 else 'x'}}}" for k in range(params.n)]
            out.append([Generation([ord(c) for c in t], [0.0] * len(t), "stop") for t in texts])
        return out


def test_model_mode_with_fake_rollout(tmp_path, monkeypatch):
    import transformers

    import platforms

    rollout = FakeRollout()
    fake_models = types.ModuleType("remix.models")
    fake_models.resolve_model = lambda name: tmp_path / name
    fake_models.quiet_transformers = lambda: None
    monkeypatch.setitem(sys.modules, "remix.models", fake_models)
    monkeypatch.setattr(
        transformers, "AutoTokenizer", types.SimpleNamespace(from_pretrained=lambda p: FakeTokenizer())
    )
    monkeypatch.setattr(
        platforms, "get_platform", lambda name: types.SimpleNamespace(make_rollout=lambda d, seed=0: rollout)
    )
    cfg = SuiteConfig(
        model="fake",
        benchmarks=("amc2023",),
        samples=2,
        temperature=0.7,
        limit=5,
        batch_size=2,
        max_new_tokens=16,
        out=tmp_path / "out",
    )
    results = main(cfg)
    assert results["benchmarks"]["amc2023"] == {
        "pass@1": 50.0,
        "n": 5,
        "timeouts": 0,
        "errors": 0,
        "samples": 2,
        "reflection_keyword_rate": 0.0,
    }
    assert results["model"] == "fake" and results["samples"] == 2 and results["temperature"] == 0.7
    assert results["grading"] == "boxed"  # the paper's rule, recorded with the numbers it produced
    code = results["code"]  # the code that graded: the grader's rules change with it
    assert code["git_commit"] is None or len(code["git_commit"]) == 40
    assert code["versions"]["math-verify"][0].isdigit()
    assert [n for n, _ in rollout.calls] == [2, 2, 1]
    assert all(p.n == 2 and p.temperature == 0.7 and p.max_new_tokens == 16 for _, p in rollout.calls)
    gens = (tmp_path / "out" / "generations.jsonl").read_text().splitlines()
    assert len(gens) == 10


def test_table_format():
    results = {
        "benchmarks": {b: {"pass@1": 10.0 * i, "n": 1} for i, b in enumerate(BENCHMARKS)},
        "average": 20.0,
    }
    table = math_suite.format_table(results, "my-model")
    assert (
        "AIME24" in table
        and "Olympiad" in table
        and "Avg." in table
        and "my-model" in table
        and "40.0" in table
    )
