"""scripts/gpu_check.py, the command a session with a GPU runs, works here on the CPU in its quick form, so
that the one GPU call of such a session is not spent on a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_and_passes_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (report,) = tmp_path.glob("gpu-cpu-*.json")
    data = json.loads(report.read_text())
    rows = data["rows"]
    names = {r["check"] for r in rows}
    assert {"learner log-probs vs float64 host", "engine vs learner log-probs", "bf16 vs float32 update: direction",
            "compiled objective vs eager", "loop (tiny random): steps finish with finite losses",
            "loop (tiny random) first update on the device vs the CPU platform: loss/policy"} <= names
    assert any(n.startswith("cuda test ") for n in names)  # the cuda tests ran (and skipped, without a GPU)
    assert any("static KV cache" in n for n in names) and any("dynamic KV cache" in n for n in names)
    assert all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    assert set(data["wall_s"]) >= {"(a) cuda tests", "(c) at scale"}
    assert "| check | value |" in report.with_suffix(".md").read_text()


def test_a_failing_part_is_one_row_and_the_others_still_run(tmp_path, monkeypatch):
    """A part that raises names itself in the table; the script goes on and exits 1."""
    from scripts import gpu_check

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    for part in ("check_cuda_tests", "check_scale", "check_loop", "check_chunked_head"):
        monkeypatch.setattr(gpu_check, part, broken if part == "check_chunked_head" else lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path)])
    assert gpu_check.main() == 1
    (report,) = tmp_path.glob("gpu-cpu-*.json")
    rows = json.loads(report.read_text())["rows"]
    failed = [r for r in rows if not r["passed"]]
    assert [r["check"] for r in failed] == ["(b) chunked head: raised"] and "planted failure" in failed[0]["what"]
    assert any(r["check"] == "compiled objective vs eager" for r in rows)  # a later part... and earlier ones ran


def test_gpu_check_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, "-m", "scripts.gpu_check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: no CUDA device")
