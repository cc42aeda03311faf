"""The CUDA platform on a GPU: what tests/unit checks on the CPU, on cuda:0 (skipped where no GPU is visible).

scripts/gpu_check.py runs these first (`pytest -m cuda tests/cuda`). The references are device-independent:
float64 on the host, the CPU platform's dynamic decode, eager against compiled.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from platforms import get_platform
from remix.batching import collate, positions_of
from remix.config import RolloutConfig
from remix.interfaces import Group, SamplingParams
from tests.helpers import small_config

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cuda():
    return get_platform("cuda")


def _prompts(tokenizer):
    return [tokenizer(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi")]


def _batch(rollout, params):
    prompts = _prompts(rollout.tokenizer)
    gens = rollout.generate(prompts, params)
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0] * len(gs), version=1,
                    engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    return collate(groups, rollout.pad_id), groups


def test_the_platform_is_on_the_gpu_with_nccl(cuda):
    assert cuda.DIST_BACKEND == "nccl" and cuda.device() == torch.device("cuda", 0)


def test_torch_engine_is_static_and_compiled_on_cuda(cuda, tiny_model_dir):
    rollout = cuda.make_rollout(tiny_model_dir, seed=0, options=RolloutConfig(engine="torch"))
    assert rollout.device.type == "cuda" and rollout.decode.static_cache and rollout.decode.compile


def test_greedy_static_compiled_decode_equals_the_cpu_reference(cuda, tiny_model_dir):
    on_gpu = cuda.make_rollout(tiny_model_dir, seed=0, options=RolloutConfig(engine="torch"))
    on_cpu = get_platform("cpu").make_rollout(tiny_model_dir, seed=0)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    prompts = _prompts(on_cpu.tokenizer)
    gpu, cpu = on_gpu.generate(prompts, greedy), on_cpu.generate(prompts, greedy)
    for (g,), (c,) in zip(gpu, cpu):
        assert g.token_ids == c.token_ids
        torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(c.logprobs), atol=1e-3, rtol=0)


def test_sampled_decode_on_the_gpu_draws_the_cpu_reference_tokens(cuda, tiny_model_dir):
    """Sampling draws its uniforms from the host generator on every device: with the same seed, the GPU's compiled
    static decode samples what the CPU's dynamic decode samples (log-probs to float rounding), and the two
    generators end in the same state (a checkpoint resumes on any device)."""
    on_gpu = cuda.make_rollout(tiny_model_dir, seed=4, options=RolloutConfig(engine="torch"))
    on_cpu = get_platform("cpu").make_rollout(tiny_model_dir, seed=4)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, n=3)
    prompts = _prompts(on_cpu.tokenizer)
    for gpu, cpu in zip(on_gpu.generate(prompts, params), on_cpu.generate(prompts, params)):
        for g, c in zip(gpu, cpu):
            assert g.token_ids == c.token_ids
            torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(c.logprobs), atol=1e-3, rtol=0)
    assert torch.equal(on_gpu.generator.get_state(), on_cpu.generator.get_state())


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampled_engine_logprobs_match_the_gpu_learner(cuda, tiny_model_dir, temperature):
    cfg = small_config()
    cfg.rollout.temperature = temperature
    rollout = cuda.make_rollout(tiny_model_dir, seed=3, options=RolloutConfig(engine="torch"))
    batch, groups = _batch(rollout, SamplingParams(temperature=temperature, max_new_tokens=8, n=3))
    learner_logp = cuda.make_learner(tiny_model_dir, cfg).logprobs(batch)
    engine = torch.zeros_like(learner_logp)
    for i, t in enumerate(t for g in groups for t in g.engine_logp):
        engine[i, :len(t)] = t
    torch.testing.assert_close(learner_logp, engine, atol=1e-3, rtol=0)


def test_gpu_learner_logprobs_equal_float64_on_the_host(cuda, tiny_model_dir):
    rollout = get_platform("cpu").make_rollout(tiny_model_dir, seed=1)
    batch, _ = _batch(rollout, SamplingParams(temperature=1.0, max_new_tokens=8, n=2))
    got = cuda.make_learner(tiny_model_dir, small_config()).logprobs(batch)
    model = rollout.model.double()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=positions_of(batch.attention_mask)).logits
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    want = F.log_softmax(logits[:, P - 1:P + T - 1], -1).gather(-1, batch.input_ids[:, P:P + T, None]).squeeze(-1)
    torch.testing.assert_close(got.double(), want * batch.response_mask, atol=1e-4, rtol=0)


def test_a_short_run_on_cuda_writes_its_run_directory(tiny_model_dir, tmp_path, monkeypatch):
    """Two ReMix-GRPO steps through run() on the GPU (compiled objective, torch engine), like the CPU run test."""
    import json

    from remix import runner
    from tests.helpers import HashGrader

    monkeypatch.setattr(runner, "GraderPool", lambda *a, **k: _Pool(HashGrader()))
    cfg = small_config(tiny_model_dir, platform="cuda", steps=2, run_dir=tmp_path / "run",
                       rollout=RolloutConfig(max_new_tokens=6, group_size=2, engine="torch"))
    summary = runner.run(cfg, cuda)
    assert summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(abs(r["loss/policy"]) < 1e6 for r in rows if "loss/policy" in r)


class _Pool:
    def __init__(self, grader):
        self.grader = grader

    def __enter__(self):
        return self.grader

    def __exit__(self, *exc):
        return False
