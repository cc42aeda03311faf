"""scripts/gpu_check.py, the command a session with a GPU runs, works here on the CPU in its quick form, so
that the one GPU call of such a session is not spent on a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_and_passes_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    names = {r["check"] for r in rows}
    assert {"learner log-probs vs float64 host", "engine vs learner log-probs", "bf16 vs float32 update: direction",
            "compiled objective vs eager", "loop: steps finish with finite losses"} <= names
    assert all(r["passed"] for r in rows)
    assert "| check | value |" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: no CUDA device")
