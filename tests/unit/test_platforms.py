"""The platform registry imports only the selected platform and explains what is missing."""

import pytest

from platforms import get_platform


def test_cpu_platform_has_the_factories():
    cpu = get_platform("cpu")
    assert callable(cpu.make_rollout) and callable(cpu.make_learner)


def test_xla_without_torch_xla_says_how_to_get_it():
    import importlib.util

    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed here")
    with pytest.raises(NotImplementedError, match="--platform xla: torch_xla is not installed.*make test-xla"):
        get_platform("xla")


def test_cuda_platform_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        cuda = get_platform("cuda")
        assert cuda.DIST_BACKEND == "nccl" and cuda.device().type == "cuda"
        return
    with pytest.raises(NotImplementedError, match="--platform cuda: no CUDA device is visible"):
        get_platform("cuda")


def test_unknown_platform_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        get_platform("tpu")


def test_the_static_kv_cache_is_sized_from_the_runs_longest_prompt(tiny_model_dir, hash_grader, monkeypatch):
    """The run's rollout gets the longest prompt it will see, not --data.max-prompt-tokens: a static cache (CUDA,
    XLA) is attended over whole at every decode step, and 552 slots for 30-token prompts made XLA's generation
    3.7x slower. On XLA the decode step is compiled with the openxla backend (bench.xla: 49.5 -> 16.0 ms/token)."""
    import torch

    from platforms.backend import decode_plan_for
    from remix.config import RolloutConfig
    from remix.runner import build_trainer
    from tests.helpers import small_config

    cpu = get_platform("cpu")
    seen = {}
    real = cpu.make_rollout

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu, "make_rollout", spy)
    cfg = small_config(tiny_model_dir)
    trainer = build_trainer(cfg, cpu, hash_grader)
    longest = max(len(e.prompt_ids) for e in (*trainer.train.problems, *trainer.heldout))
    assert seen["prompt_tokens"] == longest < cfg.data.max_prompt_tokens
    plan = decode_plan_for(RolloutConfig(max_new_tokens=40), torch.device("xla"), prompt_tokens=longest)
    assert plan.cache_tokens == 64 + 40 and plan.compile and plan.compile_backend == "openxla"
    assert decode_plan_for(RolloutConfig(), torch.device("cuda")).compile_backend == "inductor"
