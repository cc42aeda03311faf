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


@pytest.fixture(scope="module")
def gqa_model_dir(tiny_model_dir, tmp_path_factory):
    """A small random Qwen2 with grouped-query attention (4 query heads share 2 key/value heads, as Qwen2.5's 12
    share 2), weights scaled up like sharp_model_dir's, with the tiny model's tokenizer."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("models") / "gqa-sharp"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
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
    DecodePlan(static_cache=True, prompt_multiple=16, cache_tokens=200),  # the cache far longer than needed
], ids=["exact-width", "bucket-64", "bucket-16-sync-4", "cache-200"])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
@pytest.mark.parametrize("model", ["sharp", "gqa"])
def test_static_cache_gives_the_dynamic_tokens_and_logprobs(sharp_model_dir, gqa_model_dir, model, plan, temperature):
    model_dir = {"sharp": sharp_model_dir, "gqa": gqa_model_dir}[model]
    params = SamplingParams(temperature=temperature, max_new_tokens=9, n=2)
    dynamic = TorchRollout(model_dir, seed=11)
    static = TorchRollout(model_dir, seed=11, decode=plan)
    prompts = _prompts(dynamic)  # 3 prompts x 2 = 6 rows: padded to a batch of 16 in the static layout
    want, got = _generate_twice(dynamic, prompts, params), _generate_twice(static, prompts, params)
    _assert_same(want, got)
    # the generator drew exactly the same numbers, also where the static loop ran past the last stop (sync_every)
    assert torch.equal(dynamic.generator.get_state(), static.generator.get_state())


def test_static_cache_stops_early_and_at_the_limit(sharp_model_dir):
    """Rows that stop keep their stop token; a row bucket's cache is reused, another bucket gets one of the same
    length, and a call that needs a longer cache replaces them all."""
    static = TorchRollout(sharp_model_dir, seed=0, decode=DecodePlan(static_cache=True, prompt_multiple=8,
                                                                    cache_tokens=64))
    dynamic = TorchRollout(sharp_model_dir, seed=0)
    stop = min(static.stop_ids)
    for rollout in (static, dynamic):
        rollout.stop_ids = {stop, 5, 6, 7}  # random weights: make early stops likely
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=4)
    prompts = _prompts(static, 2)
    _assert_same(_generate_twice(dynamic, prompts, params), _generate_twice(static, prompts, params))
    first = static._caches[16]  # 2 prompts x 4 = 8 rows: the bucket of 16
    length = static._cache_tokens
    static.generate(_prompts(static, 5), params)  # 20 rows -> the bucket of 64, a second cache, same length
    assert sorted(static._caches) == [16, 64] and static._caches[16] is first and static._cache_tokens == length
    static.generate(_prompts(static, 2), SamplingParams(temperature=1.0, max_new_tokens=200, n=4))
    assert static._cache_tokens > length and list(static._caches) == [16] and static._caches[16] is not first


def test_release_memory_frees_the_static_caches_and_decoding_goes_on(sharp_model_dir):
    static = TorchRollout(sharp_model_dir, seed=0, decode=DecodePlan(static_cache=True, prompt_multiple=8))
    params = SamplingParams(temperature=0.0, max_new_tokens=5)
    want = static.generate(_prompts(static), params)
    static.release_memory()
    assert static._caches == {}
    assert static.generate(_prompts(static), params) == want


def test_batch_buckets():
    assert [batch_bucket(n, 64) for n in (1, 2, 4, 5, 16, 17, 33, 64)] == [4, 4, 4, 16, 16, 64, 64, 64]
    assert [batch_bucket(n, 1) for n in (1,)] == [1]


class GraphRecorder:
    """A torch.compile backend that keeps every graph dynamo hands it (and runs it eagerly)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def test_one_compiled_decode_graph_per_row_bucket_whatever_the_prompts(sharp_model_dir):
    """Prompts of many lengths and batches of many sizes compile one decode graph per row bucket used (the cache
    has one length for the run). Before: one per (power-of-two batch, prompt bucket + new tokens), past
    torch.compile's recompile limit of 8 within a few evaluation and training calls."""
    import torch._dynamo

    torch._dynamo.reset()
    recorder = GraphRecorder()
    plan = DecodePlan(static_cache=True, compile=True, compile_backend=recorder, prompt_multiple=4, cache_tokens=48)
    rollout = TorchRollout(sharp_model_dir, seed=0, decode=plan)
    tok = rollout.tokenizer
    texts = ["1", "What is 1 + 2?", "Compute 12 - 5, then add 3 and 4 and 5 and 6."]
    for n in (1, 3, 6, 20):  # rows: buckets 4, 4, 16, 64
        for t in texts:  # prompt buckets of 4 tokens: several widths
            rollout.generate([tok(t)["input_ids"]] * n, SamplingParams(temperature=1.0, max_new_tokens=6))
    assert len({len(tok(t)["input_ids"]) // 4 for t in texts}) == 3  # three prompt buckets really were used
    assert len(recorder.graphs) == 3  # one per row bucket (4, 16, 64)
    torch._dynamo.reset()


def test_compiled_grouped_query_decode_never_expands_the_kv_cache(gqa_model_dir):
    """The compiled decode step of a grouped-query model attends the cached keys and values with their own
    (2) heads: no tensor in the traced graph has the shape of the cache expanded to the 4 query heads, which
    transformers' SDPA path builds in every layer under torch.compile (repeat_kv) when a mask is given."""
    import torch._dynamo

    def expanded_kv_nodes(plan_kwargs) -> int:
        torch._dynamo.reset()
        recorder = GraphRecorder()
        rollout = TorchRollout(gqa_model_dir, seed=0, decode=DecodePlan(
            static_cache=True, compile=True, compile_backend=recorder, prompt_multiple=8, cache_tokens=32,
            **plan_kwargs))
        rollout.generate(_prompts(rollout, 2), SamplingParams(temperature=1.0, max_new_tokens=4))
        (graph,) = recorder.graphs
        cfg = rollout.model.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        expanded = (4, cfg.num_attention_heads, 32, head_dim)  # [rows, query heads, cache slots, head dim]
        shapes = [tuple(n.meta["example_value"].shape) for n in graph.graph.nodes
                  if isinstance(n.meta.get("example_value"), torch.Tensor)]
        torch._dynamo.reset()
        return sum(shape == expanded for shape in shapes)

    assert expanded_kv_nodes({}) == 0
    from platforms.backend import rollout as rollout_module

    # the same count with transformers' own SDPA attention finds the expansion: keys and values in each layer
    original = rollout_module.use_grouped_decode_attention
    rollout_module.use_grouped_decode_attention = lambda model: False
    try:
        assert expanded_kv_nodes({}) >= 2 * 2
    finally:
        rollout_module.use_grouped_decode_attention = original


def test_compile_needs_the_static_layout():
    with pytest.raises(ValueError, match="static_cache"):
        DecodePlan(compile=True)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sharp", "gqa"])
def test_compiled_static_decode_matches_eager(sharp_model_dir, gqa_model_dir, model):
    """torch.compile of the decode step (what CUDA uses, there with CUDA graphs) changes nothing."""
    model_dir = {"sharp": sharp_model_dir, "gqa": gqa_model_dir}[model]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=2)
    eager = TorchRollout(model_dir, seed=5, decode=DecodePlan(static_cache=True, prompt_multiple=16))
    compiled = TorchRollout(model_dir, seed=5, decode=DecodePlan(static_cache=True, compile=True,
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


def test_the_stop_check_is_isin_in_ops_every_device_lowers():
    """torch-xla has no isin (it fell back to the host at every decode token): the comparison the rollout uses
    instead gives isin's answer, for one stop id and several, with ids on both sides of them."""
    from platforms.backend.rollout import is_stop

    tokens = torch.randint(0, 50, (257,), generator=torch.Generator().manual_seed(0))
    for stop in ([7], [0, 7, 49], list(range(0, 50, 3))):
        s = torch.tensor(stop)
        assert torch.equal(is_stop(tokens, s), torch.isin(tokens, s))
