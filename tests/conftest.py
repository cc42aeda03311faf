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
