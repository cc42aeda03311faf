"""Training on several processes (torchrun, gloo, 2 CPU processes): one update split across ranks equals the
same update in one process; a 2-process run writes a consistent run directory; kill -9 of the whole job
and the same command again gives bit-identical weights to an uninterrupted 2-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from remix.checkpoint import list_checkpoints, read_meta
from tests.helpers import final_weights, kill_at_step, run_metrics_without_times, same_weights, small_cli_flags
from tests.integration.update_worker import LOSS_AGGS, updated_weights

ROOT = Path(__file__).resolve().parents[2]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    # --standalone: a private rendezvous on a free local port, so parallel jobs never collide
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def two_rank_updates(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "updates.pt"
    _check(subprocess.run(torchrun("-m", "tests.integration.update_worker", str(tiny_model_dir), str(out)),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300))
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
def test_update_split_across_two_ranks_equals_one_rank(tiny_model_dir, two_rank_updates, loss_agg):
    """FSDP2 over 2 ranks, each with half the sequences (and a different number of tokens), makes the update
    one process makes on the whole batch: policy and critic, for every aggregation mode. Float tolerance only:
    the two sum the same terms in another order."""
    one = updated_weights(tiny_model_dir, loss_agg)
    two = two_rank_updates["float32", loss_agg]
    assert one.keys() == two.keys()
    for k in one:
        if k.startswith("metric."):
            torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-7, msg=k)
        else:
            torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    # not vacuous: the update moved the policy and the (zero-initialised) critic head
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert not torch.equal(one["policy.model.norm.weight"], base["model.norm.weight"])
    assert one["critic.head.weight"].abs().sum() > 0


def test_bf16_update_on_two_ranks_agrees_with_float32(tiny_model_dir, two_rank_updates):
    """FSDP2 mixed precision (bf16 compute, float32 master weights and reductions) against float32 in one
    process; tolerances as in tests/unit/test_precision.py, which explains them."""
    from tests.unit.test_precision import assert_bf16_update_close

    assert_bf16_update_close(two_rank_updates["bfloat16", LOSS_AGGS[0]], updated_weights(tiny_model_dir, LOSS_AGGS[0]),
                             load_file(Path(tiny_model_dir) / "model.safetensors"))


def test_bf16_frozen_copies_on_two_ranks_are_bf16_and_exact(two_rank_updates):
    """Under FSDP2 bf16 the reference and precedent are stored in bf16 (half the bytes of the float32 policy)
    and compute exactly what the policy computes from the same weights: FSDP2 casts every gathered weight to
    bf16 anyway."""
    from tests.unit.test_precision import assert_frozen_copies_exact

    assert_frozen_copies_exact(two_rank_updates["frozen", "bfloat16"], all_bf16=True)


def test_lora_on_two_ranks(tiny_model_dir, two_rank_updates):
    """LoRA under FSDP2: the 2-rank update (merged weights, the critic's adapter and head) equals the 1-process
    one; bf16 (frozen base in bf16, adapter float32) trains; the reference is the base model and the precedent the
    policy at its snapshot, exactly; a save/load round trip restores all three exactly."""
    from tests.integration.update_worker import LORA

    one = updated_weights(tiny_model_dir, LOSS_AGGS[0], lora=LORA)
    two = two_rank_updates["lora", "float32"]
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(one[f"policy.{q}"], base[q])  # the merged adapter moved the engine's weights
    assert torch.equal(one["policy.model.norm.weight"], base["model.norm.weight"])  # not adapted: unchanged
    bf16 = two_rank_updates["lora", "bfloat16"]
    torch.testing.assert_close(bf16[f"policy.{q}"], one[f"policy.{q}"], rtol=0, atol=2e-2)
    anchors = two_rank_updates["lora", "anchors"]
    assert anchors["updated/moved"] > 1e-4
    assert {k: float(v) for k, v in anchors.items() if k != "updated/moved"} == {
        "start/reference": 0.0, "updated/reference": 0.0, "snapshot/precedent": 0.0, "resumed/current": 0.0,
        "resumed/reference": 0.0, "resumed/precedent": 0.0}


def _train(run_dir: Path, model_dir, steps: int, timeout: float = 300) -> subprocess.CompletedProcess:
    flags = small_cli_flags(model_dir, run_dir, steps)
    return _check(subprocess.run(torchrun(str(ROOT / "scripts" / "run.py"), *flags), cwd=ROOT, env=_env(),
                                 capture_output=True, text=True, timeout=timeout))


N = 6


@pytest.fixture(scope="module")
def straight_two_rank_run(tiny_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dist-straight") / "run"
    _train(run_dir, tiny_model_dir, N)
    return run_dir


def test_two_process_run_writes_a_consistent_run_directory(straight_two_rank_run):
    run_dir = straight_two_rank_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "accuracy.png", "model/model.safetensors",
                 "model/config.json"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(N + 1))  # one writer: no duplicated lines
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == N
    # Rollouts count both ranks' fresh responses: 16 a step, minus the historical share (3 groups) before T = 3.
    rollouts = [r["rollouts"] for r in records[1:]]
    assert rollouts[-1] == summary["rollouts"] and all(b - a in (10, 16) for a, b in zip([0, *rollouts], rollouts))
    assert all(0 <= r["heldout/accuracy"] <= 1 for r in records if "heldout/accuracy" in r)
    (checkpoint,) = list_checkpoints(run_dir)
    assert read_meta(checkpoint)["world_size"] == 2
    assert {p.name for p in checkpoint.iterdir()} >= {"trainer_state-rank0.pt", "trainer_state-rank1.pt"}
    assert same_weights(final_weights(run_dir), final_weights(run_dir))  # loadable safetensors
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(run_dir / "model")


def test_two_processes_mix_the_batch_as_one_process_does(tiny_model_dir, straight_two_rank_run, tmp_path):
    """The historical share, the rollouts and the buffer's size, step by step, do not depend on the number of
    processes: one draw of historical groups over the whole buffer, split into whole groups across the ranks (before,
    each rank rounded p x B / N to whole groups: 4 historical responses a step on 2 processes against 6 on one)."""
    one = tmp_path / "one"
    _check(subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), *small_cli_flags(tiny_model_dir, one, N)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300))
    keys = ("historical_share", "rollouts", "buffer/responses")

    def mix(run_dir):
        return [{k: r[k] for k in keys} for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if r["step"] > 0]

    assert mix(straight_two_rank_run) == mix(one)
    assert any(m["historical_share"] > 0 for m in mix(one))  # not vacuous: historical groups were drawn


def test_kill_9_of_the_whole_job_then_resume_equals_the_straight_run(tiny_model_dir, straight_two_rank_run,
                                                                     tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(torchrun(str(ROOT / "scripts" / "run.py"), *small_cli_flags(tiny_model_dir, run_dir, N)),
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: torchrun, both ranks, graders
    killed_at = kill_at_step(proc, run_dir, N // 2, whole_group=True)
    assert killed_at < N and list_checkpoints(run_dir), "expected an interrupted run with a checkpoint"
    out = _train(run_dir, tiny_model_dir, N).stdout
    assert "resumed from" in out
    assert same_weights(final_weights(run_dir), final_weights(straight_two_rank_run))
    assert run_metrics_without_times(run_dir) == run_metrics_without_times(straight_two_rank_run)


def test_resuming_with_another_number_of_processes_is_refused(tiny_model_dir, straight_two_rank_run):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"),
                           *small_cli_flags(tiny_model_dir, straight_two_rank_run, N + 1)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "written by 2 process" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
