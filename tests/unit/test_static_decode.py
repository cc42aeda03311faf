"""The static-cache decode layout (CUDA and XLA) against the dynamic one (the CPU reference): same tokens,
same log-probs, same generator stream, whatever the padding to length and batch buckets."""

from __future__ import annotations

import pytest
import torch

from platforms.backend import TorchRollout
from platforms.backend.rollout import DecodePlan, batch_bucket
from remix.interfaces import SamplingParams


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random model with its weights scaled up: its next-token distributions are far from uniform
    and depend on positions and padding, so that a wrong position, mask or cache slot changes the tokens
    and moves log-probs by much more than the tolerance (the untouched model is nearly uniform)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(12.0)
    out = tmp_path_factory.mktemp("models") / "tiny-sharp"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _prompts(rollout, n=3):
    tok = rollout.tokenizer
    texts = ["What is 1 + 2?", "7 * 8 =", "Hi", "Compute 12 - 5, then add 3.", "9"]
    return [tok(t)["input_ids"] for t in texts[:n]]


def _generate_twice(rollout, prompts, params):
    """Two calls in a row: the second one checks that the generator stream stayed in step too."""
    return [rollout.generate(prompts, params) for _ in range(2)]


def _assert_same(a, b, atol=1e-5):
    for call_a, call_b in zip(a, b):
        for ga, gb in zip(call_a, call_b):
            for x, y in zip(ga, gb):
                assert x.token_ids == y.token_ids
                assert x.finish_reason == y.finish_reason
                torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=atol, rtol=0)


@pytest.mark.parametrize("plan", [
    DecodePlan(static_cache=True, prompt_multiple=1),
    DecodePlan(static_cache=True, prompt_multiple=64),  # every prompt gets more left padding
    DecodePlan(static_cache=True, prompt_multiple=16, sync_every=4),
], ids=["exact-width", "bucket-64", "bucket-16-sync-4"])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_static_cache_gives_the_dynamic_tokens_and_logprobs(sharp_model_dir, plan, temperature):
    params = SamplingParams(temperature=temperature, max_new_tokens=9, n=2)
    dynamic = TorchRollout(sharp_model_dir, seed=11)
    static = TorchRollout(sharp_model_dir, seed=11, decode=plan)
    prompts = _prompts(dynamic)  # 3 prompts x 2 = 6 rows: padded to a batch of 8 in the static layout
    want, got = _generate_twice(dynamic, prompts, params), _generate_twice(static, prompts, params)
    _assert_same(want, got)
    # the generator drew exactly the same numbers, also where the static loop ran past the last stop (sync_every)
    assert torch.equal(dynamic.generator.get_state(), static.generator.get_state())


def test_static_cache_stops_early_and_at_the_limit(sharp_model_dir):
    """Rows that stop keep their stop token; the cache is reused for the same shape and replaced for another."""
    static = TorchRollout(sharp_model_dir, seed=0, decode=DecodePlan(static_cache=True, prompt_multiple=8))
    dynamic = TorchRollout(sharp_model_dir, seed=0)
    stop = min(static.stop_ids)
    for rollout in (static, dynamic):
        rollout.stop_ids = {stop, 5, 6, 7}  # random weights: make early stops likely
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=4)
    prompts = _prompts(static, 2)
    _assert_same(_generate_twice(dynamic, prompts, params), _generate_twice(static, prompts, params))
    shape = static._static[0]
    static.generate(_prompts(static, 5), params)  # 20 rows -> a batch of 32, another cache
    assert static._static[0] != shape


def test_batch_buckets():
    assert [batch_bucket(n, 64) for n in (1, 2, 3, 5, 33, 64)] == [1, 2, 4, 8, 64, 64]


def test_compile_needs_the_static_layout():
    with pytest.raises(ValueError, match="static_cache"):
        DecodePlan(compile=True)


@pytest.mark.slow
def test_compiled_static_decode_matches_eager(sharp_model_dir):
    """torch.compile of the decode step (what CUDA uses, there with CUDA graphs) changes nothing."""
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=2)
    eager = TorchRollout(sharp_model_dir, seed=5, decode=DecodePlan(static_cache=True, prompt_multiple=16))
    compiled = TorchRollout(sharp_model_dir, seed=5, decode=DecodePlan(static_cache=True, compile=True,
                                                                      prompt_multiple=16))
    prompts = _prompts(eager)
    _assert_same(_generate_twice(eager, prompts, params), _generate_twice(compiled, prompts, params), atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_finished_rows_leaving_the_batch_change_nothing(sharp_model_dir, temperature):
    """Compaction (rows that stopped leave the batch and its cache) and wide batches give the tokens, log-probs
    and generator stream of the plain dynamic loop, also where rows stop early and at different steps."""
    plain = TorchRollout(sharp_model_dir, seed=3, decode=DecodePlan(compact_finished=False, wide_batch_kv_bytes=0))
    compact = TorchRollout(sharp_model_dir, seed=3)
    params = SamplingParams(temperature=temperature, max_new_tokens=12, n=4)
    prompts = _prompts(plain, 5)  # 20 rows
    # Stop tokens taken from what the same seed samples: every other row's token at step 2-10 (random weights
    # rarely emit the real stop), so that many rows stop early, at different steps, and compaction happens.
    first = [g for group in TorchRollout(sharp_model_dir, seed=3).generate(prompts, params) for g in group]
    stops = {min(plain.stop_ids)} | {first[i].token_ids[1 + i % 9] for i in range(0, len(first), 2)}
    for rollout in (plain, compact):
        rollout.stop_ids = stops
    want, got = _generate_twice(plain, prompts, params), _generate_twice(compact, prompts, params)
    lengths = {len(g.token_ids) for call in got for group in call for g in group}
    assert len(lengths) > 1 and min(lengths) < 6  # rows stopped early, at different steps: compaction happened
    _assert_same(want, got)
    assert torch.equal(plain.generator.get_state(), compact.generator.get_state())


def test_wide_batches_only_where_the_cache_is_small(sharp_model_dir):
    from remix.interfaces import SamplingParams as P

    rollout = TorchRollout(sharp_model_dir)
    prompts = [[1, 2, 3]] * 1000
    assert rollout._rows_per_batch(prompts, P(max_new_tokens=8)) == 512  # tiny model: the row cap
    huge = P(max_new_tokens=10_000_000)  # a KV cache beyond the budget at any width: max_batch rows
    assert rollout._rows_per_batch(prompts, huge) == rollout.max_batch
    static = TorchRollout(sharp_model_dir, decode=DecodePlan(static_cache=True))
    assert static._rows_per_batch(prompts, P(max_new_tokens=8)) == static.max_batch
