"""Rewards: the built-in math reward, and the pool that grades untrusted responses with a hard deadline.

    remix/rewards/math_reward.py  `verify_in_process`: the final boxed answer against the reference, with
                                  math-verify, under the paper's rule (pure; may take unbounded time)
    remix/rewards/pool.py         `GraderPool`: worker processes with a wall-clock deadline per item (never hangs)
    remix/rewards/forkserver.py   what the pool's fork server imports (it ignores SIGTERM)
"""

from remix.rewards.math_reward import GRADING_RULES, GradingRule, extract_answer, verify_in_process
from remix.rewards.pool import GradeReport, GraderPool

__all__ = ["GRADING_RULES", "GradeReport", "GraderPool", "GradingRule", "extract_answer", "verify_in_process"]
