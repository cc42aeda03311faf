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
