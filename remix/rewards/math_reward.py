"""The built-in math reward: the final answer in a response's last box, compared with math-verify.

`verify_in_process(response, reference, rule)` is the pure grading function: it takes the text after
the last "</think>", extracts the last \\boxed{...} (or \\fbox{...}) and compares it with math-verify
against the reference (a string, a number or a list of acceptable answers). What happens without a
box is the grading rule:

- "boxed" (the default, the paper's: DeepScaleR's grader): a response without a complete box after
  the last "</think>" scores 0, so truncated and unboxed responses never count as correct;
- "lenient": math-verify's own extraction on that text instead (e.g. the last number), which scores
  "3 + 4 = 7, then 7 * 2 = 14" as correct against 14. Not comparable with the paper's tables.

A boxed answer is first cleaned as the paper's grader cleans it (`clean_answer`), and two kinds are decided by how
they are written, as the paper's grader decides them (`decided_as_written`): fractions of integers in the
reference's terms only, and integers written as integers. eval/data/README.md measures the agreement.

math-verify and sympy can take unbounded time (or blow the C stack) on hostile model output: untrusted
responses are graded through `remix.rewards.pool.GraderPool`, never with this function directly.
"""
from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from typing import Literal

# A bare number in e-notation ("4.5e33", as in several Minerva answers): math-verify reads the "e"
# as Euler's number, so it is rewritten as "4.5 \times 10^{33}" on both sides before parsing.
_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")
GradingRule = Literal["boxed", "lenient"]
GRADING_RULES: tuple[GradingRule, ...] = ("boxed", "lenient")
_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\.|[{}]", re.DOTALL)


def extract_answer(response: str) -> str | None:
    """The content of the last complete \\boxed{...}/\\fbox{...} after the last "</think>".

    Braces are matched (escaped \\{ and \\} do not count); of nested boxes the outer one wins, and an
    unclosed box is ignored. None when there is no complete box.
    """
    _, sep, tail = response.rpartition("</think>")
    text = tail if sep else response
    stack: list[int] = []  # for each open brace: content start of a box, or -1 for a plain brace
    last = None
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(-1)
        elif tok == "}":
            if stack and (start := stack.pop()) >= 0:
                last = text[start : m.start()]  # boxes close in order, so the latest close is last
        elif len(tok) > 2:  # "\boxed{" or "\fbox{" (escapes such as "\{" are two characters)
            stack.append(m.end())
    return last


_INTEGER_AND_PERIOD = re.compile(r"^[-+]?\d+\.$")
_MIXED_NUMBER = re.compile(r"^([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")


def _closes_at_end(text: str, open_at: int) -> bool:
    """Whether the brace opened at `open_at` is closed by the last character of `text`."""
    depth, i = 0, open_at
    while i < len(text):
        if text[i] == "\\":  # an escaped character (\\{ is a brace of the text, not of the group)
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i == len(text) - 1
        i += 1
    return False


def clean_answer(text: str) -> str:
    """What the paper's grader (DeepScaleR's: Hendrycks' MATH normalisation, then sympy) deliberately reads past in a
    final answer, on both sides: `$...$` around it, an enclosing \\text{...} (\\boxed{\\text{025}} is 025), a short
    name before `=` (`x = 5` is 5: "get rid of e.g. 'k = ' at the beginning"), the period after an integer
    (\\boxed{204.}: Python's float reads it), a trailing percent sign (\\boxed{-4\\%} against -4), and it reads a
    mixed number written with a space as one (1 1/2 is 1+1/2: "make a mixed number evalable"; math-verify reads 1).
    Other trailing periods stay (the paper's sympy accepts some and rejects others by accident; README says why we
    keep math-verify's reading). eval/grader_agreement.py measures the agreement."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] == "$":
        text = text[1:-1].strip()
    if text.startswith("\\text{") and _closes_at_end(text, len("\\text{") - 1):
        text = text[len("\\text{"):-1].strip()
    name, equals, value = text.partition("=")
    if equals and "=" not in value and 0 < len(name.strip()) <= 2 and value.strip() and name.strip()[-1] not in "<>!":
        text = value.strip()
    if _INTEGER_AND_PERIOD.match(text):
        text = text[:-1]
    if text.endswith("\\%"):
        text = text[:-2].rstrip()
    elif text.endswith("%"):
        text = text[:-1].rstrip()
    if m := _MIXED_NUMBER.match(text):
        text = f"{m[1]}({m[2]}+{m[3]}/{m[4]})"
    return text


# Two kinds of answer the paper's grader (DeepScaleR's, from PRM800K's `grade_answer`) decides by how they are
# written, on purpose, before any algebra: a fraction of two integers is right only as the reference writes it ("if
# fractions aren't reduced, then shouldn't be marked as correct": 6/4 is wrong against 3/2, and so is 3/2 followed by a
# period), and an integer reference wants an integer written as one ("we require the given answer to be a strict
# match": 10/2, 2^{10} or \sqrt{25} are wrong against 5; likewise an integer against a reference that is not one).
# Where we cannot tell how an answer is written (formatting we do not know), the values decide, as before.
_FRACTION = re.compile(r"^([-+]?)(?:\\[dt]?frac\{(\d+)\}\{(\d+)\}|\\[dt]?frac(\d)(\d)|(\d+)/(\d+))(\.?)$")
# A unit in \text{...} at the end (no digit in it: 5 \text{ cm}^2), gone whole; not i, j or e (5\mathrm{i} is not 5).
_UNIT = re.compile(r"\\(?:text|mbox|mathrm|textrm)\{(?!\s*[ije]\s*\})[^{}\d]*\}(?:\^\{?\d+\}?)?$")
# Formatting that leaves a number the same number: \left/\right, a formatting command (its content stays: \mathbf{5}
# is 5), degrees, an escaped percent, dollar or brace, braces and dollars.
_FORMATTING = re.compile(r"\\(?:left|right|displaystyle)(?![a-zA-Z])"
                         r"|\\(?:text|textbf|textit|textrm|mathbf|mathrm|mathit|mbox|boldsymbol|bm|underline|emph)(?=\{)"
                         r"|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\[$%{}]|[{}$]")
_SPACING = re.compile(r"(?:\\[,;:! ]|\\q?quad(?![a-zA-Z])|~|\s)+")
_DECIMAL = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d*)?$")
# What makes an answer an expression rather than a number: 10/2, 2^{10}, \sqrt{25}, 5\cdot 1, 5!, 3+2, 5i.
_OPERATION = re.compile(r"\\[dt]?frac|\\sqrt|\\cdot|\\times|\\div|\\pm|\\mp|\\binom|\\choose|[/^*!+-]"
                        r"|\d[a-zA-Z](?![a-zA-Z])")
_E_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # 1e-9: a number, its minus sign no operation


def _without_spacing(text: str) -> str | None:
    """`text` without its spacing; None where spacing stands between two numbers (1 1/2, 2\\,3) rather than as a
    thousands separator (1\\,000, 1 000: three digits follow)."""
    out, last = [], 0
    for m in _SPACING.finditer(text):
        before, after = text[:m.start()], text[m.end():]
        if before[-1:].isdigit() and after[:1].isdigit() and not re.match(r"\d{3}(?!\d)", after):
            return None
        out.append(text[last:m.start()])
        last = m.end()
    return "".join(out) + text[last:]


@functools.lru_cache(maxsize=4096)  # references recur in every grade; each answer is read twice
def _written_fraction(text: str) -> tuple[str, str, str, str] | None:
    """(sign, numerator, denominator, a trailing period) of an answer written as a fraction of two integers, the
    integers as written (the paper's grader compares the text: 03/2 is not 3/2)."""
    t = _without_spacing(clean_answer(text))
    m = _FRACTION.match(t) if t is not None else None
    if m is None:
        return None
    p, q = (g for g in m.groups()[1:7] if g is not None)
    return m.group(1).replace("+", ""), p, q, m.group(8)


@functools.lru_cache(maxsize=4096)  # references recur in every grade; each answer is read twice
def _number_text(text: str) -> str | None:
    """The answer with its unit, formatting and spacing removed; None for a list ("81, 256": thousands commas are
    written 81,256 or 81,\\!256) or two numbers side by side."""
    t = _UNIT.sub("", clean_answer(text)).strip()
    if re.search(r",\s", t):
        return None
    t = _without_spacing(_FORMATTING.sub("", t))
    # (5) is one element: the paper's grader splits tuples and intervals into their elements
    if t is not None and len(t) > 2 and t[0] + t[-1] in ("()", "[]") and "," not in t:
        t = t[1:-1]
    return t


def _written_integer(text: str) -> Decimal | None:
    """The integer an answer is written as, else None: 1,000, 25.0, (5), \\mathbf{5}, 30^\\circ, 8\\%, 5 \\text{ cm}
    and, as Python's float reads it for the paper's grader, 4.9999999999 (within 1e-7); not 10/2, 2^{10}, \\sqrt{25},
    a number past float's range, or 4.5e33 (e-notation: for the paper's grader float() makes that an integer, an
    accident we do not copy)."""
    t = _number_text(text)
    if t is None or not _DECIMAL.match(t) or not any(c.isdigit() for c in t):
        return None
    t = t.replace(",", "")
    value = float(t)
    if not math.isfinite(value) or abs(value - round(value)) > 1e-7:
        return None
    return Decimal(t).to_integral_value()  # exact past 2^53, where the float is not


def _unevaluated(text: str) -> bool:
    """Whether an answer is written as an operation on numbers (10/2, 2^{10}, \\sqrt{25}), not as a number."""
    t = _number_text(text)
    return t is not None and not _E_NUMBER.match(t) and bool(_OPERATION.search(t.lstrip("+-")))


def decided_as_written(answer: str, reference: str) -> bool | None:
    """The paper's verdict where it depends on how the two are written (see above): True or False, else None (the
    values decide)."""
    ours, theirs = _written_fraction(answer), _written_fraction(reference)
    if ours is not None and theirs is not None:
        return ours == theirs
    ours, theirs = _written_integer(answer), _written_integer(reference)
    if ours is not None and theirs is not None:
        return ours == theirs
    if (ours is not None and _unevaluated(reference)) or (theirs is not None and _unevaluated(answer)):
        return False
    return None


def _sci(text: str) -> str:
    return _E_NOTATION.sub(r"\1 \\times 10^{\2}", text)


def _reference_texts(reference) -> list[str]:
    if isinstance(reference, (list, tuple)):
        return [t for r in reference for t in _reference_texts(r)]
    if isinstance(reference, bool):
        raise TypeError("a reference answer cannot be a bool")
    if isinstance(reference, float):
        if not math.isfinite(reference):
            raise ValueError(f"non-finite reference {reference!r}")
        return [str(int(reference)) if reference.is_integer() else repr(reference)]
    if isinstance(reference, (int, str)):
        return [str(reference).strip()]
    raise TypeError(f"unsupported reference type {type(reference).__name__}")


@functools.lru_cache(maxsize=4096)
def _parse_gold(text: str):
    from math_verify import parse

    text = _sci(clean_answer(text))
    delimited = "\\boxed" in text or re.search(r"(?<!\\)\$", text)  # "\$" is a dollar sign, not math
    wrapped = text if delimited else f"${text}$"
    return parse(wrapped, parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_boxed(content: str):
    """A prediction's box, parsed. Cached: answers repeat (a group's samples, one policy's greedy answers at
    consecutive evaluations), and parsing is nearly all of a grade's time (about 2 ms of latex2sympy)."""
    from math_verify import parse

    return parse("\\boxed{" + _sci(clean_answer(content)) + "}", parsing_timeout=None)


def verify_in_process(response: str, reference, rule: GradingRule = "boxed") -> float:
    """1.0 if the response's final answer matches the reference (any of a list), else 0.0.
    `rule` says what a response without a box gets (see the module docstring).

    No timeout of its own (math-verify's are disabled, they need SIGALRM on the main thread): run
    it through `GraderPool` unless the input is trusted.
    """
    from math_verify import parse, verify

    golds = {ref: g for ref in _reference_texts(reference) if (g := _parse_gold(ref))}
    if not golds:
        return 0.0
    if rule not in GRADING_RULES:
        raise ValueError(f"unknown grading rule {rule!r}; choose one of {GRADING_RULES}")
    boxed = extract_answer(response)
    if boxed is not None:
        decided = {ref: decided_as_written(boxed, ref) for ref in golds}
        if any(decided.values()):
            return 1.0
        golds = {ref: g for ref, g in golds.items() if decided[ref] is None}
        if not golds:
            return 0.0
        pred = _parse_boxed(boxed)
    elif rule == "boxed":
        return 0.0
    else:
        _, sep, tail = response.rpartition("</think>")
        pred = parse(_sci(tail if sep else response), parsing_timeout=None)
    if not pred:
        return 0.0
    return 1.0 if any(verify(g, pred, timeout_seconds=None) for g in golds.values()) else 0.0
