"""One-off converter: the five DeepScaleR/ReMix benchmark files -> eval/data/<benchmark>.jsonl.

Run once from the repository root (the output is committed; nothing reads the source at run time):

    python -m eval.convert_benchmarks --src ../shared/data/benchmarks --out eval/data

Every output row is {"id": str, "problem": str, "answer": [acceptable answer strings]}.
Normalisation (nothing else is changed):
  * AMC answers are floats (142.0) -> integer strings ("142").
  * answers are stripped of surrounding whitespace (Minerva's trailing newlines).
  * OlympiadBench wraps answers in $...$ ("$69$,$84$"): these delimiters are removed ("69,84");
    escaped dollar signs (MATH-500's "\\$18.90") are kept.
  * duplicate answers within a row are dropped (keeping the first).
  * EXTRA_ANSWERS adds an equivalent, parseable form to the two answers math-verify cannot read as
    math (the source answer stays first).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# output name -> (source file, expected rows)
BENCHMARKS: dict[str, tuple[str, int]] = {
    "aime2024": ("aime.json", 30),
    "amc2023": ("amc.json", 83),
    "math500": ("math.json", 500),
    "minerva": ("minerva.json", 272),
    "olympiadbench": ("olympiad_bench.json", 675),
}
ID_FIELDS = ("unique_id", "id", "idx")
# (benchmark, id) -> answers appended to the source's, with the reason.
EXTRA_ANSWERS: dict[tuple[str, str], tuple[list[str], str]] = {
    ("olympiadbench", "1782"): (
        ["n^{2}-n-1"],
        "'m_{\\max }=n^{2}-n-1' names the value; math-verify cannot parse m_{\\max}",
    ),
    ("olympiadbench", "2045"): (["(0,4]"], "source 't(0,4]' lost the \\in of 't \\in (0,4]'"),
}
UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")  # math delimiters; "\$" (a dollar sign) stays


def _answer_str(value) -> str:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"non-integer float answer {value!r}")
        return str(int(value))
    if not isinstance(value, (str, int)):
        raise TypeError(f"unexpected answer type {type(value).__name__}")
    return UNESCAPED_DOLLAR.sub("", str(value)).strip()


def convert_rows(bench: str, rows: list[dict]) -> list[dict]:
    out = []
    for index, row in enumerate(rows):
        source_id = next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), None)
        row_id = str(source_id) if source_id is not None else f"{bench}-{index}"
        raw = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        extra = EXTRA_ANSWERS.get((bench, row_id), ([], ""))[0]
        answers = list(dict.fromkeys(a for a in [*map(_answer_str, raw), *extra] if a))
        if not answers:
            raise ValueError(f"{bench} row {index}: empty answer")
        out.append({"id": row_id, "problem": row["problem"], "answer": answers})
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{bench}: ids are not unique")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", type=Path, default=Path("../shared/data/benchmarks"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for bench, (filename, expected) in BENCHMARKS.items():
        rows = convert_rows(bench, json.loads((args.src / filename).read_text(encoding="utf-8")))
        if len(rows) != expected:
            raise SystemExit(f"{bench}: {len(rows)} rows, expected {expected}")
        with open(args.out / f"{bench}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{bench}: {len(rows)} rows -> {args.out / (bench + '.jsonl')}")


if __name__ == "__main__":
    main()
