"""remix beside TRL: the same GRPO configuration, wall time per 1,000 rollouts and peak memory.

    pip install -e '.[bench]'          # TRL (pinned, with datasets) is only needed here
    python -m bench.trl        # 5 interleaved repeats of each side, about 11 minutes on 2 cores
    python -m bench.trl --model smollm2-135m --steps 3 --repeats 1 --sides trl remix-grpo --out DIR
        # the short smollm2-135m row, about 17 minutes (the committed one: DIR = docs/benchmarks/trl-smollm2)

Both sides train the same model on the same task with the same GRPO settings: batch 64 responses
(8 prompts x 8 samples) per rollout batch, two optimizer steps of 32 per batch, one pass (TRL's
num_iterations = 1), max 40 new tokens, temperature 1, top-p 1, lr 5e-5, clip eps 0.2, KL coefficient
1e-3 (TRL loads its reference model for it), token-mean loss (TRL's "dapo"), group-std-normalised
advantages, and the same math-verify grader as the reward. remix runs twice: its on-policy GRPO (the
same algorithm as TRL's) and ReMix-GRPO (reusing 40% of each batch, two passes). Micro-batching is
matched: each forward/backward pass holds one mini-batch of 32 on both sides (TRL's per-device batch
32, no gradient accumulation; remix's --micro-batch-size 32). Each side runs in its own process on
the CPU, --repeats times, the sides interleaved (the order rotates each round) so that a drift in the
machine's speed reaches every side alike; timing starts after the first rollout batch (TRL's set-up
and remix's torch.compile are both excluded) and peak memory is the process's peak resident set size.
The tokens each side generated in the timed batches are counted too: the sides sample their own
responses, so equal rollouts need not be equal work. Writes OUT/trl_comparison.md and .json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


from bench.reporting import machine_description, peak_rss_bytes, write_report

ROOT = Path(__file__).resolve().parents[1]  # the checkout: cases run as `python -m` from it

BATCH, GROUP, MINI, NEW_TOKENS, LR, KL = 64, 8, 32, 40, 5e-5, 1e-3


@dataclass
class TRLBenchConfig:
    steps: int = 40
    """Rollout batches per side (the first is a warm-up and not timed)."""
    model: str = "tiny-arith"
    """Model of both sides: a built-in name or a local HF folder."""
    out: Path = Path("docs/benchmarks")
    """Where trl_comparison.md and .json go."""
    repeats: int = 5
    """Runs of each side, interleaved."""
    sides: tuple[str, ...] = ("trl", "remix-grpo", "remix-remix")
    """Which sides to run (trl, remix-grpo: remix's on-policy GRPO, remix-remix: ReMix-GRPO)."""
    side: str | None = None
    """Internal: run one side (trl, remix-grpo, remix-remix) in this process and print JSON."""


def run_trl(cfg: TRLBenchConfig, model_dir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from remix.data import ArithTask
    from remix.prompts import format_prompt
    from remix.rewards import GraderPool

    problems = ArithTask((1, 2, 3)).train_problems()
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": format_prompt(p.problem)}],
                                  "answer": p.answer} for p in problems])
    steps_per_batch = BATCH // MINI
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", logging_steps=10_000, seed=0, disable_tqdm=True,
        per_device_train_batch_size=MINI, gradient_accumulation_steps=1, steps_per_generation=steps_per_batch,
        num_generations=GROUP, num_iterations=1, max_steps=cfg.steps * steps_per_batch,
        max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, learning_rate=LR, beta=KL, epsilon=0.2,
        loss_type="dapo", scale_rewards="group", lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999,
        gradient_checkpointing=False,  # remix's learner does not checkpoint the transformer body either
    )
    marks: list[float] = []
    generated: list[int] = []  # completion tokens per reward call (one call per rollout batch)

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    with GraderPool(2, 5.0) as pool:
        def reward(prompts, completions, answer, completion_ids=None, **kwargs):
            generated.append(sum(len(ids) for ids in completion_ids))
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return pool.grade(texts, list(answer)).scores

        trainer = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[StepTimes()])
        trainer.train()
    timed = marks[steps_per_batch - 1:]  # from the end of the first rollout batch's optimizer steps
    return {"side": "TRL GRPOTrainer", "timed_batches": cfg.steps - 1, "seconds": timed[-1] - timed[0],
            "generated_tokens": sum(generated[1:]), "peak_rss_bytes": peak_rss_bytes()}


def run_remix(cfg: TRLBenchConfig, model_dir: Path, variant: str) -> dict:
    from remix.config import TrainConfig
    from remix.models import quiet_transformers
    from remix.rewards import GraderPool
    from platforms import get_platform
    from remix.runner import build_trainer

    quiet_transformers()
    base = TrainConfig()
    tc = dataclasses.replace(
        base, variant=variant, steps=cfg.steps, batch_size=BATCH, mini_batch_size=MINI, micro_batch_size=MINI,
        model=dataclasses.replace(base.model, name=str(model_dir)),
        rollout=dataclasses.replace(base.rollout, max_new_tokens=NEW_TOKENS, group_size=GROUP, temperature=1.0),
        optim=dataclasses.replace(base.optim, lr=LR),
        objective=dataclasses.replace(base.objective, kl_coef=KL, clip_eps=0.2, loss_agg="token-mean"),
    )
    with GraderPool(2, 5.0, rewards=tc.rewards()) as pool:
        trainer = build_trainer(tc, get_platform(tc.platform), pool)
        trainer.train_step()  # warm-up batch: torch.compile of the objective
        start, rollouts_before, generated = time.perf_counter(), trainer.rollouts, 0.0
        for _ in range(cfg.steps - 1):
            before = trainer.rollouts
            m = trainer.train_step()
            generated += m["response_length/mean"] * (trainer.rollouts - before)
        seconds = time.perf_counter() - start
    return {"side": "remix " + ("GRPO (on-policy)" if variant == "onpolicy" else "ReMix-GRPO"),
            "timed_batches": cfg.steps - 1, "seconds": seconds, "rollouts": trainer.rollouts - rollouts_before,
            "generated_tokens": round(generated), "peak_rss_bytes": peak_rss_bytes()}


def side(cfg: TRLBenchConfig) -> dict:
    from remix.models import resolve_model

    model_dir = resolve_model(cfg.model)
    if cfg.side == "trl":
        result = run_trl(cfg, model_dir)
        result["rollouts"] = result["timed_batches"] * BATCH
    else:
        result = run_remix(cfg, model_dir, "onpolicy" if cfg.side == "remix-grpo" else "remix")
    result["seconds_per_1000_rollouts"] = 1000 * result["seconds"] / result["rollouts"]
    return result


def main(cfg: TRLBenchConfig) -> None:
    if cfg.side:
        print(json.dumps(side(cfg)))
        return
    try:
        import trl
    except ImportError:
        raise SystemExit("TRL is not installed: pip install -e '.[bench]'") from None
    results: dict[str, list[dict]] = {name: [] for name in cfg.sides}
    for rep in range(cfg.repeats):
        order = list(cfg.sides[rep % len(cfg.sides):] + cfg.sides[:rep % len(cfg.sides)])  # rotate each round
        for name in order:
            print(f"round {rep + 1}/{cfg.repeats}: {name} ...", flush=True)
            cmd = [sys.executable, "-m", "bench.trl", "--side", name, "--steps", str(cfg.steps), "--model", cfg.model,
                   "--out", str(cfg.out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT,
                                  env={**os.environ, "TQDM_DISABLE": "1"})
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {r['seconds_per_1000_rollouts']:.2f} s per 1,000 rollouts, {r['generated_tokens']:,} tokens",
                  flush=True)
            results[name].append(r)
    write_report(cfg.out, "trl_comparison", report_lines(cfg, trl.__version__, results), results)


def _spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def report_lines(cfg: TRLBenchConfig, trl_version: str, results: dict[str, list[dict]]) -> list[str]:
    ref = results.get("trl")
    ref_rate = statistics.median(r["seconds_per_1000_rollouts"] for r in ref) if ref else None
    ref_rss = statistics.median(r["peak_rss_bytes"] for r in ref) if ref else None
    lines = [
        "# remix beside TRL's GRPOTrainer", "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()}, TRL {trl_version} (pinned in "
        f"pyproject.toml's `bench` extra); model `{cfg.model}`; {cfg.steps} rollout batches per run, the first "
        f"untimed; "
        + (f"{cfg.repeats} runs per side, interleaved (the order rotates each round)." if cfg.repeats > 1 else
           "one run per side (a short row: no spread, so read its ratio as one sample)."), "",
        "Command: `" + " ".join(["python -m bench.trl", *sys.argv[1:]]) + "`",
        "",
        f"Shared GRPO settings: batch {BATCH} responses ({BATCH // GROUP} prompts x {GROUP}), {BATCH // MINI} "
        f"optimizer "
        f"steps of {MINI} per batch, one forward/backward pass of {MINI} per optimizer step on both sides (matched "
        f"micro-batching), 1 pass, {NEW_TOKENS} new tokens, temperature 1, lr {LR:g}, clip 0.2, KL {KL:g}, token-mean "
        "loss, group-normalised advantages, the same math-verify grader.", "",
        "Median over the runs [min-max]. Generated tokens: the responses' tokens in the timed batches of one run "
        "(each side samples its own).", "",
        "| side | runs | timed rollouts | generated tokens | s per 1,000 rollouts | vs TRL | s per 100k "
        "generated tokens "
        "| peak RSS (MiB) | vs TRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rs in results.values():
        rate = [r["seconds_per_1000_rollouts"] for r in rs]
        per_tok = [1e5 * r["seconds"] / r["generated_tokens"] for r in rs]
        rss = [r["peak_rss_bytes"] / 2**20 for r in rs]
        lines.append(
            f"| {rs[0]['side']} | {len(rs)} | {rs[0]['rollouts']:,} | "
            f"{_spread([r['generated_tokens'] for r in rs], '{:,.0f}')} "
            f"| {_spread(rate, '{:.2f}')} | "
            + (f"{statistics.median(rate) / ref_rate:.2f}x" if ref_rate else "n/a")
            + f" | {_spread(per_tok, '{:.1f}')} | {_spread(rss, '{:,.0f}')} | "
            + (f"{statistics.median(r['peak_rss_bytes'] for r in rs) / ref_rss:.2f}x" if ref_rss else "n/a") + " |")
    lines += ["", "Lower is better in the ratio columns (ratios of medians)."
              + (" ReMix-GRPO does twice the updates per batch (m = 2) on 40% reused samples, so its time per rollout "
                 "is not the same work as the on-policy rows." if "remix-remix" in results else ""), ""]
    return lines


if __name__ == "__main__":
    main(tyro.cli(TRLBenchConfig, description=__doc__))
