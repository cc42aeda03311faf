"""metrics.jsonl and the optional metric sinks."""

from __future__ import annotations

import importlib.util
import math

import pytest

from remix.tracking import MetricsLog, read_metrics


def test_metrics_jsonl_round_trip_and_append(tmp_path):
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "reward/mean": 0.5, "note": "x"})
    log.log({"step": 2, "loss/policy": math.nan})
    log.close()
    again = MetricsLog(tmp_path, append=True)
    again.log({"step": 3})
    again.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["note"] == "x" and math.isnan(rows[1]["loss/policy"])


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_missing_tensorboard_extra_is_named(tmp_path):
    with pytest.raises(ImportError, match=r"remix-rft\[tensorboard\]"):
        MetricsLog(tmp_path, loggers=("tensorboard",))
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_wandb_extra_is_named(tmp_path):
    with pytest.raises(ImportError, match=r"remix-rft\[wandb\]"):
        MetricsLog(tmp_path, loggers=("wandb",))
