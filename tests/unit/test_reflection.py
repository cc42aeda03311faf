"""The paper's self-reflection measure and where it is reported."""

from __future__ import annotations

from eval.math_suite import summarize
from remix.reflection import PAPER_KEYWORDS, count_reflecting, reflects


def test_paper_keywords_case_insensitive_substrings_counted_once():
    assert len(PAPER_KEYWORDS) == 16
    assert reflects("Let me ANALYZE that again")  # a paper keyword that no home-made list had
    assert reflects("so the root cause is the sign") and reflects("Wait, wait, wait")
    assert reflects("distribute the 5")  # substring, as the paper counts: "but" inside "distribute"
    assert not reflects("3 + 4 = 7. \\boxed{7}")
    assert count_reflecting(["wait, but why? check: verify", "7", "Hmm, let me double-check"]) == 2


def test_eval_suite_reports_the_reflection_rate_per_benchmark():
    rows = [{"benchmark": "aime2024", "id": str(i), "score": 1.0, "timeout": False, "error": False,
             "response": text} for i, text in enumerate(["Wait, is that right? \\boxed{1}", "\\boxed{2}"])]
    out = summarize(rows, ("aime2024",))
    assert out["aime2024"]["reflection_keyword_rate"] == 50.0
