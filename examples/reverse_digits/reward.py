"""Rewards of the reverse-digits example: `python scripts/run.py --data.path examples/reverse_digits/data.jsonl
--data.problem-key question --reward examples/reverse_digits/reward.py:reversed_exactly
--reward examples/reverse_digits/reward.py:digits_in_place --reward-weights 1 0.5` (README.md beside this file).

A reward function takes one response and its dataset row (every column) and returns a float. This task has no
answer column: the reward computes the answer from the row's `number`. It compares strings, not numbers: the reverse
of 470 is "074", which math-verify would read as 74.
"""

from remix.rewards import extract_answer


def _boxed(response: str) -> str:
    return (extract_answer(response) or "").strip()


def reversed_exactly(response: str, row: dict) -> float:
    """1 when the last box holds the number's digits in reverse order, else 0."""
    return float(_boxed(response) == row["number"][::-1])


def digits_in_place(response: str, row: dict) -> float:
    """Partial credit: the share of the reversed number's digits the box has in the right place (0 without a box)."""
    target, boxed = row["number"][::-1], _boxed(response)
    return sum(a == b for a, b in zip(boxed, target)) / max(len(target), len(boxed)) if boxed else 0.0
