"""Rewards: the reward functions (the built-in math reward and the user's own), and the pool that runs them.

    remix/rewards/functions.py    `RewardSet`: the --reward functions `fn(response, row) -> float` with their
                                  weights, loaded from specs (`math`, PATH.py:FUNCTION, module:FUNCTION)
    remix/rewards/math_reward.py  `verify_in_process`: the final boxed answer against the reference, with
                                  math-verify, under the paper's rule (pure; may take unbounded time)
    remix/rewards/pool.py         `GraderPool`: worker processes with a wall-clock deadline per item (never hangs)
    remix/rewards/forkserver.py   what the pool's fork server imports (it ignores SIGTERM)
"""

from remix.rewards.functions import RewardSet, RewardSpecError, Scored, grade_math, load_reward
from remix.rewards.math_reward import GRADING_RULES, GradingRule, extract_answer, verify_in_process
from remix.rewards.pool import GradeReport, GraderPool

__all__ = ["GRADING_RULES", "GradeReport", "GraderPool", "GradingRule", "RewardSet", "RewardSpecError", "Scored",
           "extract_answer", "grade_math", "load_reward", "verify_in_process"]
