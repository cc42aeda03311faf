"""Shared fixtures: tiny random models (built in about a second) and a deterministic grader."""

from __future__ import annotations

import pytest

from remix.models import build_tiny_random_model
from tests.helpers import HashGrader


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained tiny Qwen2 with the tiny-arith tokenizer (hidden 32, 2 layers)."""
    return build_tiny_random_model(tmp_path_factory.mktemp("models") / "tiny-random", seed=0)


@pytest.fixture
def hash_grader():
    return HashGrader()


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda skip, saying why, where no GPU is visible (CI, the development machines)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: none is visible here (scripts/gpu_check.py runs these on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
