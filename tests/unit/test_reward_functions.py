"""--reward functions: loading a spec (one-line errors), scoring with weights, and the user's code failing inside the
grader pool without taking grading down (remix/rewards/functions.py)."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import pytest

from remix.rewards import GraderPool, RewardSet, RewardSpecError, load_reward

FAKES = Path(__file__).resolve().parents[1] / "fakes"
USER = f"{FAKES / 'user_rewards.py'}"


def spec(name: str) -> str:
    return f"{USER}:{name}"


def test_a_spec_names_a_file_a_module_or_the_builtin():
    assert load_reward(spec("boxed"))("so \\boxed{3}", {}) == 1.0
    assert load_reward("tests.fakes.user_rewards:half_length")("abcd", {}) == 2.0
    assert load_reward("math")("\\boxed{7}", {"answer": "7"}) == 1.0
    assert load_reward("math", answer_key="solution")("\\boxed{7}", {"solution": 7}) == 1.0
    assert load_reward("math", rule="lenient")("it is 7", {"answer": "7"}) == 1.0
    assert load_reward("math")("it is 7", {"answer": "7"}) == 0.0


@pytest.mark.parametrize("bad, message", [
    ("no_such_file.py:f", r"^--reward: 'no_such_file.py:f': no such file no_such_file.py$"),
    (f"{FAKES / 'user_rewards.py'}:nope", r"has no 'nope' \(its functions: boxed, half_length, hangs_on_every_third, "),
    (f"{FAKES / 'user_rewards.py'}:NOT_A_FUNCTION", r"NOT_A_FUNCTION is a int, not a function$"),
    (f"{FAKES / 'user_rewards.py'}:three_arguments", r"three_arguments\(response: str, row: dict, extra\) -> float "
                                                      r"cannot be called as three_arguments\(response, row\)$"),
    (f"{FAKES / 'broken_reward_module.py'}:f", r"importing .*broken_reward_module.py raised RuntimeError: this module"),
    ("no_such_module_xyz:f", r"importing no_such_module_xyz raised ModuleNotFoundError"),
    ("justaname", r"expected 'math', PATH.py:FUNCTION or module:FUNCTION$"),
])
def test_a_bad_spec_is_one_line_naming_it(bad, message):
    with pytest.raises(RewardSpecError, match=message) as e:
        load_reward(bad)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--reward: '{bad}': ")


def test_the_reward_is_the_weighted_sum_and_each_part_is_kept():
    rewards = RewardSet((spec("boxed"), "math", spec("half_length")), (0.1, 1.0, 0.5))
    scored = rewards.score("\\boxed{4}", {"answer": "4"})
    assert scored.parts == (1.0, 1.0, len("\\boxed{4}") / 2) and scored.error is None
    assert scored.total == pytest.approx(0.1 + 1.0 + 0.5 * len("\\boxed{4}") / 2)
    assert rewards.names == ("boxed", "math", "half_length")
    assert RewardSet(("math", "math")).names == ("math0", "math1")
    assert RewardSet().is_math_only and not RewardSet(("math",), (2.0,)).is_math_only


@pytest.mark.parametrize("name, what", [
    ("raises", "raises raised KeyError: 'no_such_column'"),
    ("returns_nan", "returns_nan returned nan (float), not a finite number"),
    ("returns_string", "returns_string returned '1.0' (str), not a finite number"),
    ("returns_none", "returns_none returned None (NoneType), not a finite number"),
])
def test_a_failing_function_scores_zero_alone_and_says_what_it_did(name, what):
    scored = RewardSet((spec("boxed"), spec(name)), (1.0, 1.0)).score("\\boxed{1}", {})
    assert scored.parts == (1.0, 0.0) and scored.total == 1.0  # the other function still counts
    assert scored.error == what


def test_a_reward_set_pickles_after_scoring():
    """Worker processes receive it by pickle; the functions it loaded (from a user's file: not picklable by
    reference) are cached outside it."""
    rewards = RewardSet((spec("boxed"),))
    rewards.score("x", {})
    assert pickle.loads(pickle.dumps(rewards)) == rewards


def test_user_rewards_run_in_the_pool_with_the_deadline_and_the_counts(caplog):
    """A function from a user's file, loaded in the workers; one that hangs costs the responses it hangs on (a
    timeout each), one that raises or returns NaN costs its own part of each score; all in one line per grade."""
    responses = ["\\boxed{1}", "ab", "\\boxed{22}", "abcd"]  # lengths 9, 2, 10, 4: the first hangs
    rows = [{"answer": "1"}, {"answer": "2"}, {"answer": "22"}, {"answer": "5"}]
    rewards = RewardSet(("math", spec("hangs_on_every_third"), spec("returns_nan")), (1.0, 0.5, 1.0))
    with caplog.at_level(logging.WARNING), GraderPool(2, timeout_s=1.0, rewards=rewards) as pool:
        report = pool.grade(responses, rows)
    assert report.timed_out == [0] and report.timeouts == 1
    assert report.parts[1:] == [(0.0, 1.0, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0)]
    assert report.scores == [0.0, 0.5, 1.5, 0.5]
    assert report.errors == 3 and sorted(report.failed) == [1, 2, 3]
    assert report.names == ("math", "hangs_on_every_third", "returns_nan")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["grading 4 responses: 1 timed out after 1 s and scored 0 (first: item 0, 9 chars beginning "
                     "'\\\\boxed{1}'); a reward function failed on 3 and scored 0 there (first: item 1: returns_nan "
                     "returned nan (float), not a finite number)"]


def test_nan_never_reaches_the_advantages():
    scored = RewardSet((spec("returns_nan"),)).score("x", {})
    assert scored.total == 0.0 and not math.isnan(scored.total)


def test_the_reverse_digits_example_scores_as_its_readme_says(tmp_path):
    root = FAKES.parents[1] / "examples" / "reverse_digits"
    exact = load_reward(f"{root / 'reward.py'}:reversed_exactly")
    partial = load_reward(f"{root / 'reward.py'}:digits_in_place")
    row = {"question": "Reverse the digits of 470.", "number": "470"}
    assert exact("so \\boxed{074}", row) == 1.0 and exact("\\boxed{74}", row) == 0.0  # strings: 074 is not 74
    assert partial("\\boxed{074}", row) == 1.0 and partial("\\boxed{0}", row) == pytest.approx(1 / 3)
    assert partial("\\boxed{0745}", row) == 0.75 and partial("no box", row) == 0.0
    # the committed data is what its script writes
    import runpy
    import shutil

    shutil.copy(root / "make_data.py", tmp_path / "make_data.py")
    runpy.run_path(str(tmp_path / "make_data.py"))
    assert (tmp_path / "data.jsonl").read_text() == (root / "data.jsonl").read_text()


def test_rows_larger_than_a_pipe_never_block_the_deadline():
    """Each item carries its whole row (long columns such as test cases): the bytes a worker holds in flight count
    the row, so the pool never blocks in a send to a worker hung on its first item (it could not enforce the
    deadline there)."""
    import os
    import signal
    import threading
    import time

    rows = [{"tests": "x" * 200_000, "i": i} for i in range(6)]
    responses = ["abc", "ab", "abcd", "a", "abcde", "ab"]  # the first hangs (length 3)
    timer = threading.Timer(60, lambda: os.kill(os.getpid(), signal.SIGINT))  # a blocked send fails the test
    timer.start()
    try:
        with GraderPool(1, timeout_s=1.0, rewards=RewardSet((spec("hangs_on_every_third"),))) as pool:
            start = time.monotonic()
            report = pool.grade(responses, rows)
    finally:
        timer.cancel()
    assert report.timed_out == [0] and report.scores == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert time.monotonic() - start < 30


def test_a_module_reward_is_imported_by_the_workers_and_a_pool_of_references_refuses_rows():
    with GraderPool(1, timeout_s=5.0, rewards=RewardSet(("tests.fakes.user_rewards:boxed",))) as pool:
        assert pool.grade(["\\boxed{1}", "none"], [{}, {}]).scores == [1.0, 0.0]
    with GraderPool(1, timeout_s=5.0) as pool, pytest.raises(TypeError, match="build it with rewards="):
        pool.grade(["\\boxed{1}"], [{"answer": "1"}])


def test_a_function_a_worker_cannot_import_fails_each_response_with_its_message():
    missing = RewardSet(("no_such_module_xyz:f",))
    scored = missing.score("x", {})
    assert scored.total == 0.0 and scored.error.startswith("not loaded in the grader worker: --reward: "
                                                          "'no_such_module_xyz:f': importing no_such_module_xyz")
