"""platforms/cuda/sglang_rollout.py against a fake engine with SGLang 0.5.20's names (tests/fakes/sglang.py):
generation with log-probs, bucketed weight sync with the cache flush, memory release and resume, and the
trainer's order of calls. SGLang itself cannot run here (its kernels need a GPU); the contract test checks the
fake's names against the pinned wheel."""

from __future__ import annotations

import pytest
import torch

from platforms.cpu import make_learner
from platforms.cuda import rollout_engine
from platforms.cuda.sglang_rollout import SGLangRollout, buckets
from remix.batching import collate
from remix.interfaces import Group, SamplingParams
from remix.trainer import Trainer
from tests.fakes import sglang as fake
from tests.helpers import HashGrader, small_config


def _rollout(model_dir, **kw):
    return SGLangRollout(model_dir, seed=kw.pop("seed", 0), dtype="float32", api=fake.api(), **kw)


def _prompts(rollout):
    return [rollout.tokenizer(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi")]


def test_engine_is_started_colocated_with_memory_saver(tiny_model_dir):
    r = _rollout(tiny_model_dir, gpu=3, mem_fraction=0.4)
    args = r.engine.server_args
    assert args["base_gpu_id"] == 3 and args["tp_size"] == 1 and args["enable_memory_saver"]
    assert args["mem_fraction_static"] == 0.4 and args["skip_tokenizer_init"]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_generations_carry_engine_logprobs_that_match_the_learner(tiny_model_dir, temperature):
    cfg = small_config()
    cfg.rollout.temperature = temperature
    r = _rollout(tiny_model_dir, seed=1)
    prompts = _prompts(r)
    gens = r.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=8, n=3))
    assert [len(g) for g in gens] == [3, 3, 3]
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0] * 3, version=1,
                    engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    batch = collate(groups, r.pad_id)
    learner_logp = make_learner(tiny_model_dir, cfg).logprobs(batch)
    engine = torch.zeros_like(learner_logp)
    for i, t in enumerate(t for g in groups for t in g.engine_logp):
        engine[i, :len(t)] = t
    torch.testing.assert_close(learner_logp, engine, atol=1e-4, rtol=0)
    for g in (g for gs in gens for g in gs):
        assert g.finish_reason == ("stop" if g.token_ids[-1] in r.stop_ids else "length")


def test_sampling_is_seeded_from_the_checkpointed_generator(tiny_model_dir):
    params = SamplingParams(temperature=1.0, max_new_tokens=8, n=2)
    r = _rollout(tiny_model_dir)
    state = r.state_dict()
    first = r.generate(_prompts(r), params)
    r.load_state_dict(state)
    assert r.generate(_prompts(r), params) == first  # the same request seeds again
    assert r.generate(_prompts(r), params) != first


def test_weight_sync_in_buckets_then_one_cache_flush(tiny_model_dir):
    r = _rollout(tiny_model_dir, bucket_mb=1)
    r.bucket_bytes = 20_000  # the tiny model has ~60 KB of weights: several buckets
    learner = make_learner(tiny_model_dir, small_config())
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.01)
    r.generate(_prompts(r), SamplingParams(max_new_tokens=3))
    fake.Calls.patched_reductions = 0
    r.load_weights(learner.policy_weights())
    updates = [e for e in r.engine.log if e[0] == "update_weights_from_tensor"]
    assert len(updates) >= 3 and all(size <= 20_000 or count == 1 for _, size, count, _ in updates)
    assert not any(flush for *_, flush in updates)  # one flush after the last bucket, not one per bucket
    sent = sum(count for _, _, count, _ in updates)
    assert sent == len(learner.policy.lm.state_dict()) - 1  # all but the tied head, which SGLang derives
    assert r.engine.log[-1] == ("flush_cache",) and r.engine.cache_entries == 0
    assert fake.Calls.patched_reductions == 1
    want = {k: v for k, v in learner.policy.lm.state_dict().items()}
    got = r.engine.sampler.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_buckets_hold_about_the_bucket_size_and_cast_to_the_engine_dtype():
    weights = [(f"w{i}", torch.ones(100, dtype=torch.float32)) for i in range(10)]  # 400 B each
    out = list(buckets(iter(weights), 1000, torch.bfloat16))  # 200 B each in bf16: 5 per bucket
    assert [len(b) for b in out] == [5, 5]
    assert all(t.dtype == torch.bfloat16 for b in out for _, t in b)
    big = list(buckets(iter([("big", torch.ones(1000)), ("small", torch.ones(1))]), 100, torch.float32))
    assert [[n for n, _ in b] for b in big] == [["big"], ["small"]]


def test_memory_is_released_and_resumed(tiny_model_dir):
    r = _rollout(tiny_model_dir)
    r.release_memory()
    r.release_memory()  # idempotent: one release only
    assert r.engine.released == fake.MEMORY_TAGS
    with pytest.raises(RuntimeError, match="call resume_memory and load_weights first"):
        r.generate(_prompts(r), SamplingParams(max_new_tokens=2))
    r.resume_memory()
    assert r.engine.released == {"kv_cache"}  # the weights first; the KV cache after the sync
    with pytest.raises(RuntimeError, match="resume_memory and load_weights first"):
        r.generate(_prompts(r), SamplingParams(max_new_tokens=2))
    r.load_weights(make_learner(tiny_model_dir, small_config()).policy_weights())
    assert not r.engine.released
    names = [e[0] for e in r.engine.log]
    assert names[:2] == ["release_memory_occupation", "resume_memory_occupation"] and r.engine.log[1][1] == ("weights",)
    assert names[-2:] == ["resume_memory_occupation", "flush_cache"] and r.engine.log[-2][1] == ("kv_cache",)
    r.generate(_prompts(r), SamplingParams(max_new_tokens=2))


def test_a_refused_weight_update_stops_the_run(tiny_model_dir):
    r = _rollout(tiny_model_dir)
    r.engine.fail_next_update = "out of memory"
    with pytest.raises(RuntimeError, match="SGLang refused a weight update .*: out of memory"):
        r.load_weights(make_learner(tiny_model_dir, small_config()).policy_weights())


def test_greedy_generation_draws_no_seeds(tiny_model_dir):
    r = _rollout(tiny_model_dir)
    state = r.state_dict()["generator"].clone()
    r.generate(_prompts(r), SamplingParams(temperature=0.0, max_new_tokens=3))
    assert torch.equal(r.state_dict()["generator"], state)


def test_the_loop_releases_after_generating_and_resumes_before_the_weights(tiny_model_dir):
    """Two ReMix steps with the SGLang rollout: generate, release, learn, resume, weights in buckets, flush."""
    from remix.data import ArithTask, ProblemSource
    from remix.runner import encode_problems

    cfg = small_config(tiny_model_dir)
    r = _rollout(tiny_model_dir)
    task = ArithTask((1,))
    train = encode_problems(r.tokenizer, task.train_problems(), 512, "training set")
    trainer = Trainer(cfg, r, make_learner(tiny_model_dir, cfg), HashGrader(), r.tokenizer,
                      ProblemSource(train, 0), [])
    for _ in range(2):
        trainer.train_step()
    names = [e[0] for e in r.engine.log]
    # generate, release both, resume the weights, the buckets, resume the KV cache, flush; and again
    flush = names.index("flush_cache")
    assert names[:3] == ["generate", "release_memory_occupation", "resume_memory_occupation"]
    assert set(names[3:flush - 1]) == {"update_weights_from_tensor"} and names[flush - 1] == "resume_memory_occupation"
    assert names[flush + 1:flush + 4] == names[:3]
    assert [e[1] for e in r.engine.log if e[0] == "resume_memory_occupation"][:2] == [("weights",), ("kv_cache",)]


def test_unknown_server_args_or_sampling_keys_fail_in_the_fake(tiny_model_dir):
    """The fake is strict: a misspelt SGLang argument in the rollout would fail these tests."""
    with pytest.raises(TypeError, match="ServerArgs has no fields"):
        fake.Engine(model_path=str(tiny_model_dir), dtype="float32", mem_fraction=0.5)


def test_untempered_logprobs_are_refused(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SGLANG_RETURN_ORIGINAL_LOGPROB", "1")
    with pytest.raises(ValueError, match="SGLANG_RETURN_ORIGINAL_LOGPROB"):
        _rollout(tiny_model_dir)


def test_engine_choice(capsys):
    assert rollout_engine("auto", sglang_importable=True) == "sglang"
    assert rollout_engine("auto", sglang_importable=False) == "torch"
    assert "using the torch engine" in capsys.readouterr().out
    assert rollout_engine("torch", sglang_importable=True) == "torch"
    with pytest.raises(NotImplementedError, match="--rollout.engine sglang: sglang is not installed"):
        rollout_engine("sglang", sglang_importable=False)


def test_sglang_outside_cuda_is_a_config_error():
    from remix.validation import ConfigError

    with pytest.raises(ConfigError, match="--rollout.engine: sglang runs only on --platform cuda"):
        small_config(rollout=small_config().rollout.__class__(engine="sglang"))
