"""bench/efficiency/initial_evaluation.py: the efficiency study's worker processes evaluate a shared base model's
step 0 once per key; a run that takes the cached result computes what it computes without."""

from __future__ import annotations

import dataclasses

from bench.efficiency import initial_evaluation
from remix.tracking import read_metrics
from tests.helpers import run, small_config


def test_a_process_can_reuse_its_step0_evaluation(tiny_model_dir, tmp_path, monkeypatch):
    """With evaluate_start=once_per_process (the efficiency study's worker processes), a second run from the same
    base model takes its step-0 evaluation from the first, and computes what it computes without."""
    from remix.trainer import Trainer

    calls = []
    evaluate = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: calls.append(self.step) or evaluate(self, *a, **k))
    monkeypatch.setattr(initial_evaluation, "_results", {})
    cached = initial_evaluation.once_per_process
    run(small_config(tiny_model_dir, steps=1, run_dir=tmp_path / "a"), evaluate_start=cached)
    reused = small_config(tiny_model_dir, steps=2, seed=1, algo="ppo", run_dir=tmp_path / "b")
    run(reused, evaluate_start=cached)
    assert calls == [0, 1, 2]  # a's step 0 and 1, b's step 2 only
    run(dataclasses.replace(reused, run_dir=tmp_path / "c"))
    assert calls[3:] == [0, 2]
    strip = [[{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(tmp_path / d /
                                                                                            "metrics.jsonl")]
             for d in ("b", "c")]
    assert strip[0] == strip[1]
    # another held-out split is another key: evaluated again
    run(small_config(tiny_model_dir, steps=1, run_dir=tmp_path / "d", data=dataclasses.replace(
        reused.data, heldout_size=6)), evaluate_start=cached)
    assert calls[5:] == [0, 1]
