"""Reward functions as a user would write them, well and badly, for tests/unit/test_reward_functions.py and the
own-task runs of tests/integration/test_own_task.py. Loaded by file path (`tests/fakes/user_rewards.py:NAME`)."""

import math
import time

from remix.rewards import extract_answer


def boxed(response: str, row: dict) -> float:
    """A format reward: 1 for a complete box."""
    return float(extract_answer(response) is not None)


def matches_solution(response: str, row: dict) -> float:
    """Correctness against a column called `solution` (a dataset whose answer column has another name)."""
    return float((extract_answer(response) or "").strip() == str(row["solution"]).strip())


def half_length(response: str, row: dict) -> float:
    return len(response) / 2


def raises(response: str, row: dict) -> float:
    raise KeyError("no_such_column")


def returns_nan(response: str, row: dict) -> float:
    return math.nan


def returns_string(response: str, row: dict) -> str:
    return "1.0"


def returns_none(response: str, row: dict) -> None:
    return None


def hangs_on_every_third(response: str, row: dict) -> float:
    """Hangs (sleeps an hour) on responses whose length is a multiple of 3; 1 otherwise."""
    if len(response) % 3 == 0:
        time.sleep(3600)
    return 1.0


def three_arguments(response: str, row: dict, extra) -> float:
    return 0.0


NOT_A_FUNCTION = 3
