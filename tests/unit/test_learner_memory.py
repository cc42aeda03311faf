"""What the learner holds and computes at real sizes, checked on the CPU: log-prob passes a micro-batch at a
time, gradients freed between updates, AdamW fused on CUDA, the LM head converted once per pass and in bf16
plans on bf16-rounded inputs, and the NCCL process group bound to its GPU with a long timeout."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from platforms.backend import ParallelPlan
from platforms.backend import learner as learner_module
from platforms.backend.logprobs import head_logprobs
from platforms.cpu import make_learner
from remix import distributed as dist
from tests.helpers import small_config
from tests.integration.update_worker import B, fixed_batch, with_logprob_fields


def _rows_per_pass(module) -> list[int]:
    """Records the rows of every forward pass of `module` (a TokenLogprobs or the critic)."""
    rows: list[int] = []
    module.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])))
    return rows


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_logprob_and_value_passes_take_a_micro_batch_at_a_time_with_the_same_result(tiny_model_dir, algo):
    """A step's log-prob (and value) passes run --micro-batch-size rows at a time: the activations held are a
    micro-batch's (at 1.5B, 64 rows x 4,608 tokens in one pass: about 25 GB of temporaries in bf16, 45 GB in
    float32). Rows are independent: the results equal one pass over the whole batch."""
    cfg = small_config(tiny_model_dir, algo=algo, mini_batch_size=B, micro_batch_size=2)
    chunked = make_learner(tiny_model_dir, cfg)
    whole = make_learner(tiny_model_dir, replace(cfg, micro_batch_size=B))
    batch = fixed_batch(chunked.policy.lm.config.vocab_size)
    rows = _rows_per_pass(chunked.policy)
    got, want = chunked.logprobs(batch), whole.logprobs(batch)
    assert rows == [2] * (B // 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    if algo == "ppo":
        value_rows = _rows_per_pass(chunked.critic)
        torch.testing.assert_close(chunked.values(batch), whole.values(batch), rtol=0, atol=1e-6)
        assert value_rows == [2] * (B // 2)


def test_gradients_are_freed_after_each_update(tiny_model_dir):
    """Between updates the gradients (a float32 copy of the model) are gone, not kept until the next update."""
    learner = make_learner(tiny_model_dir, small_config(tiny_model_dir, algo="ppo", mini_batch_size=B,
                                                        micro_batch_size=2))
    batch = fixed_batch(learner.policy.lm.config.vocab_size)
    before = {k: v.clone() for k, v in learner.policy_weights()}
    learner.update(with_logprob_fields(batch, learner.logprobs(batch)), kl_lambda=1.0)
    assert any(not torch.equal(v, before[k]) for k, v in learner.policy_weights())  # it did update
    for module in (learner.policy, learner.critic):
        assert all(p.grad is None for p in module.parameters())


def test_adamw_is_fused_on_cuda_and_torch_default_elsewhere():
    assert learner_module.adamw_implementation(torch.device("cuda", 0)) == {"fused": True}
    assert learner_module.adamw_implementation(torch.device("cpu")) == {}


def test_bf16_head_multiplies_bf16_rounded_inputs_exactly():
    """In a bf16 plan the head's states and weight are rounded to bf16, then multiplied in float32: the float64
    product of the rounded inputs, to float32 rounding (what TF32 tensor cores give for such inputs too). A
    float32 plan multiplies the unrounded inputs."""
    g = torch.Generator().manual_seed(0)
    states, head = torch.randn(40, 16, generator=g), torch.nn.Linear(16, 50, bias=False)
    targets = torch.randint(0, 50, (40,), generator=g)

    def reference(rounded: bool) -> torch.Tensor:
        s, w = states.double(), head.weight.detach().double()
        if rounded:
            s, w = states.bfloat16().double(), head.weight.detach().bfloat16().double()
        return torch.log_softmax(s @ w.T, -1).gather(-1, targets[:, None]).squeeze(-1)

    for round_to, rounded in ((torch.bfloat16, True), (None, False)):
        logp, _ = head_logprobs(states, targets, head, 1.0, 16, with_grad=False, round_to=round_to)
        torch.testing.assert_close(logp.double(), reference(rounded), rtol=0, atol=1e-5)
    exact, _ = head_logprobs(states, targets, head, 1.0, 16, with_grad=False)
    rounded, _ = head_logprobs(states, targets, head, 1.0, 16, with_grad=False, round_to=torch.bfloat16)
    assert not torch.equal(exact, rounded)  # the rounding is real


def test_head_weight_is_converted_once_per_pass_not_once_per_chunk(monkeypatch):
    """Under FSDP2 bf16 the gathered head is bf16: converting it per chunk copied the whole head (0.9 GB at
    Qwen's vocabulary) every chunk_tokens tokens."""
    from platforms.backend import logprobs

    calls = []
    real = logprobs.head_weights
    monkeypatch.setattr(logprobs, "head_weights", lambda *a: calls.append(1) or real(*a))
    head = torch.nn.Linear(8, 30, bias=False).bfloat16()
    states = torch.randn(100, 8, requires_grad=True)
    logp, _ = logprobs.head_logprobs(states, torch.zeros(100, dtype=torch.long), head, 1.0, 10, with_grad=True,
                                     round_to=torch.bfloat16)
    logp.sum().backward()
    assert len(calls) == 1 and head.weight.grad is not None and states.grad is not None


def test_tf32_only_for_bf16_plans_on_cuda_and_restored_after():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with ParallelPlan(torch.device("cuda", 0), compute_dtype=torch.bfloat16).float32_matmuls():
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    for plan in (ParallelPlan(torch.device("cuda", 0)), ParallelPlan(torch.device("cpu"), torch.bfloat16)):
        with plan.float32_matmuls():
            assert matmul.fp32_precision == before


def test_nccl_process_group_is_bound_to_its_gpu_with_a_long_timeout(monkeypatch):
    """torchtitan's setup: cuda:LOCAL_RANK before any collective, `device_id` for an eager NCCL communicator, and
    a timeout that outlasts rank 0's slow work alone (model conversion, a checkpoint's HF folder at 7B)."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(dist.dist, "init_process_group", lambda backend, **kw: calls.update(backend=backend, **kw))
    dist.init("nccl")
    assert calls["set_device"] == calls["device_id"] == torch.device("cuda", 1)
    assert calls["backend"] == "nccl" and calls["timeout"].total_seconds() >= 30 * 60
    calls.clear()
    dist.init("gloo")
    assert "device_id" not in calls and calls["timeout"].total_seconds() >= 30 * 60
