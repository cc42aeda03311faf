"""The paper's self-reflection rate: the share of responses that use any of its reflection keywords.

The paper tracks self-reflection to show that off-policy training erodes it (and that reincarnation
restores it). Its measure: a response counts once if it contains any of these 16 keywords, matched
case-insensitively as substrings (so "but" also matches inside "distribute", as the rule says).
"""

from __future__ import annotations

from collections.abc import Iterable

PAPER_KEYWORDS = (
    "verify", "re-examine", "double-check", "why", "root cause", "validate", "abduct", "question", "check",
    "but", "wait", "confirm", "scrutinize", "analyze", "investigate", "probe",
)


def reflects(text: str) -> bool:
    lower = text.lower()
    return any(k in lower for k in PAPER_KEYWORDS)


def count_reflecting(texts: Iterable[str]) -> int:
    return sum(reflects(t) for t in texts)
