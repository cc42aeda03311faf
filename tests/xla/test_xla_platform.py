"""The XLA platform on the CPU through PJRT (`make test-xla`, in .venv-xla with torch 2.9 and torch-xla 2.9).

Against the CPU platform, the reference: the same ReMix-GRPO steps give the same tokens, and losses and
log-probs within the tolerance below; steps and generations in the same length bucket compile nothing new;
one SPMD update over 4 devices equals the one-device update; a checkpoint taken on XLA resumes to what an
uninterrupted run gives. Skipped where torch_xla is not installed (the project's own .venv).

Tolerance: XLA's CPU backend computes the same float32 arithmetic with other kernels (Eigen) and fuses and
reorders reductions, so results differ from PyTorch's by rounding: about 1e-7 relative per operation, a few
1e-6 after a forward and backward through the model and a few optimizer steps at lr 5e-5. 1e-4 absolute on
log-probs (the engine/learner agreement bound used on every platform) and 1e-4 relative on losses leave room
for that and catch any real error (a wrong mask, position or temperature moves them by far more).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

torch_xla = pytest.importorskip("torch_xla", reason="torch_xla is not installed here: `make test-xla` runs these")

import torch  # noqa: E402
import torch_xla.debug.metrics as met  # noqa: E402

from platforms import get_platform  # noqa: E402
from remix.config import ReMixConfig  # noqa: E402
from remix.data import ArithTask, ProblemSource  # noqa: E402
from remix.runner import encode_problems  # noqa: E402
from remix.trainer import Trainer  # noqa: E402
from tests.helpers import HashGrader, small_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _trainer(platform: str, model_dir, cfg) -> Trainer:
    p = get_platform(platform)
    rollout = p.make_rollout(model_dir, seed=cfg.seed, options=cfg.rollout)
    learner = p.make_learner(model_dir, cfg)
    task = ArithTask(cfg.data.arith_levels)
    train = encode_problems(rollout.tokenizer, task.train_problems(), 512, "training set")
    heldout = encode_problems(rollout.tokenizer, task.heldout_problems(8), 512, "held-out set")
    return Trainer(cfg, rollout, learner, HashGrader(), rollout.tokenizer, ProblemSource(train, cfg.seed), heldout)


def _config(model_dir, **kw):
    cfg = small_config(model_dir, **kw)
    return replace(cfg, objective=replace(cfg.objective, entropy_coef=0.01, kl_coef=0.05))


def compiles() -> int:
    data = met.metric_data("CompileTime")
    return 0 if data is None else int(data[0])


def test_remix_steps_match_the_cpu_platform(tiny_model_dir):
    """Four steps through reincarnation (T = 3): the same responses, losses and KLs within the tolerance."""
    cfg = _config(tiny_model_dir, steps=4)
    cpu, xla = _trainer("cpu", tiny_model_dir, cfg), _trainer("xla", tiny_model_dir, cfg)
    for _ in range(cfg.steps):
        want, got = cpu.train_step(), xla.train_step()
        assert got["response_length/mean"] == want["response_length/mean"]
        assert got["reward/mean"] == want["reward/mean"] and got["historical_share"] == want["historical_share"]
        for key in ("loss/policy", "kl/ref", "entropy", "grad_norm", "ratio/mean"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
        assert got["sampler/logp_abs_diff"] < 1e-4  # the XLA engine's log-probs against the XLA learner's
        engine = xla.rollout.model.state_dict()
        for name, t in xla.learner.policy_weights():  # the weight sync reached the engine's parameters
            assert torch.equal(engine[name].cpu(), t.cpu()), name
    assert [g.responses for g in xla.buffer._groups] == [g.responses for g in cpu.buffer._groups]
    batch = _probe_batch(cpu)
    torch.testing.assert_close(xla.learner.logprobs(batch), cpu.learner.logprobs(batch), atol=1e-4, rtol=0)


def _probe_batch(trainer):
    from remix.batching import collate
    from remix.interfaces import Group, SamplingParams

    prompts = [e.prompt_ids for e in trainer.heldout[:3]]
    gens = trainer.rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=6, n=2, seed=1))
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0, 0.0], version=1)
              for p, gs in zip(prompts, gens)]
    return collate(groups, trainer.pad_id)


def test_lora_steps_match_the_cpu_platform(tiny_model_dir):
    """--lora.rank on XLA (peft's layers trace like any module): four steps through reincarnation (T = 3) against
    the CPU platform's LoRA learner, the merged weights reaching the engine, the anchors from adapter swaps."""
    pytest.importorskip("peft")
    from remix.config import LoRAConfig

    cfg = _config(tiny_model_dir, steps=4, lora=LoRAConfig(rank=4, alpha=8.0))
    cpu, xla = _trainer("cpu", tiny_model_dir, cfg), _trainer("xla", tiny_model_dir, cfg)
    for _ in range(cfg.steps):
        want, got = cpu.train_step(), xla.train_step()
        assert got["response_length/mean"] == want["response_length/mean"]
        for key in ("loss/policy", "kl/ref", "entropy", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
        assert got["sampler/logp_abs_diff"] < 1e-4  # the engine holds the merged weights
    batch = _probe_batch(cpu)
    for policy in ("current", "reference", "precedent"):
        torch.testing.assert_close(xla.learner.logprobs(batch, policy).cpu(), cpu.learner.logprobs(batch, policy),
                                   atol=1e-4, rtol=0)


def test_lora_with_activation_checkpointing_trains_on_xla(tiny_model_dir):
    """XLA's checkpoint is reentrant: with the base frozen, nothing entering the first block required grad, and every
    block (and the LM head's chunks) fell out of the backward pass. One LoRA update with checkpointing on XLA against
    the CPU platform's."""
    pytest.importorskip("peft")
    from remix.config import LoRAConfig

    cfg = _config(tiny_model_dir, steps=1, lora=LoRAConfig(rank=4, alpha=8.0))
    cfg = replace(cfg, model=replace(cfg.model, activation_checkpointing=True))
    cpu, xla = _trainer("cpu", tiny_model_dir, cfg), _trainer("xla", tiny_model_dir, cfg)
    want, got = cpu.train_step(), xla.train_step()
    assert got["grad_norm"] > 0 and got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
    trained = {n: p.cpu() for n, p in xla.learner.policy.named_parameters() if ".lora_B." in n}
    reference = dict(cpu.learner.policy.named_parameters())
    assert any(p.abs().sum() > 0 for p in trained.values())
    for name, p in trained.items():
        torch.testing.assert_close(p, reference[name].detach(), atol=1e-6, rtol=1e-4, msg=name)


def test_a_bf16_learner_trains_on_xla_as_on_the_cpu_platform(tiny_model_dir):
    """`--model.dtype bfloat16` on XLA: under XLA's autocast, SDPA got float32 q and k (RoPE's float32 tables) beside
    a bf16 v and raised; the learner attends eagerly there. One ReMix step and the log-probs after it against the
    CPU platform's bf16 learner (autocast with SDPA), within bf16's rounding: both round the blocks' matmul inputs
    to bf16 (8 bits of mantissa, 4e-3 relative) but in different kernels and orders."""
    cfg = replace(_config(tiny_model_dir, steps=1), model=replace(_config(tiny_model_dir).model, dtype="bfloat16"))
    cpu, xla = _trainer("cpu", tiny_model_dir, cfg), _trainer("xla", tiny_model_dir, cfg)
    assert xla.learner.policy.lm.config._attn_implementation == "eager"
    want, got = cpu.train_step(), xla.train_step()  # float32 engines: the same samples from the same weights
    assert got["response_length/mean"] == want["response_length/mean"] and got["reward/mean"] == want["reward/mean"]
    for key in ("loss/policy", "entropy", "ratio/mean"):
        assert got[key] == pytest.approx(want[key], rel=2e-2, abs=2e-3), key
    batch = _probe_batch(cpu)
    diff = (xla.learner.logprobs(batch).cpu() - cpu.learner.logprobs(batch)).abs().max().item()
    print(f"bf16 learner, XLA against CPU: max |log-prob difference| {diff:.2e}")
    assert diff < 1e-2  # measured 1.7e-3; a wrong mask or position moves log-probs by 0.1 or more


def test_float32_matmuls_are_float32_on_a_tpu_too(tiny_model_dir):
    """A TPU's default precision computes float32 matmuls in one bf16 pass: a float32 run asks for 'highest', which
    XLA writes into every float32 dot of the HLO (the CPU backend computes float32 either way); a bf16 run keeps
    the default (its float32 head multiplies bf16-rounded operands, exact in one pass)."""
    import torch_xla.backends

    from platforms import xla

    p = get_platform("xla")
    try:
        p.make_learner(tiny_model_dir, _config(tiny_model_dir))
        assert torch_xla.backends.get_mat_mul_precision() == "highest"
        a = torch.randn(8, 8, device=xla.device())
        hlo = torch_xla._XLAC._get_xla_tensors_hlo([a @ a])
        assert "operand_precision={highest,highest}" in hlo, hlo
        xla.set_matmul_precision("bfloat16")
        assert torch_xla.backends.get_mat_mul_precision() == "default"
        assert "operand_precision" not in torch_xla._XLAC._get_xla_tensors_hlo([a @ a])
    finally:
        xla.set_matmul_precision("float32")


def test_activation_checkpointing_recomputes_in_the_optimized_hlo(tiny_model_dir, tmp_path):
    """XLA's common-subexpression pass merged the recomputation of torch's checkpoint back into the forward: the
    optimized HLO was the same with and without it. With the barrier (platforms/backend/recompute.py) the blocks'
    forward matmuls run again in the backward: more dots after optimization, and the same update."""
    runs = {}
    for flag in ("", "--activation-checkpointing"):
        dump, out = tmp_path / f"dump{flag}", tmp_path / f"update{flag}.json"
        env = {**os.environ, "PJRT_DEVICE": "CPU", "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text"}
        proc = subprocess.run([sys.executable, "-m", "tests.xla.hlo_worker", str(tiny_model_dir), str(out),
                               *([flag] if flag else [])], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        optimized = list(dump.glob("*after_optimizations.txt"))
        assert optimized, "XLA dumped no optimized HLO"
        dots = sum(f.read_text().count(" dot(") for f in optimized)
        runs[flag] = (dots, torch.tensor(json.loads(out.read_text())["delta"]))
    (plain, plain_delta), (recomputed, recomputed_delta) = runs[""], runs["--activation-checkpointing"]
    print(f"dots after optimization: {plain} without activation checkpointing, {recomputed} with it")
    assert recomputed > plain
    torch.testing.assert_close(recomputed_delta, plain_delta, atol=1e-6, rtol=1e-4)


def test_a_second_process_finds_its_programs_in_the_persistent_cache(tmp_path):
    """docs/platforms.md: with XLA_PERSISTENT_CACHE_PATH set (what torch_xla.runtime.initialize_cache sets), the first
    run writes each compiled program there and a second run finds it by its graph's hash instead of missing. On XLA's
    CPU backend the entry then fails to deserialize (torch-xla 2.9 cannot load CPU executables) and is compiled
    again; on a TPU, loading it is the cache's purpose (not executed here)."""
    code = ("import torch, torch_xla, torch_xla.debug.metrics as met\n"
            "a = torch.ones(16, 16, device=torch_xla.device())\n"
            "b = (a @ a).sum()\n"
            "torch_xla.sync()\n"
            "print(float(b), *(met.counter_value(f'PersistentCache{k}') or 0\n"
            "                  for k in ('Miss', 'Hit', 'DeserializeFailure')))")
    env = {**os.environ, "PJRT_DEVICE": "CPU", "XLA_PERSISTENT_CACHE_PATH": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    first, second = ([int(float(v)) for v in r.stdout.split()[-4:]] for r in runs)
    assert first == [4096, 1, 0, 0]  # the value; one program compiled and written
    assert len(list((tmp_path / "cache").iterdir())) == 1
    value, missed, hit, undeserializable = second
    assert value == 4096 and missed == 0 and hit + undeserializable == 1  # found, not missed


def test_a_multi_host_slice_is_refused_in_one_line(monkeypatch):
    """Every host of a pod would see a world of one and write full checkpoints and metrics: refused instead."""
    import torch_xla.runtime as xr

    from platforms import PlatformUnavailable, xla

    xla.check_single_host()  # one host here
    monkeypatch.setattr(xr, "process_count", lambda: 2)
    with pytest.raises(PlatformUnavailable, match="this slice has 2 hosts") as e:
        xla.check_single_host()
    assert "\n" not in str(e.value)


def test_a_training_step_waits_for_the_device_at_most_20_times(tiny_model_dir):
    """A step of the default job's shape (batch, mini- and micro-batches, group size, response length) on XLA:
    torch.isin has no XLA lowering, so the stop check ran on the host at every decode token, and each log-prob
    chunk was copied to the host on its own (89 device-to-host transfers per default step in all, issue 34). Now no
    op runs on the host's fallback path (reading a scalar, `bool(t)`, counts as one in torch-xla's metrics,
    `_local_scalar_dense`: a transfer, not a computation) and a step makes at most 20 transfers."""
    from remix.config import TrainConfig

    d = TrainConfig()
    cfg = replace(_config(tiny_model_dir, steps=2), batch_size=d.batch_size, mini_batch_size=d.mini_batch_size,
                  micro_batch_size=d.micro_batch_size, rollout=d.rollout)
    trainer = _trainer("xla", tiny_model_dir, cfg)
    trainer.train_step()
    met.clear_all()
    trainer.train_step()
    reads, transfers = met.counter_value("aten::_local_scalar_dense") or 0, met.metric_data("TransferFromDeviceTime")
    print(f"one step: {reads} scalar reads, {0 if transfers is None else transfers[0]} device-to-host transfers, "
          f"{met.metric_data('ExecuteTime')[0]} graph executions")
    assert [op for op in met.executed_fallback_ops() if op != "aten::_local_scalar_dense"] == []
    assert transfers is not None and transfers[0] <= 20


def test_later_steps_and_generations_in_a_bucket_compile_nothing(tiny_model_dir):
    cfg = _config(tiny_model_dir, steps=4, remix=ReMixConfig(reincarnation_step=None))
    trainer = _trainer("xla", tiny_model_dir, cfg)
    trainer.evaluate()
    trainer.train_step()
    trainer.train_step()  # the first step with historical groups and an optimizer state: new graphs
    before = compiles()
    assert before > 0
    trainer.train_step()
    assert compiles() == before, "a later training step in the same length buckets compiled new graphs"
    trainer.evaluate()
    assert compiles() == before, "a second generation in the same bucket compiled new graphs"
    from remix.interfaces import SamplingParams

    prompts, params = [e.prompt_ids for e in trainer.heldout], SamplingParams(temperature=1.0, max_new_tokens=6)
    trainer.rollout.generate(prompts[:7], params)  # 7, 5 and 6 rows: one batch bucket of 8
    before = compiles()
    trainer.rollout.generate(prompts[:5], params)
    trainer.rollout.generate(prompts[:6], params)
    assert compiles() == before, "another number of rows in the same batch bucket compiled new graphs"


def test_checkpoint_and_resume_on_xla(tiny_model_dir, tmp_path):
    from remix.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    cfg = _config(tiny_model_dir, steps=4)
    straight = _trainer("xla", tiny_model_dir, cfg)
    want = [straight.train_step() for _ in range(3)]
    first = _trainer("xla", tiny_model_dir, cfg)
    for _ in range(2):
        first.train_step()
    save_checkpoint(first, tmp_path)
    resumed = _trainer("xla", tiny_model_dir, cfg)
    load_checkpoint(resumed, list_checkpoints(tmp_path)[-1])
    assert resumed.step == 2 and resumed.buffer.num_responses() == first.buffer.num_responses()
    got = resumed.train_step()
    assert got["response_length/mean"] == want[2]["response_length/mean"]
    for key in ("loss/policy", "kl/ref", "grad_norm"):
        assert got[key] == pytest.approx(want[2][key], rel=1e-6, abs=1e-9), key
    a = dict(straight.learner.policy_weights())
    for name, t in resumed.learner.policy_weights():
        torch.testing.assert_close(t.cpu(), a[name].cpu(), atol=1e-6, rtol=0)


def test_lora_dropout_resumes_exactly_on_xla(tiny_model_dir, tmp_path):
    """LoRA dropout's masks come from the XLA device's generator, which torch.manual_seed leaves alone and XLA
    advances at every graph it runs: seeded per update from --seed and the update's number, a resumed run draws the
    masks the straight run drew, whatever ran in the process before (run after other tests too)."""
    pytest.importorskip("peft")
    from remix.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
    from remix.config import LoRAConfig

    cfg = _config(tiny_model_dir, steps=4, lora=LoRAConfig(rank=4, alpha=8.0, dropout=0.5))
    straight = _trainer("xla", tiny_model_dir, cfg)
    for _ in range(3):
        straight.train_step()
    first = _trainer("xla", tiny_model_dir, cfg)
    for _ in range(2):
        first.train_step()
    save_checkpoint(first, tmp_path)
    first.train_step()  # the same step as the straight run's third, from the same masks
    resumed = _trainer("xla", tiny_model_dir, cfg)
    load_checkpoint(resumed, list_checkpoints(tmp_path)[-1])
    resumed.train_step()
    def adapter(trainer) -> dict[str, torch.Tensor]:  # B is all an update moves at first: compared, not merged
        return {n: p.detach().cpu() for n, p in trainer.learner.policy.named_parameters() if ".lora_" in n}

    want = adapter(straight)
    assert any(t.abs().sum() > 0 for n, t in want.items() if ".lora_B." in n)
    for trainer in (first, resumed):
        for name, t in adapter(trainer).items():
            torch.testing.assert_close(t, want[name], atol=1e-9, rtol=1e-5, msg=name)


def test_spmd_update_over_four_devices_equals_one_device(tiny_model_dir, tmp_path):
    """One update of the FSDP-style SPMD learner over 4 XLA CPU devices (another process: the device count is
    fixed at start) against the CPU platform's update of the same batch and weights; the shardings of its
    micro-batches and of its state after a resume; the rollout's row-sharded decode against the CPU platform's."""
    from tests.xla.spmd_worker import one_update

    out = tmp_path / "spmd.json"
    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "4"}
    proc = subprocess.run([sys.executable, "-m", "tests.xla.spmd_worker", str(tiny_model_dir), str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spmd = json.loads(out.read_text())
    assert spmd["devices"] == 4 and spmd["trained"]["sharded"] == spmd["trained"]["shardable"] > 0
    # each micro-batch (4 rows) is sharded over the 4 devices by rows, not computed whole on every device
    assert len(spmd["micro_batch_shardings"]) == 2
    assert all(s.startswith("{devices=[4,1]") for s in spmd["micro_batch_shardings"]), spmd["micro_batch_shardings"]
    # after a resume the policy and AdamW's moments are sharded as before the checkpoint, not replicated
    assert spmd["resumed_weights_equal"] and spmd["resumed"] == spmd["trained"]
    # the per-step device-to-device copy into the precedent (snapshot_precedent) keeps the sharding: nothing to redo
    precedent = spmd["precedent_after_copy"]
    assert precedent["sharded"] == precedent["shardable"] == spmd["trained"]["shardable"]
    assert spmd["trained"]["sharded_moments"] == spmd["trained"]["moments"] == 2 * spmd["trained"]["shardable"]
    # the rollout decodes each device's share of the rows with its share of the KV cache, and samples what the
    # CPU platform samples
    from tests.xla.spmd_worker import generations

    assert spmd["rollout_cache_shardings"] and all(s.startswith("{devices=[4,1,1,1]")
                                                   for s in spmd["rollout_cache_shardings"])
    assert spmd["rollout_tokens"] == generations("cpu", tiny_model_dir)[0]
    cpu_metrics, cpu_delta = one_update("cpu", tiny_model_dir)
    for key in ("loss/policy", "grad_norm", "kl/ref"):
        assert spmd["metrics"][key] == pytest.approx(cpu_metrics[key], rel=1e-4, abs=1e-7), key
    delta = torch.tensor(spmd["delta"])
    torch.testing.assert_close(delta, cpu_delta, atol=1e-6, rtol=1e-3)


def test_spmd_lora_update_over_four_devices_equals_the_cpu_platforms(tiny_model_dir, tmp_path):
    """--lora.rank with SPMD over 4 XLA CPU devices (another process): one update with the precedent snapshotted
    against the CPU platform's LoRA update of the same batch; the frozen base weights sharded like the adapter (the
    base is most of the memory LoRA leaves), AdamW's moments for the adapter only, sharded; a save/load restores the
    weights and the shardings."""
    pytest.importorskip("peft")
    from tests.xla.spmd_worker import lora_update

    out = tmp_path / "spmd_lora.json"
    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "4"}
    proc = subprocess.run([sys.executable, "-m", "tests.xla.spmd_worker", str(tiny_model_dir), str(out), "lora"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spmd = json.loads(out.read_text())
    trained = spmd["trained"]
    assert spmd["devices"] == 4 and spmd["trainable"] == spmd["adapter"] > 0 and spmd["frozen_base"] > 0
    assert trained["sharded"] == trained["shardable"] > spmd["adapter"]  # base and adapter alike
    assert 0 < trained["sharded_moments"] == trained["moments"] <= 2 * spmd["adapter"]
    assert spmd["resumed_weights_equal"] and spmd["resumed"] == trained
    cpu = lora_update("cpu", tiny_model_dir)
    for key in ("loss/policy", "grad_norm", "kl/ref"):
        assert spmd["metrics"][key] == pytest.approx(cpu["metrics"][key], rel=1e-4, abs=1e-7), key
    torch.testing.assert_close(torch.tensor(spmd["delta"]), torch.tensor(cpu["delta"]), atol=1e-6, rtol=1e-3)
    for policy in ("current", "reference", "precedent"):
        torch.testing.assert_close(torch.tensor(spmd["logprobs"][policy]), torch.tensor(cpu["logprobs"][policy]),
                                   atol=1e-4, rtol=0, msg=policy)
