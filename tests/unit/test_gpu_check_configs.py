"""scripts/gpu_check.py at full size, without a GPU: every configuration it builds passes the config's checks
(the full-size one was refused before, which would have lost the GPU session's headline measurement), its
1.5B model prepares on the meta device as the learner would (nothing allocated), the MFU peak comes from the
GPU's name, and the report survives a missing package, a failing part and a spent time budget."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def gpu_check():
    from scripts import gpu_check

    return gpu_check


@pytest.mark.parametrize("quick", [False, True], ids=["full-size", "quick"])
def test_every_configuration_passes_the_config_checks(gpu_check, tmp_path, quick):
    configs = gpu_check.configurations(tmp_path, quick)  # TrainConfig validates on construction
    assert set(configs) >= {"(b) float32", "(b) tiny-arith loop", "(c) at scale"}
    for cfg in configs.values():
        cfg.validate()  # again, explicitly: a refused size fails here, not on the GPU
    scale = configs["(c) at scale"]
    z = gpu_check.scale_sizes(quick)
    assert scale.micro_batch_size == z["micro"] and scale.rollout.max_new_tokens == z["seq"] - z["prompt"]
    assert (scale.model.dtype, scale.model.activation_checkpointing) == ("bfloat16", True)


def test_the_full_size_model_prepares_on_the_meta_device(gpu_check):
    """Qwen2.5-1.5B's shape as the learner's plan prepares it for part (c) (bf16, activation checkpointing), on the
    meta device: the blocks are found, the parameter count the MFU uses, the frozen copy's bf16 layers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from platforms.backend import ParallelPlan
    from platforms.backend.logprobs import TokenLogprobs

    cfg = gpu_check.scale_config(Path("unused"), quick=False)
    plan = ParallelPlan(torch.device("meta"), compute_dtype=torch.bfloat16,
                        activation_checkpointing=cfg.model.activation_checkpointing)
    models = {}
    for trainable in (True, False):
        with torch.device("meta"):
            lm = Qwen2ForCausalLM(Qwen2Config(**gpu_check.QWEN15B))
        models[trainable] = plan.prepare(TokenLogprobs(lm, head_dtype=plan.head_dtype), trainable=trainable)
    assert round(sum(p.numel() for p in models[True].parameters()) / 1e9, 2) == 1.54
    assert {p.dtype for p in models[True].parameters()} == {torch.float32}
    assert {p.dtype for p in models[False].parameters()} == {torch.float32, torch.bfloat16}


def test_mfu_peak_comes_from_the_gpu_name(gpu_check):
    assert gpu_check.peak_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert gpu_check.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_check.peak_flops("NVIDIA H100 NVL") == 835e12
    assert gpu_check.peak_flops("NVIDIA H200") == 989e12
    assert gpu_check.peak_flops("NVIDIA GeForce RTX 4090") is None


def _main(gpu_check, monkeypatch, tmp_path, *flags) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path), *flags])
    rc = gpu_check.main()
    (report,) = tmp_path.glob("gpu-cpu-*.json")
    return rc, json.loads(report.read_text())


def test_a_package_that_lacks_what_the_wheels_need_stops_at_the_preflight(gpu_check, monkeypatch, tmp_path):
    """typeguard 4.6 needs typing_extensions.Sentinel: an older machine package is the report's row, and no part
    starts."""
    monkeypatch.setitem(gpu_check.PREFLIGHT, "typing_extensions", ("Sentinel", "NoSuchFeature"))
    called = []
    monkeypatch.setattr(gpu_check, "check_cuda_tests", lambda *a: called.append(1))
    rc, data = _main(gpu_check, monkeypatch, tmp_path)
    assert rc == 1 and not called and data["state"] == "stopped at the preflight"
    (failed,) = [r for r in data["rows"] if not r["passed"]]
    assert failed["check"] == "preflight: typing_extensions" and "NoSuchFeature" in failed["what"]


def test_the_budget_stops_a_running_part_and_skips_the_rest_with_the_report_written(gpu_check, monkeypatch,
                                                                                  tmp_path):
    for part in ("check_logprobs", "check_precision", "check_objective", "check_chunked_head", "check_loop"):
        monkeypatch.setattr(gpu_check, part, lambda *a: None)
    monkeypatch.setattr(gpu_check, "check_cuda_tests", lambda c, *a: c.add("quick part", 0.0, 0.0, "ran"))
    monkeypatch.setattr(gpu_check, "check_loop", lambda *a: time.sleep(30))  # runs past the budget
    rc, data = _main(gpu_check, monkeypatch, tmp_path, "--budget-s", "1.5")
    rows = {r["check"]: r for r in data["rows"]}
    assert rows["quick part"]["passed"] and rows["(b) tiny-arith loop: stopped"]["not_run"]
    assert rows["(c) at scale"]["not_run"] and "budget" in rows["(c) at scale"]["what"]
    assert data["wall_s"]["(b) tiny-arith loop"] < 10 and rc == 0
    assert "not run" in next(tmp_path.glob("gpu-cpu-*.md")).read_text()


def test_parts_selects_a_subset_and_rejects_unknown_names(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check, "check_objective", lambda c, *a: c.add("objective ran", 0.0, 0.0, ""))
    rc, data = _main(gpu_check, monkeypatch, tmp_path, "--parts", "objective")
    assert rc == 0 and list(data["wall_s"]) == ["(b) objective"]
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--parts", "objective,nope"])
    assert gpu_check.main() == 2 and "--parts: unknown part(s) nope" in capsys.readouterr().err
