"""Our math grader against the paper's (DeepScaleR's), on the committed verdicts of eval/data/grader_agreement.json
(eval/grader_agreement.py says how they were made)."""

from __future__ import annotations

import json

from eval.grader_agreement import DATA, agreement, grade_ours, pairs

KEYS = ("benchmark", "id", "form", "response", "reference")


def test_the_verdicts_are_of_the_pairs_the_harness_builds_today():
    data = json.loads(DATA.read_text(encoding="utf-8"))
    assert [{k: p[k] for k in KEYS} for p in data["pairs"]] == pairs()
    assert data["grader"]["commit"] and len(data["grader"]["commit"]) == 40
    assert sum(p["paper"] is None for p in data["pairs"]) == data["grader"]["timeouts"] + data["grader"]["errors"]


def test_our_grader_agrees_with_the_papers():
    """The issue's targets: agreement >= 99% and ours-only-correct <= 0.5% (99.37% and 0.11% on 9,430 pairs; what is
    left is the trailing periods the paper's sympy accepts or rejects by accident, eval/data/README.md)."""
    data = json.loads(DATA.read_text(encoding="utf-8"))
    result = agreement(data, grade_ours(data))
    print(result.table())
    assert result.rate >= 0.99, result.table()
    assert result.ours_only / result.pairs <= 0.005, result.table()
    # the forms we read as the paper does, every pair
    for form in ("boxed", "text-in-box", "percent", "dollars-in-box", "after-think", "only-in-think", "truncated",
                 "unclosed-think", "wrong", "decimal", "thousands-comma", "dfrac", "slash", "unit", "degrees",
                 "unreduced"):
        c = result.by_form[form]
        assert c["agree"] == c["pairs"], (form, c)
