"""Pass@1 on the paper's five math benchmarks: `python -m eval.math_suite --help`.

Model mode generates with the platform's Rollout (the training prompt form inside the model's chat
template), grades with `remix.rewards.GraderPool` and prints Pass@1 in % per benchmark plus their
unweighted average: greedy by default, avg@k over k samples with `--samples k --temperature t`.
`--from-responses FILE.jsonl` (rows {"benchmark", "id", "response"}) grades existing generations
instead; several rows for one (benchmark, id) are its samples.

Writes OUT/results.json ({"benchmarks": {name: {"pass@1", "n", "timeouts", ...}}, "average", ...},
pass@1 in percent) and OUT/generations.jsonl (benchmark, id, sample, response, score).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal


from remix.reflection import reflects
from remix.rewards import GraderPool
from remix.prompts import DEFAULT_TEMPLATE, PromptConfig
from remix.provenance import code_version
from remix.validation import ConfigError, Limit, parse_cli, require

DATA_DIR = Path(__file__).resolve().parent / "data"
BENCHMARKS = ("aime2024", "amc2023", "math500", "minerva", "olympiadbench")
TITLES = {
    "aime2024": "AIME24",
    "amc2023": "AMC23",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiadbench": "Olympiad",
}


class SuiteError(ValueError):
    """Bad input (a file, a row, a field): reported as one line, without a traceback."""


@dataclass
class SuiteConfig(PromptConfig):
    """The prompt form (--prompt-template, --system-prompt, --no-chat-template) is training's (--data.*): the
    default is the benchmark instruction; --prompt-from RUN_DIR takes a training run's."""

    model: str | None = None
    """Model to generate with: a built-in name (tiny-arith, smollm2-135m) or a local HF folder."""
    from_responses: Path | None = None
    """Grade these generations instead of a model: JSONL rows {"benchmark", "id", "response"}."""
    platform: Literal["cpu", "cuda", "xla"] = "cpu"
    """Platform whose Rollout generates (model mode)."""
    benchmarks: tuple[str, ...] = ()
    """Benchmarks to run (default: all five; with --from-responses, those in the file)."""
    samples: Annotated[int, Limit(ge=1)] = 1
    """Responses per problem; Pass@1 is their average (avg@k). More than 1 needs --temperature > 0."""
    temperature: Annotated[float, Limit(ge=0)] = 0.0
    """Sampling temperature; 0 is greedy decoding."""
    max_new_tokens: Annotated[int, Limit(ge=1)] = 4096
    """Generation budget per response, in tokens."""
    limit: Annotated[int | None, Limit(ge=1)] = None
    """Model mode: only the first N problems of every benchmark (quick checks)."""
    out: Path | None = None
    """Output folder for results.json and generations.jsonl (default: runs/eval/<timestamp>)."""
    seed: int = 0
    """Sampling seed."""
    batch_size: Annotated[int, Limit(ge=1)] = 32
    """Prompts per Rollout.generate call."""
    grader_workers: Annotated[int, Limit(ge=1)] = 2
    """Grading worker processes."""
    grader_timeout_s: Annotated[float, Limit(gt=0)] = 5.0
    """Wall-clock limit per graded response; a response past it scores 0 and is counted."""
    prompt_from: Path | None = None
    """A training run's folder: prompt with the form its config.json recorded, instead of the three prompt flags."""
    grading: Literal["boxed", "lenient"] = "boxed"
    """boxed: the paper's rule (the last \\boxed{} after </think>; none scores 0).
    lenient: without a box, math-verify's own extraction (e.g. the last number); not comparable with the paper."""

    def check(self) -> None:
        """The rules across fields (each field's limits are declared with it); the CLI prints a ConfigError as
        one line, exit status 2."""
        require((self.model is None) != (self.from_responses is None), "model",
                "give exactly one of --model and --from-responses")
        require(self.samples == 1 or self.temperature > 0, "samples",
                "more than 1 needs --temperature > 0 (greedy samples would all be equal)")
        super().check()
        require(self.prompt_from is None or self.prompt_form() == PromptConfig(), "prompt_from",
                "give --prompt-from or the prompt flags, not both")
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS]
        require(not unknown, "benchmarks", f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")


def prompt_form(cfg: SuiteConfig) -> PromptConfig:
    """The prompt form: the flags', or the one --prompt-from's run recorded in its config.json."""
    if cfg.prompt_from is None:
        return cfg.prompt_form()
    path = cfg.prompt_from / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        return PromptConfig(data.get("prompt_template", DEFAULT_TEMPLATE), data.get("system_prompt"),
                            data.get("chat_template", True))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SuiteError(f"--prompt-from {cfg.prompt_from}: no training run's config.json there ({e!r:.100})") \
            from None
    except ConfigError as e:
        raise SuiteError(f"--prompt-from {path}: {e}") from None


def load_benchmark(name: str, limit: int | None = None) -> list[dict]:
    """Rows {"id", "problem", "answer": [acceptable answers]} of eval/data/<name>.jsonl."""
    if name not in BENCHMARKS:
        raise SuiteError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    with open(DATA_DIR / f"{name}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def read_responses(path: Path, benchmarks: tuple[str, ...]) -> list[dict]:
    """Validated rows of a --from-responses file, each with its sample index per (benchmark, id)."""
    answers: dict[str, dict[str, list]] = {}
    rows, counts = [], defaultdict(int)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"{path}: cannot read: {e}") from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SuiteError(f"{where}: malformed JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise SuiteError(f"{where}: expected a JSON object with benchmark, id, response")
        for key, types in (("benchmark", str), ("id", (str, int)), ("response", str)):
            if key not in row:
                raise SuiteError(f"{where}: missing field {key!r}")
            if not isinstance(row[key], types) or isinstance(row[key], bool):
                raise SuiteError(f"{where}: field {key!r} has type {type(row[key]).__name__}")
        bench, pid = row["benchmark"], str(row["id"])
        if bench not in BENCHMARKS:
            raise SuiteError(f"{where}: field 'benchmark': unknown {bench!r}; valid: {', '.join(BENCHMARKS)}")
        if benchmarks and bench not in benchmarks:
            continue
        if bench not in answers:
            answers[bench] = {r["id"]: r["answer"] for r in load_benchmark(bench)}
        if pid not in answers[bench]:
            raise SuiteError(f"{where}: field 'id': {bench} has no problem {pid!r}")
        rows.append(
            {
                "benchmark": bench,
                "id": pid,
                "sample": counts[bench, pid],
                "response": row["response"],
                "answer": answers[bench][pid],
            }
        )
        counts[bench, pid] += 1
    if not rows:
        raise SuiteError(f"{path}: no responses" + (f" for {', '.join(benchmarks)}" if benchmarks else ""))
    return rows


def generate(cfg: SuiteConfig, benchmarks: tuple[str, ...], form: PromptConfig, pool: GraderPool, sink) -> list[dict]:
    """Generates cfg.samples responses per problem in the prompt form `form`, grading and writing each batch as it
    comes."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from platforms import get_platform
    from remix.interfaces import SamplingParams
    from remix.models import quiet_transformers, resolve_model
    from remix.prompts import encode_prompt

    quiet_transformers()
    model_dir = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rollout = get_platform(cfg.platform).make_rollout(model_dir, seed=cfg.seed)
    problems = [(b, row) for b in benchmarks for row in load_benchmark(b, cfg.limit)]
    rows: list[dict] = []
    with tqdm(total=len(problems), desc="generating", unit="problem") as bar:
        for start in range(0, len(problems), cfg.batch_size):
            batch = problems[start : start + cfg.batch_size]
            params = SamplingParams(
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                n=cfg.samples,
                seed=cfg.seed + start,
            )
            outputs = rollout.generate([encode_prompt(tokenizer, row["problem"], form) for _, row in batch], params)
            new = [
                {
                    "benchmark": b,
                    "id": row["id"],
                    "sample": k,
                    "answer": row["answer"],
                    "response": tokenizer.decode(gen.token_ids, skip_special_tokens=True),
                    "finish_reason": gen.finish_reason,
                }
                for (b, row), gens in zip(batch, outputs)
                for k, gen in enumerate(gens)
            ]
            rows += grade_rows(new, pool, sink)
            bar.update(len(batch))
    return rows


def grade_rows(rows: list[dict], pool: GraderPool, sink) -> list[dict]:
    """Grades rows in place (score, timeout, error flags) and appends them to generations.jsonl."""
    report = pool.grade([r["response"] for r in rows], [r["answer"] for r in rows])
    timed_out, failed = set(report.timed_out), set(report.failed)
    for i, (r, score) in enumerate(zip(rows, report.scores)):
        r.update(score=score, timeout=i in timed_out, error=i in failed)
        sink.write(
            json.dumps(
                {k: r[k] for k in ("benchmark", "id", "sample", "response", "score")}, ensure_ascii=False
            )
            + "\n"
        )
    sink.flush()
    return rows


def summarize(rows: list[dict], benchmarks: tuple[str, ...]) -> dict:
    """Pass@1 (%) per benchmark = mean over problems of the mean score over its samples."""
    per: dict[str, dict[str, list[float]]] = {b: defaultdict(list) for b in benchmarks}
    flags = {b: [0, 0, 0, 0] for b in benchmarks}  # timeouts, errors, reflecting responses, responses
    for r in rows:
        per[r["benchmark"]][r["id"]].append(r["score"])
        flags[r["benchmark"]][0] += r["timeout"]
        flags[r["benchmark"]][1] += r["error"]
        flags[r["benchmark"]][2] += reflects(r["response"])
        flags[r["benchmark"]][3] += 1
    out = {}
    for b in benchmarks:
        means = [sum(s) / len(s) for s in per[b].values()]
        out[b] = {
            "pass@1": 100.0 * sum(means) / len(means) if means else 0.0,
            "n": len(means),
            "timeouts": flags[b][0],
            "errors": flags[b][1],
            "samples": max((len(s) for s in per[b].values()), default=0),
            # the paper's self-reflection rate (%): responses with any of its 16 keywords (remix/reflection.py)
            "reflection_keyword_rate": 100.0 * flags[b][2] / flags[b][3] if flags[b][3] else 0.0,
        }
    return out


def format_table(results: dict, label: str) -> str:
    names = list(results["benchmarks"])
    heads = [TITLES[b] for b in names] + ["Avg."]
    values = [f"{results['benchmarks'][b]['pass@1']:.1f}" for b in names] + [f"{results['average']:.1f}"]
    widths = [max(len(h), len(v), 6) for h, v in zip(heads, values)]
    lw = max(len(label), len("Pass@1 (%)"))
    line = lambda first, cells: " | ".join([first.ljust(lw)] + [c.rjust(w) for c, w in zip(cells, widths)])
    sep = "-+-".join(["-" * lw] + ["-" * w for w in widths])
    counts = " ".join(f"{TITLES[b]} n={results['benchmarks'][b]['n']}" for b in names)
    return "\n".join([line("Pass@1 (%)", heads), sep, line(label, values), f"({counts})"])


def main(cfg: SuiteConfig) -> dict:
    benchmarks = cfg.benchmarks or BENCHMARKS
    responses = read_responses(cfg.from_responses, cfg.benchmarks) if cfg.from_responses else None
    if responses is not None:
        benchmarks = tuple(b for b in BENCHMARKS if any(r["benchmark"] == b for r in responses))
    form = None
    if responses is None:  # the model and the platform first: a bad one leaves nothing behind
        from platforms import get_platform
        from remix.models import resolve_model

        from transformers import AutoTokenizer

        get_platform(cfg.platform)
        try:  # a bad --prompt-from, or a system prompt the model's tokenizer cannot take: before anything is written
            form = prompt_form(cfg)
            form.check_tokenizer(AutoTokenizer.from_pretrained(resolve_model(cfg.model)))
        except ValueError as e:
            raise SuiteError(str(e)) from None
    out = cfg.out or Path("runs/eval") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in ("results.json", "generations.jsonl"):  # never overwrite an earlier evaluation
        if (out / name).exists():
            raise SuiteError(f"{out / name} already exists: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SuiteError(f"--out {out}: cannot create it ({e.strerror})") from None
    with (
        GraderPool(cfg.grader_workers, cfg.grader_timeout_s, rule=cfg.grading) as pool,
        open(out / "generations.jsonl", "w", encoding="utf-8") as sink,
    ):
        rows = (
            grade_rows(responses, pool, sink)
            if responses is not None
            else generate(cfg, benchmarks, form, pool, sink)
        )
    scores = summarize(rows, benchmarks)
    results = {
        "benchmarks": scores,
        "average": sum(s["pass@1"] for s in scores.values()) / len(scores),
        "grading": cfg.grading,  # the rule that produced these numbers
        "prompt": None if form is None else asdict(form),  # the prompt form generated with
        "model": cfg.model,
        "from_responses": str(cfg.from_responses) if cfg.from_responses else None,
        "samples": max(s["samples"] for s in scores.values()),
        # generation settings; unknown (None) for --from-responses
        "temperature": None if responses is not None else cfg.temperature,
        "max_new_tokens": None if responses is not None else cfg.max_new_tokens,
        "limit": None if responses is not None else cfg.limit,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "code": code_version(),  # the grader's rules change with the code: two commits' numbers may differ
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    label = cfg.model or Path(cfg.from_responses).name
    print(format_table(results, label))
    timeouts = sum(s["timeouts"] for s in scores.values())
    if timeouts:
        print(f"{timeouts} response(s) hit the {cfg.grader_timeout_s}s grading deadline and scored 0")
    print(f"wrote {out / 'results.json'} and {out / 'generations.jsonl'}")
    return results


def cli(argv: list[str] | None = None) -> None:
    from platforms import PlatformUnavailable
    from remix.models import ModelNotFound

    cfg = parse_cli(SuiteConfig, argv, __doc__)
    try:
        cfg.validate()
        main(cfg)
    except (SuiteError, ConfigError, ModelNotFound, PlatformUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
