"""How often our math grader agrees with the paper's: (response, reference) pairs in the forms a model writes.

The paper trains and evaluates with DeepScaleR's reward code, released with it in the public repository
AnitaLeungxx/ReMix-Off-Policy-RFT (`deepscaler.rewards.math_reward.deepscaler_reward_fn`, whose verdict is
`is_correct_finalanswer`). This module builds pairs from the answers of the five benchmarks (eval/data), each
written in many forms: boxed plainly, `\\dfrac`/`\\frac`/`a/b`, a decimal, trailing punctuation, `$...$`, `\\text{}`,
units and degrees, thousands commas, `x = ...`, inside and after `<think>`, truncated, and wrong. Their grader's
verdict on each pair is computed outside this repository, by importing their code from a checkout of theirs
(never copied here), and committed as test data with the commit it came from:

    python -m eval.grader_agreement --paper-repo PATH/TO/ReMix-Off-Policy-RFT --write eval/data/grader_agreement.json

needs sympy (a dependency of math-verify) and pylatexenc (`pip install pylatexenc`) where it runs;
`deepscaler.utils` is replaced by a module without its LLM clients (vertexai, openai), which the verdict never calls
(`enable_llm=False`). `python -m eval.grader_agreement` alone grades the committed pairs with `remix.rewards` and
prints the agreement; tests/unit/test_grader_agreement.py holds it to its targets.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import types
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import tyro

from eval.math_suite import BENCHMARKS, load_benchmark

DATA = Path(__file__).parent / "data" / "grader_agreement.json"
# Rows per benchmark (the first N of each file): every form of each, 9,430 pairs, graded in about 15 s.
ROWS = {"aime2024": 30, "amc2023": 83, "math500": 200, "minerva": 120, "olympiadbench": 200}
_SIMPLE_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_INT = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _unspaced(answer: str) -> str:
    """The answer without its spaces, except the one that ends a command before a letter (\\omega i, not \\omegai)."""
    kept = re.sub(r"(\\[a-zA-Z]+) +(?=[a-zA-Z])", "\\1\0", answer)  # that space marked as NUL, then restored
    return kept.replace(" ", "").replace("\0", " ")


def _wrong(answer: str, other: str) -> str:
    """A wrong answer: an integer plus one, else the next row's answer (different from this one)."""
    if _INT.match(answer):
        return str(int(answer) + 1)
    return other if other != answer else answer + "+1"


def forms(answer: str, other: str) -> dict[str, str]:
    """The responses that write `answer` (or a wrong one) in each form that applies, by form name."""
    out = {
        "boxed": f"So the final answer is \\boxed{{{answer}}}.",
        "dollars-in-box": f"\\boxed{{${answer}$}}",
        "period-in-box": f"\\boxed{{{answer}.}}",
        "text-in-box": f"\\boxed{{\\text{{{answer}}}}}",

        "after-think": f"<think>Maybe \\boxed{{{_wrong(answer, other)}}}. No.</think> So \\boxed{{{answer}}}",
        "only-in-think": f"<think>It is \\boxed{{{answer}}}.</think> The answer is {answer}.",
        "unclosed-think": f"<think>Let me think. The answer is \\boxed{{{answer}}}",
        "truncated": f"The answer is \\boxed{{{answer}",
        "no-box": f"The answer is {answer}.",
        "wrong": f"\\boxed{{{_wrong(answer, other)}}}",
        "spaced": f"\\boxed{{ {answer} }}" if " " not in answer else f"\\boxed{{{_unspaced(answer)}}}",
    }
    if "=" not in answer:
        out["equation"] = f"\\boxed{{x = {answer}}}"
    if "\\frac" in answer and "\\dfrac" not in answer:
        out["dfrac"] = f"\\boxed{{{answer.replace(chr(92) + 'frac', chr(92) + 'dfrac')}}}"
    if "\\dfrac" in answer:
        out["frac"] = f"\\boxed{{{answer.replace(chr(92) + 'dfrac', chr(92) + 'frac')}}}"
    if m := _SIMPLE_FRAC.match(answer):
        sign, p, q = m.group(1), int(m.group(2)), int(m.group(3))
        out["slash"] = f"\\boxed{{{sign}{p}/{q}}}"
        out["decimal"] = f"\\boxed{{{sign}{p / q:.4g}}}"
        out["unreduced"] = f"\\boxed{{{sign}\\frac{{{2 * p}}}{{{2 * q}}}}}"
    if _INT.match(answer):
        out["decimal"] = f"\\boxed{{{answer}.0}}"
        out["percent"] = f"\\boxed{{{answer}\\%}}"
        out["degrees"] = f"\\boxed{{{answer}^\\circ}}"
        out["unreduced"] = f"\\boxed{{\\frac{{{2 * int(answer)}}}{{2}}}}"
        out["unit"] = f"\\boxed{{{answer} \\text{{ cm}}}}"
        if abs(int(answer)) >= 1000:
            out["thousands-comma"] = f"\\boxed{{{int(answer):,}}}"
    elif _NUMBER.match(answer):
        out["trailing-zero"] = f"\\boxed{{{answer}0}}"
    return out


def pairs() -> list[dict]:
    """Every pair, in a fixed order: {"benchmark", "id", "form", "response", "reference"} (the row's answers)."""
    out = []
    for benchmark in BENCHMARKS:
        rows = load_benchmark(benchmark)[:ROWS[benchmark]]
        for i, row in enumerate(rows):
            answer, other = row["answer"][0], rows[(i + 1) % len(rows)]["answer"][0]
            for form, response in forms(answer, other).items():
                out.append({"benchmark": benchmark, "id": row["id"], "form": form, "response": response,
                            "reference": row["answer"]})
    return out


# --- the paper's grader, run from a checkout of theirs ----------------------------------------------------------


def paper_verdict(response: str, reference: list[str]) -> float:
    """DeepScaleR's verdict (`is_correct_finalanswer`) on one pair, imported from REMIX_PAPER_REPO; runs in a grader
    pool worker (it may hang in sympy: the pool's deadline stops it)."""
    if "deepscaler" not in sys.modules:
        # Their package, registered under its own name from their checkout (so its absolute imports resolve), not
        # put on sys.path: nothing else of theirs can shadow a module of ours.
        package = Path(os.environ["REMIX_PAPER_REPO"]) / "deepscaler"
        spec = importlib.util.spec_from_file_location("deepscaler", package / "__init__.py",
                                                      submodule_search_locations=[str(package)])
        sys.modules["deepscaler"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["deepscaler"])
        # Their utils module imports LLM clients (vertexai, openai) for the ORM, which the verdict never calls.
        stub = types.ModuleType("deepscaler.utils")
        stub.call_gemini_llm = stub.call_oai_rm_llm = _never_called
        sys.modules["deepscaler.utils"] = stub
    from deepscaler.rewards.math_reward import deepscaler_reward_fn

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every correct answer, whatever do_print says
        return float(bool(deepscaler_reward_fn(response, reference, enable_llm=False, do_print=False)))


def _never_called(*args, **kwargs):
    raise RuntimeError("the paper grader's LLM judge is off (enable_llm=False)")


def write_paper_verdicts(repo: Path, out: Path, workers: int, timeout_s: float) -> None:
    from remix.rewards import GraderPool

    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or None
    os.environ["REMIX_PAPER_REPO"] = str(repo.resolve())  # before the pool's fork server starts: it inherits it
    items = pairs()
    with GraderPool(workers, timeout_s, verify_fn=paper_verdict) as pool:
        report = pool.grade([p["response"] for p in items], [p["reference"] for p in items])
    hung, failed = set(report.timed_out), set(report.failed)
    for i, p in enumerate(items):
        p["paper"] = None if i in hung or i in failed else bool(report.scores[i])
    data = {"grader": {"repository": "AnitaLeungxx/ReMix-Off-Policy-RFT", "commit": commit,
                       "function": "deepscaler.rewards.math_reward.deepscaler_reward_fn(response, reference, "
                                   "enable_llm=False) (is_correct_finalanswer)",
                       "timeouts": len(hung), "errors": len(failed), "timeout_s": timeout_s},
            "pairs": items}
    rows = ",\n".join(json.dumps(p, ensure_ascii=False) for p in items)  # one pair a line: readable diffs
    out.write_text(f'{{"grader": {json.dumps(data["grader"])},\n"pairs": [\n{rows}\n]}}\n', encoding="utf-8")
    print(f"wrote {len(items)} verdicts ({len(hung)} timed out, {len(failed)} raised: null) to {out}")


# --- ours against theirs ----------------------------------------------------------------------------------------


@dataclass
class Agreement:
    pairs: int  # pairs with a verdict of theirs (not timed out)
    agree: int
    ours_only: int  # we call it correct, they do not
    paper_only: int  # they call it correct, we do not
    by_form: dict[str, Counter]

    @property
    def rate(self) -> float:
        return self.agree / self.pairs

    def table(self) -> str:
        share = lambda n: f"{100 * n / self.pairs:.2f}%"  # noqa: E731
        lines = [f"{self.pairs} pairs: agreement {share(self.agree)}, ours only correct {share(self.ours_only)}, "
                 f"paper's only correct {share(self.paper_only)}",
                 "", "| form | pairs | agree | ours only | paper's only |", "|---|---:|---:|---:|---:|"]
        for form, c in sorted(self.by_form.items()):
            lines.append(f"| {form} | {c['pairs']} | {c['agree']} | {c['ours_only']} | {c['paper_only']} |")
        return "\n".join(lines)


def agreement(data: dict, ours: list[float]) -> Agreement:
    by_form: dict[str, Counter] = defaultdict(Counter)
    for p, score in zip(data["pairs"], ours):
        if p["paper"] is None:
            continue
        ours_correct, paper_correct = score == 1.0, p["paper"]
        c = by_form[p["form"]]
        c["pairs"] += 1
        c["agree"] += ours_correct == paper_correct
        c["ours_only"] += ours_correct and not paper_correct
        c["paper_only"] += paper_correct and not ours_correct
    total = sum(by_form.values(), Counter())
    return Agreement(total["pairs"], total["agree"], total["ours_only"], total["paper_only"], dict(by_form))


def grade_ours(data: dict, workers: int = 2, timeout_s: float = 5.0) -> list[float]:
    from remix.rewards import GraderPool

    with GraderPool(workers, timeout_s) as pool:
        return pool.grade([p["response"] for p in data["pairs"]], [p["reference"] for p in data["pairs"]]).scores


@dataclass
class AgreementConfig:
    paper_repo: Path | None = None
    """A checkout of AnitaLeungxx/ReMix-Off-Policy-RFT: compute its grader's verdicts and write them (--write)."""
    write: Path = DATA
    """Where the verdicts go (with --paper-repo)."""
    workers: int = 2
    """Grader worker processes."""
    timeout_s: float = 10.0
    """Deadline per pair for the paper's grader (sympy can hang); a pair past it has no verdict (null)."""


def main(cfg: AgreementConfig) -> Agreement | None:
    if cfg.paper_repo is not None:
        write_paper_verdicts(cfg.paper_repo, cfg.write, cfg.workers, cfg.timeout_s)
        return None
    data = json.loads(DATA.read_text(encoding="utf-8"))
    result = agreement(data, grade_ours(data, cfg.workers))
    print(result.table())
    return result


if __name__ == "__main__":
    main(tyro.cli(AgreementConfig, description=__doc__))
