"""bench/efficiency/study_time.py: which runs of a study run again computed what the earlier study's runs did, and the
two studies' times side by side (run time, the measured span)."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def st():
    return importlib.import_module("bench.efficiency.study_time")


def _run(name: str, wall: float, started: str, tokens: int = 100, **provenance) -> dict:
    return {"run_dir": f"runs/bench-efficiency/{name}", "config": {"run_dir": name, "optim": {"lr": 1e-5}},
            "heldout": [[0, 0.25], [40, 0.5]], "validation": [], "wall_seconds": wall,
            "cost": {"rollouts": [0, 40], "learner_tokens": [0, tokens], "learn": [0.0, wall / 2]},
            "provenance": {"started": started, "resumed": [], "git_commit": "abc1234", **provenance}}


def _write(path: Path, runs: list[dict]) -> Path:
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_same_computations_and_times_side_by_side(st, tmp_path):
    before = [_run("a-lr1e-05-seed0", 100.0, "2026-12-03T08:00:00"), _run("a-lr1e-05-seed1", 100.0,
                                                                           "2026-12-03T08:00:00"),
              _run("b-lr1e-05-seed0", 200.0, "2026-12-03T08:02:00")]
    after = copy.deepcopy(before)
    for r in after:
        r["wall_seconds"] /= 2
        r["provenance"]["started"] = r["provenance"]["started"].replace("12-03", "12-04")
    after[0]["config"]["run_dir"] = "elsewhere"  # where it ran is not the experiment
    after[1]["cost"]["learner_tokens"] = [0, 101]  # its responses had other lengths: another computation
    after[2]["provenance"]["forked_from"] = {"step": 1}
    after[2]["provenance"]["resumed"] = ["2026-12-04T08:05:00"]  # its last invocation started then, 100 s long
    out = tmp_path / "out"
    st.main(st.StudyTimeConfig(before=_write(tmp_path / "b.json", before), after=_write(tmp_path / "a.json", after),
                               out=out))
    data = json.loads((out / "study_time.json").read_text())
    rows = {r["run"]: r for r in data["runs"]}
    assert data["same_computation"] == 2 and data["compared"] == 3
    assert rows["a-lr1e-05-seed1"]["first_difference"] == "learner_tokens at step 1"
    assert rows["b-lr1e-05-seed0"]["forked"] and not rows["a-lr1e-05-seed0"]["forked"]
    assert data["run_seconds_before"] == pytest.approx(400.0) and data["run_seconds_after"] == pytest.approx(200.0)
    assert data["span_seconds_after"] == pytest.approx(5 * 60 + 100)  # 08:00:00 to 08:05:00 + 100 s
    text = (out / "study_time.md").read_text()
    assert "**2 computed what the earlier study's run did**" in text
    assert "| a-lr1e-05 | 2 | 1 | 0 | 3.3 | 1.7 | 0.50x |" in text
    assert "- a-lr1e-05-seed1: learner_tokens at step 1" in text


def test_missing_or_unrelated_files_are_one_line_with_status_2(st, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        st.main(st.StudyTimeConfig(before=tmp_path / "nope.json", after=tmp_path / "nope.json", out=tmp_path))
    assert e.value.code == 2 and "--before" in capsys.readouterr().err
    a = _write(tmp_path / "a.json", [_run("a-lr1e-05-seed0", 1.0, "2026-12-03T08:00:00")])
    b = _write(tmp_path / "b.json", [_run("b-lr1e-05-seed0", 1.0, "2026-12-03T08:00:00")])
    with pytest.raises(SystemExit) as e:
        st.main(st.StudyTimeConfig(before=a, after=b, out=tmp_path))
    assert e.value.code == 2 and "has no run that" in capsys.readouterr().err
