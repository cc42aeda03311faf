"""The efficiency benchmark's curve arithmetic (scripts/bench_efficiency.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


CURVE = [(0, 0.20), (400, 0.24), (800, 0.31), (1200, 0.29), (1600, 0.36)]


def test_rollouts_to_reach_takes_the_first_evaluation_at_or_above(bench):
    assert bench.rollouts_to_reach(CURVE, 0.20) == 0
    assert bench.rollouts_to_reach(CURVE, 0.30) == 800  # not 1600: it got there first at 800
    assert bench.rollouts_to_reach(CURVE, 0.36) == 1600
    assert bench.rollouts_to_reach(CURVE, 0.37) is None


def test_accuracy_at_is_what_the_run_had_with_that_budget(bench):
    assert bench.accuracy_at(CURVE, 0) == 0.20
    assert bench.accuracy_at(CURVE, 799) == 0.24
    assert bench.accuracy_at(CURVE, 1200) == 0.29  # a later dip counts: no cherry-picking the best so far
    assert bench.accuracy_at(CURVE, 10**6) == 0.36


def test_eval_curve_reads_evaluation_records_only(bench):
    records = [{"step": 0, "rollouts": 0, "heldout/accuracy": 0.2}, {"step": 1, "rollouts": 64},
               {"step": 2, "rollouts": 128, "heldout/accuracy": 0.25}]
    assert bench.eval_curve(records) == [(0, 0.2), (128, 0.25)]


def test_configurations_and_run_dirs(bench):
    cfg = bench.BenchConfig(algos=("grpo",), ablations=True, seeds=(3,))
    names = list(bench.configurations(cfg))
    assert names[:2] == ["ReMix-GRPO", "GRPO"] and "ReMix-PPO" not in names and len(names) == 5
    tc = bench.run_config(cfg, "ReMix-GRPO w/o KL-Convex", "grpo", "remix", {"kl_convex": False}, 3)
    assert tc.remix.kl_convex is False and tc.seed == 3 and tc.steps == cfg.steps
    assert tc.batch_size == cfg.train.batch_size and tc.optim.lr == cfg.train.optim.lr  # shared settings
    assert str(tc.run_dir).endswith("remix-grpo-w-o-kl-convex-seed3")
