"""scripts/compare_runs.py: several run directories as one plot and one table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli():
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_runs"] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    return module.cli


def _fake_run(path: Path, after: float, finished: bool = True) -> Path:
    path.mkdir(parents=True)
    rows = [{"step": 0, "rollouts": 0, "heldout/accuracy": 0.2}, {"step": 1, "rollouts": 64},
            {"step": 2, "rollouts": 128, "heldout/accuracy": after}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "config.json").write_text(json.dumps({"algo": "grpo", "variant": "remix", "model": {"name": "m"},
                                                  "data": {"task": "arith"}}))
    if finished:
        (path / "summary.json").write_text(json.dumps({"algo": "grpo", "variant": "onpolicy", "model": "m",
                                                       "task": "arith", "wall_seconds": 12.3}))
    return path


def test_two_runs_give_one_plot_and_a_table(tmp_path, capsys):
    a, b = _fake_run(tmp_path / "a", 0.5), _fake_run(tmp_path / "b", 0.4, finished=False)
    out = tmp_path / "cmp.png"
    _cli()([str(a), str(b), "--out", str(out)])
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000
    row_a = next(line for line in text.splitlines() if line.startswith("a "))
    row_b = next(line for line in text.splitlines() if line.startswith("b "))
    assert "onpolicy" in row_a and "0.200 -> 0.500" in row_a and "12" in row_a
    assert "remix" in row_b and "0.200 -> 0.400 (unfinished)" in row_b and "128" in row_b


@pytest.mark.parametrize("case", ["not-a-run", "existing-out", "truncated-metrics"])
def test_bad_input_is_one_line_and_overwrites_nothing(tmp_path, capsys, case):
    a = _fake_run(tmp_path / "a", 0.5)
    out = tmp_path / "cmp.png"
    if case == "existing-out":
        out.write_bytes(b"mine")
        args = [str(a), "--out", str(out)]
    elif case == "truncated-metrics":  # a run killed while writing its last line
        b = _fake_run(tmp_path / "b", 0.4)
        (b / "metrics.jsonl").write_text((b / "metrics.jsonl").read_text() + '{"step": 3, "rollo')
        args = [str(a), str(b), "--out", str(out)]
    else:
        (tmp_path / "empty").mkdir()
        args = [str(a), str(tmp_path / "empty"), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        _cli()(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert (out.read_bytes() == b"mine") if case == "existing-out" else not out.exists()


def test_an_accuracy_run_and_a_reward_run_are_not_put_on_one_axis(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", 0.5)
    b = _fake_run(tmp_path / "b", 0.4)
    metrics = (b / "metrics.jsonl").read_text().replace("heldout/accuracy", "heldout/reward")
    (b / "metrics.jsonl").write_text(metrics)  # a run with its own --reward functions
    with pytest.raises(SystemExit) as e:
        _cli()([str(a), str(b), "--out", str(tmp_path / "cmp.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "a: accuracy, b: reward" in err
    assert not (tmp_path / "cmp.png").exists()
    _cli()([str(b), "--out", str(tmp_path / "b.png")])  # reward runs alone compare as rewards
    assert (tmp_path / "b.png").stat().st_size > 1000
