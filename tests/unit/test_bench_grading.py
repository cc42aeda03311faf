"""bench/grading.py: every setting it times grades as verify_in_process does, and it writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_grading_benchmark_writes_its_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.grading", "--repeats", "1", "--problems", "60",
                          "--step-items", "10", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "grading.json").read_text())
    assert set(data["seconds"]) == {"before: one item per round trip, no box cache", "queue of 8 items, no box cache",
                                    "now: queue of 8 items and box cache"}
    assert all(len(xs) == 1 for by_batch in data["seconds"].values() for xs in by_batch.values())
    assert 0 < data["correct_items"][0] < 60  # some right, some wrong: the scores compared mean something
    text = (tmp_path / "grading.md").read_text()
    assert "| now: queue of 8 items and box cache |" in text and "Now against before" in text
