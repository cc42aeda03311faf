"""scripts/study_time.py: which sample runs computed what the study's runs did, and the projection of the
study's time from their wall-time ratios."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def st():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("study_time", SCRIPTS / "study_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(root: Path, name: str, wall: float, reward: float = 0.5, lr: float = 1e-5, unix: float = 0.0) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"run_dir": str(d), "optim": {"lr": lr}, "seed": 0}))
    rows = [{"step": 0, "heldout/accuracy": 0.25, "time/unix": unix},
            {"step": 1, "reward/mean": reward, "time/learn": wall / 10, "time/unix": unix + 1}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"wall_seconds": wall}))


def test_identical_runs_and_the_projection(st, tmp_path):
    study, sample = tmp_path / "study", tmp_path / "sample"
    for seed in range(3):  # configuration a: 3 seeds of 100 s; b: 2 seeds of 200 s
        _run(study, f"a-lr1e-05-seed{seed}", 100.0)
    for seed in range(2):
        _run(study, f"b-lr1e-05-seed{seed}", 200.0)
    _run(study, "c-lr1e-05-seed0", 50.0)  # no sample run: not projected
    _run(sample, "a-lr1e-05-seed0", 80.0, unix=1e9)  # other timings only: the same computation
    _run(sample, "b-lr1e-05-seed0", 100.0, reward=0.75)  # one step's metrics differ
    st.main(st.StudyTimeConfig(study=study, sample=sample, out=tmp_path / "out"))
    data = json.loads((tmp_path / "out" / "study_time.json").read_text())
    runs = {r["run"]: r for r in data["runs"]}
    assert runs["a-lr1e-05-seed0"]["metrics"] == {} and not runs["a-lr1e-05-seed0"]["config_differences"]
    assert runs["b-lr1e-05-seed0"]["metrics"] == {"reward/mean": {"steps": 1, "max_absolute": 0.25,
                                                                  "max_relative": pytest.approx(1 / 3)}}
    assert data["same_computation"] == 1
    assert data["study_run_seconds"] == pytest.approx(700.0)
    assert data["projected_run_seconds"] == pytest.approx(3 * 100 * 0.8 + 2 * 200 * 0.5)
    assert data["uncovered"] == ["c-lr1e-05"]
    text = (tmp_path / "out" / "study_time.md").read_text()
    assert "1 of 2 computed what the study's run did" in text and "projected" in text


def test_a_config_difference_is_reported(st, tmp_path):
    _run(tmp_path / "study", "a-lr1e-05-seed0", 100.0)
    _run(tmp_path / "sample", "a-lr1e-05-seed0", 100.0, lr=2e-5)
    st.main(st.StudyTimeConfig(study=tmp_path / "study", sample=tmp_path / "sample", out=tmp_path / "out"))
    run = json.loads((tmp_path / "out" / "study_time.json").read_text())["runs"][0]
    assert run["config_differences"] == ["optim.lr: 1e-05 -> 2e-05"] and run["metrics"] == {}


def test_the_engines_rounding_is_told_apart(st, tmp_path):
    """sampler/logp_abs_diff may differ (the engine's batching), any other metric makes the runs different."""
    for root, x in (("study", 1e-7), ("sample", 1.1e-7)):
        _run(tmp_path / root, "a-lr1e-05-seed0", 100.0)
        path = tmp_path / root / "a-lr1e-05-seed0" / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[1]["sampler/logp_abs_diff"] = x
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    st.main(st.StudyTimeConfig(study=tmp_path / "study", sample=tmp_path / "sample", out=tmp_path / "out"))
    data = json.loads((tmp_path / "out" / "study_time.json").read_text())
    assert data["same_computation"] == 1
    assert data["runs"][0]["metrics"]["sampler/logp_abs_diff"]["max_absolute"] == pytest.approx(1e-8)


def test_no_common_runs_is_one_line_and_exit_2(st, tmp_path, capsys):
    _run(tmp_path / "study", "a-lr1e-05-seed0", 100.0)
    (tmp_path / "sample").mkdir()
    with pytest.raises(SystemExit) as e:
        st.main(st.StudyTimeConfig(study=tmp_path / "study", sample=tmp_path / "sample", out=tmp_path / "out"))
    assert e.value.code == 2
    assert "--sample" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
