"""platforms/cuda/sglang_rollout.py against a fake engine with SGLang 0.5.20's names and behaviour
(tests/fakes/sglang.py): generation with log-probs, bucketed weight sync with the cache flush, memory release and
resume, the trainer's order of calls, and what SGLang does to the trainer's process (signals, torchrun's
environment, failures in its scheduler). SGLang itself cannot run here (its kernels need a GPU); the contract
test checks the fake's names against the pinned wheel, and tests/integration/test_sglang_run.py runs whole
training runs, with signals and under torchrun, against the fake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from platforms.cpu import make_learner
from platforms.cuda import rollout_engine
from platforms.cuda.sglang_rollout import SGLangRollout, buckets, engine_died, engine_process_environment
from remix.batching import collate
from remix.config import RolloutConfig
from remix.interfaces import Group, RolloutFailed, SamplingParams
from remix.trainer import Trainer
from tests.fakes import sglang as fake
from tests.helpers import HashGrader, small_config

ROOT = Path(__file__).resolve().parents[2]
# SGLang's shutdown SIGKILLs every child process, multiprocessing's resource tracker too, which says so when
# it is started again: expected here
pytestmark = pytest.mark.filterwarnings("ignore:resource_tracker. process died unexpectedly:UserWarning")
BF16_LOGP_ATOL = 0.05  # a bf16 engine against the float32 learner on the tiny model (measured within 0.02)


@pytest.fixture
def rollouts(tiny_model_dir):
    """Makes SGLang rollouts (fake engine); shuts them down after the test, one at a time, as SGLang's shutdown
    kills every child process of this one."""
    made = []

    def make(**kw):
        r = SGLangRollout(tiny_model_dir, seed=kw.pop("seed", 0), dtype=kw.pop("dtype", "bfloat16"), api=fake.api(),
                          **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.shutdown()


def _prompts(rollout):
    return [rollout.tokenizer(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi")]


def test_engine_is_started_colocated_with_memory_saver(rollouts):
    r = rollouts(gpu=3, mem_fraction=0.4)
    args = r.engine.server_args
    assert args["base_gpu_id"] == 3 and args["tp_size"] == 1 and args["enable_memory_saver"]
    assert args["mem_fraction_static"] == 0.4 and args["skip_tokenizer_init"]
    assert args["custom_sigquit_handler"] is engine_died and "port" not in args  # the offline engine opens none


def test_a_float32_run_samples_with_a_bf16_engine_and_says_so(rollouts, capsys):
    """SGLang's attention kernels take no float32 (the fake refuses it where SGLang fails, at start-up)."""
    with pytest.raises(RuntimeError, match="FlashAttention only supports fp16, bf16"):
        fake.Engine(model_path="unused", dtype="float32")
    r = rollouts(dtype="float32")
    assert r.engine.server_args["dtype"] == "bfloat16" and r.dtype == torch.bfloat16
    assert "SGLang samples with bfloat16 weights" in capsys.readouterr().out


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_generations_carry_engine_logprobs_that_match_the_learner(tiny_model_dir, rollouts, temperature):
    cfg = small_config()
    cfg.rollout.temperature = temperature
    r = rollouts(seed=1)
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
    torch.testing.assert_close(learner_logp, engine, atol=BF16_LOGP_ATOL, rtol=0)
    if temperature != 1.0:  # the tolerance still tells tempered from untempered log-probs apart
        cfg.rollout.temperature = 1.0
        assert (make_learner(tiny_model_dir, cfg).logprobs(batch) - engine).abs().max() > 4 * BF16_LOGP_ATOL
    for g in (g for gs in gens for g in gs):
        assert g.finish_reason == ("stop" if g.token_ids[-1] in r.stop_ids else "length")


def test_sampling_is_seeded_from_the_checkpointed_generator(rollouts):
    params = SamplingParams(temperature=1.0, max_new_tokens=8, n=2)
    r = rollouts()
    state = r.state_dict()
    first = r.generate(_prompts(r), params)
    r.load_state_dict(state)
    assert r.generate(_prompts(r), params) == first  # the same request seeds again
    assert r.generate(_prompts(r), params) != first


def test_weight_sync_in_buckets_then_one_cache_flush(tiny_model_dir, rollouts):
    r = rollouts(bucket_mb=1)
    r.bucket_bytes = 10_000  # the tiny model has ~30 KB of bf16 weights: several buckets
    learner = make_learner(tiny_model_dir, small_config())
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.01)
    r.generate(_prompts(r), SamplingParams(max_new_tokens=3))
    fake.Calls.patched_reductions = 0
    r.load_weights(learner.policy_weights())
    updates = [e for e in r.engine.log if e[0] == "update_weights_from_tensor"]
    assert len(updates) >= 3 and all(size <= 10_000 or count == 1 for _, size, count, _ in updates)
    assert not any(flush for *_, flush in updates)  # one flush after the last bucket, not one per bucket
    sent = sum(count for _, _, count, _ in updates)
    assert sent == len(learner.policy.lm.state_dict()) - 1  # all but the tied head, which SGLang derives
    assert r.engine.log[-1] == ("flush_cache",) and r.engine.cache_entries == 0
    assert fake.Calls.patched_reductions == 1
    want = {k: v.to(torch.bfloat16) for k, v in learner.policy.lm.state_dict().items()}  # the engine's dtype
    got = r.engine.sampler.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_buckets_hold_about_the_bucket_size_and_cast_to_the_engine_dtype():
    weights = [(f"w{i}", torch.ones(100, dtype=torch.float32)) for i in range(10)]  # 400 B each
    out = list(buckets(iter(weights), 1000, torch.bfloat16))  # 200 B each in bf16: 5 per bucket
    assert [len(b) for b in out] == [5, 5]
    assert all(t.dtype == torch.bfloat16 for b in out for _, t in b)
    big = list(buckets(iter([("big", torch.ones(1000)), ("small", torch.ones(1))]), 100, torch.float32))
    assert [[n for n, _ in b] for b in big] == [["big"], ["small"]]


def test_memory_is_released_and_resumed(tiny_model_dir, rollouts, monkeypatch):
    from platforms.cuda import sglang_rollout

    r = rollouts()
    # where the trainer's cached CUDA blocks and the buckets' IPC handles go back (a no-op without a GPU)
    monkeypatch.setattr(sglang_rollout, "give_back_cuda_memory",
                        lambda collect_garbage=True: r.engine.log.append(("give_back",)))
    r.release_memory()
    r.release_memory()  # idempotent: one release only
    assert r.engine.released == fake.MEMORY_TAGS == {"kv_cache", "weights", "cuda_graph"}
    with pytest.raises(RuntimeError, match="call resume_memory and load_weights first"):
        r.generate(_prompts(r), SamplingParams(max_new_tokens=2))
    r.resume_memory()
    assert r.engine.released == {"kv_cache", "cuda_graph"}  # the weights first; the rest after the sync
    with pytest.raises(RuntimeError, match="resume_memory and load_weights first"):
        r.generate(_prompts(r), SamplingParams(max_new_tokens=2))
    r.load_weights(make_learner(tiny_model_dir, small_config()).policy_weights())
    assert not r.engine.released
    log = r.engine.log[1:]  # after the flush the constructor makes
    names = [e[0] for e in log]
    assert names[:3] == ["release_memory_occupation", "give_back", "resume_memory_occupation"]
    assert log[2][1] == ("weights",)
    assert names[-3:] == ["give_back", "resume_memory_occupation", "flush_cache"]
    assert log[-2][1] == ("cuda_graph", "kv_cache")
    r.generate(_prompts(r), SamplingParams(max_new_tokens=2))


def test_a_refused_weight_update_stops_the_run(tiny_model_dir, rollouts):
    r = rollouts()
    r.engine.fail_next_update = "out of memory"
    with pytest.raises(RolloutFailed, match="SGLang refused a weight update .*: out of memory"):
        r.load_weights(make_learner(tiny_model_dir, small_config()).policy_weights())


def test_a_weight_that_crashes_the_scheduler_stops_the_run_with_one_line(rollouts):
    """SGLang's scheduler dies on a weight that does not fit and SIGQUITs the trainer, which SGLang's own handler
    would SIGKILL; ours raises RolloutFailed."""
    r = rollouts()
    bad = [("model.norm.weight", torch.ones(3))]  # the tiny model's norm has 32 entries
    with pytest.raises(RolloutFailed, match="SGLang's engine stopped: one of its processes failed"):
        r.load_weights(iter(bad))


def test_nan_path_and_mismatched_ids_are_errors_not_samples(rollouts):
    r = rollouts()
    r.engine.nan_next = True
    with pytest.raises(RolloutFailed, match="NaN happened"):
        r.generate(_prompts(r), SamplingParams(max_new_tokens=4))
    output = {"output_ids": [5, 6], "meta_info": {"finish_reason": {"type": "length"},
                                                   "output_token_logprobs": [(-1.0, 5, None), (-2.0, 7, None)]}}
    with pytest.raises(RolloutFailed, match="differ from the token ids of its log-probs"):
        SGLangRollout._to_generation(output)


def test_greedy_generation_draws_no_seeds(rollouts):
    r = rollouts()
    state = r.state_dict()["generator"].clone()
    r.generate(_prompts(r), SamplingParams(temperature=0.0, max_new_tokens=3))
    assert torch.equal(r.state_dict()["generator"], state)


def _trainer(tiny_model_dir, rollout, cfg=None):
    from remix.data import ArithTask, ProblemSource
    from remix.runner import encode_problems

    cfg = cfg or small_config(tiny_model_dir)
    train = encode_problems(rollout.tokenizer, ArithTask((1,)).train_problems(), 512, "training set")
    return Trainer(cfg, rollout, make_learner(tiny_model_dir, cfg), HashGrader(), rollout.tokenizer,
                   ProblemSource(train, 0), [])


def test_the_loop_releases_after_generating_and_resumes_before_the_weights(tiny_model_dir, rollouts):
    """Two ReMix steps with the SGLang rollout: generate, release all, learn, resume the weights, weights in
    buckets, resume the KV cache and CUDA graphs, flush."""
    r = rollouts()
    trainer = _trainer(tiny_model_dir, r)
    for _ in range(2):
        metrics = trainer.train_step()
        assert metrics["sampler/logp_abs_diff"] < BF16_LOGP_ATOL
    names = [e[0] for e in r.engine.log][1:]  # after the flush the constructor makes
    flush = names.index("flush_cache")
    assert names[:3] == ["generate", "release_memory_occupation", "resume_memory_occupation"]
    assert set(names[3:flush - 1]) == {"update_weights_from_tensor"} and names[flush - 1] == "resume_memory_occupation"
    assert names[flush + 1:flush + 4] == names[:3]
    resumed = [e[1] for e in r.engine.log if e[0] == "resume_memory_occupation"][:2]
    assert resumed == [("weights",), ("cuda_graph", "kv_cache")]


def test_weights_the_engine_skips_stop_the_run_before_training_on_its_samples(tiny_model_dir, rollouts):
    """SGLang skips a weight name its model lacks, with a warning, and the weights' memory comes back
    uninitialised after a release: the next step's samples come from garbage. The trainer stops there."""
    r = rollouts()
    trainer = _trainer(tiny_model_dir, r)
    real = trainer.learner.policy_weights
    trainer.learner.policy_weights = lambda: ((f"renamed.{k}", v) for k, v in real())
    with pytest.warns(UserWarning, match="Parameter renamed[.].* not found in params_dict"):
        trainer.train_step()  # the engine sampled step 1 with the weights it loaded itself
    before = {k: v.clone() for k, v in real()}
    with pytest.raises(RolloutFailed, match=r"step 2: .* differ from the learner's by .* nats per token"):
        trainer.train_step()
    assert all(torch.equal(v, before[k]) for k, v in real())  # no update was made on those samples


def test_unknown_server_args_or_sampling_keys_fail_in_the_fake(tiny_model_dir):
    """The fake is strict: a misspelt SGLang argument in the rollout would fail these tests."""
    with pytest.raises(TypeError, match="ServerArgs has no fields"):
        fake.Engine(model_path=str(tiny_model_dir), dtype="bfloat16", mem_fraction=0.5)


def test_untempered_logprobs_are_refused(rollouts, monkeypatch):
    monkeypatch.setenv("SGLANG_RETURN_ORIGINAL_LOGPROB", "1")
    with pytest.raises(ValueError, match="SGLANG_RETURN_ORIGINAL_LOGPROB"):
        rollouts()


def test_the_engine_leaves_the_trainers_signals_and_environment(rollouts, monkeypatch):
    """After construction: torchrun's agent-store variable is back, the trainer's SIGTERM and SIGINT handlers
    are in place, SIGQUIT raises RolloutFailed, SGLang's event loop holds no signal handlers, and the scheduler
    process ignores SIGINT and SIGTERM (Ctrl-C and torchrun's SIGTERM reach the whole process group)."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # as torchrun sets it: the scheduler must still start
    mine = lambda signum, frame: None  # noqa: E731
    previous = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        r = rollouts()
        r.generate(_prompts(r), SamplingParams(max_new_tokens=2))  # a request after the first: nothing comes back
        assert os.environ["TORCHELASTIC_USE_AGENT_STORE"] == "True"
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGQUIT) is engine_died
        assert not getattr(r.engine.tokenizer_manager.event_loop, "_signal_handlers", {})
        scheduler = r.engine.scheduler
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(scheduler.pid, sig)
        time.sleep(1.0)
        assert scheduler.is_alive()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_signals_stay_blocked_for_the_first_process_the_engine_spawns():
    """Starting multiprocessing's resource tracker unblocks SIGINT and SIGTERM in the calling thread (CPython's
    resource_tracker.ensure_running): with no tracker yet, a first spawn inside the window would have left SGLang's
    scheduler open to Ctrl-C. The window starts the tracker before it blocks anything."""
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._stop()  # as in a fresh trainer process: no tracker yet
    with engine_process_environment():
        resource_tracker.ensure_running()  # what SGLang's first spawn does
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert {signal.SIGINT, signal.SIGTERM} <= blocked


def test_a_process_without_fresh_prompts_asks_the_engine_nothing(rollouts):
    """Under torchrun a process's share of a step can be all historical groups; SGLang refuses an empty request."""
    r = rollouts()
    with pytest.raises(ValueError, match="input_ids cannot be empty"):
        r.engine.generate(input_ids=[], sampling_params=[], return_logprob=True)
    assert r.generate([], SamplingParams(max_new_tokens=2, n=4)) == []


def test_a_signal_while_the_engine_starts_reaches_the_trainer_after(rollouts, monkeypatch):
    """SIGINT and SIGTERM are blocked while SGLang's processes start (so that they never get them), not ignored: a
    SIGTERM that arrives meanwhile is delivered to the trainer's handler once the engine is up."""
    seen = []
    real_init = fake.Engine.__init__

    def init(self, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun or a scheduler stopping the job during start-up
        real_init(self, **kwargs)

    monkeypatch.setattr(fake.Engine, "__init__", init)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        r = rollouts()
        assert seen == [signal.SIGTERM] and r.engine.scheduler.is_alive()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_a_process(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=fake.RENDEZVOUS_TIMEOUT_S + 120)


def test_the_fake_reproduces_what_the_rollout_guards_against(tiny_model_dir):
    """Without the rollout's precautions the fake engine fails as SGLang does: under torchrun's agent-store
    variable its scheduler cannot rendezvous and the trainer is SIGKILLed; a Ctrl-C that reaches the scheduler
    kills it and then the trainer; SIGTERM after the first request no longer reaches the trainer's handler, and
    the next engine call exits the process with status 0."""
    start = f"from tests.fakes import sglang as fake\nengine = fake.Engine(model_path={str(tiny_model_dir)!r}, " \
            "dtype='bfloat16', skip_tokenizer_init=True, tp_size=1)\n"
    torchrun = _in_a_process(start, TORCHELASTIC_USE_AGENT_STORE="True")
    assert torchrun.returncode == -signal.SIGKILL, torchrun.stderr[-2000:]
    ctrl_c = _in_a_process(start + "import os, signal, time\nos.kill(engine.scheduler.pid, signal.SIGINT)\n"
                           "time.sleep(30)\nprint('survived')")
    assert ctrl_c.returncode == -signal.SIGKILL and "survived" not in ctrl_c.stdout
    sigterm = _in_a_process(start + "import os, signal\nseen = []\nsignal.signal(signal.SIGTERM, lambda *a: "
                            "seen.append(1))\nengine.flush_cache()\nos.kill(os.getpid(), signal.SIGTERM)\n"
                            "engine.flush_cache()\nprint('went on', seen)")
    assert sigterm.returncode == 0 and "went on" not in sigterm.stdout


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


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_lora_adapter_sync_sends_the_adapter_alone_and_keeps_the_base_weights(tiny_model_dir, rollouts):
    """--lora.sync adapter: the engine starts with LoRA enabled for the adapter's rank and modules; the loop
    releases the KV cache and graphs only (the base weights must survive), sends the adapter through
    load_lora_adapter_from_tensors (the previous one unloaded first) and samples with it: the engine's log-probs of
    its samples match the LoRA learner's, and no full weight update is ever made."""
    pytest.importorskip("peft")
    from remix.config import LoRAConfig

    lora = LoRAConfig(rank=4, alpha=64.0, sync="adapter")  # a large alpha: the adapter visibly moves the policy
    r = rollouts(lora_adapter=(lora.rank, lora.target_modules))
    assert r.engine.server_args["enable_lora"] and r.engine.server_args["max_lora_rank"] == 4
    cfg = small_config(tiny_model_dir, lora=lora, rollout=RolloutConfig(
        temperature=1.0, max_new_tokens=6, group_size=2, engine="sglang"), platform="cuda")
    trainer = _trainer(tiny_model_dir, r, cfg)
    base = {k: v.clone() for k, v in r.engine.sampler.model.state_dict().items()}
    for _ in range(3):
        assert trainer.train_step()["sampler/logp_abs_diff"] < BF16_LOGP_ATOL
    names = [e[0] for e in r.engine.log]
    assert "update_weights_from_tensor" not in names
    assert [e[1] for e in r.engine.log if e[0] == "release_memory_occupation"][0] == ("cuda_graph", "kv_cache")
    assert [e[1] for e in r.engine.log if e[0] == "unload_lora_adapter"] == ["policy-0", "policy-1"]
    assert list(r.engine.adapters) == ["policy-2"] and r.adapter == "policy-2"
    moved = max((r.engine.adapters["policy-2"][k]).abs().max().item() for k in r.engine.adapters["policy-2"])
    assert moved > 0
    r.engine._apply_adapter(None)
    assert all(torch.equal(v, base[k]) for k, v in r.engine.sampler.model.state_dict().items())
    # the engine samples with the adapter: its log-probs of a sample are the LoRA policy's, not the base model's
    # (an adapter far from zero first, so that the two differ by more than bf16's rounding)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.learner.policy.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    r.load_adapter(*trainer.learner.policy_adapter())
    prompts = _prompts(r)
    gens = r.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=6, n=1, seed=3))
    groups = [Group(prompt_ids=p, responses=[g[0].token_ids], rewards=[0.0], version=1)
              for p, g in zip(prompts, gens)]
    batch = collate(groups, r.pad_id)
    learner = torch.cat([torch.tensor(g[0].logprobs) for g in gens])
    policy = trainer.learner.logprobs(batch)[batch.response_mask]
    reference = trainer.learner.logprobs(batch, "reference")[batch.response_mask]
    assert (learner - policy).abs().max() < BF16_LOGP_ATOL < (learner - reference).abs().max()


def test_a_refused_lora_adapter_stops_the_run(tiny_model_dir, rollouts):
    pytest.importorskip("peft")
    from remix.config import LoRAConfig

    r = rollouts(lora_adapter=(2, LORA_TARGETS))  # an engine sized for rank 2
    learner = make_learner(tiny_model_dir, small_config(tiny_model_dir, lora=LoRAConfig(rank=4)))
    with pytest.raises(RolloutFailed, match="could not load the LoRA adapter 'policy-0': .*rank 4"):
        r.load_adapter(*learner.policy_adapter())
