"""The XLA platform's run on the CPU through PJRT beside the CPU platform's: the same default ReMix-GRPO job on
tiny-arith, held-out accuracy, step times, and XLA's compilations (count and time, from torch_xla's metrics).

    PJRT_DEVICE=CPU .venv-xla/bin/python -m bench.xla --steps 20     # after `make test-xla` built .venv-xla

Both runs are in this one process, the CPU platform's first (torch_xla's metrics then count the XLA run alone).
Writes docs/benchmarks/xla_cpu.md and .json. What it says about a TPU: nothing about speed (XLA's CPU backend is
not a TPU), only that the platform trains like the reference and how often it compiles.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.reporting import machine_description, write_report
from platforms import get_platform
from remix.config import TrainConfig
from remix.runner import run
from remix.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def one_run(cfg: TrainConfig) -> dict:
    start = time.perf_counter()
    summary = run(cfg, get_platform(cfg.platform))
    wall = time.perf_counter() - start
    rows = [r for r in read_metrics(Path(cfg.run_dir) / "metrics.jsonl") if r["step"] > 0]
    step_s = [r["time/generate"] + r["time/grade"] + r["time/learn"] for r in rows]
    return {"before": summary["heldout_accuracy_before"], "after": summary["heldout_accuracy_after"],
            "curve": [(r["step"], r["heldout/accuracy"]) for r in read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
                      if "heldout/accuracy" in r],
            "first_step_s": step_s[0], "later_step_s_median": statistics.median(step_s[1:]),
            "later_step_s_min": min(step_s[1:]), "later_step_s_max": max(step_s[1:]), "wall_s": wall,
            "rollouts": summary["rollouts"]}


def per_step_counts(cfg: TrainConfig, warmup: int = 2, measured: int = 3) -> dict:
    """torch_xla's counts per training step of `cfg` on XLA, after `warmup` steps (compilations, the optimizer's
    first state): device-to-host transfers, graph executions, scalar reads, and compilations (0 once warm)."""
    import torch_xla.debug.metrics as met

    from remix.rewards import GraderPool
    from remix.runner import build_trainer

    with GraderPool(cfg.grader_workers, cfg.grader_timeout_s, rewards=cfg.rewards()) as grader:
        trainer = build_trainer(cfg, get_platform("xla"), grader)
        for _ in range(warmup):
            trainer.train_step()
        met.clear_all()
        for _ in range(measured):
            trainer.train_step()

    def count(metric: str) -> float:
        data = met.metric_data(metric)
        return (data[0] if data else 0) / measured

    return {"transfers": count("TransferFromDeviceTime"), "executions": count("ExecuteTime"),
            "scalar_reads": (met.counter_value("aten::_local_scalar_dense") or 0) / measured,
            "compilations": count("CompileTime"), "fallback_ops": met.executed_fallback_ops()}


def decode_comparison(out_dir: Path, layers: int = 28, rows: int = 16, tokens: int = 32, repeats: int = 3) -> dict:
    """The static decode on XLA traced token by token (the default) against the same step `torch.compile`d with the
    openxla backend, side by side in this process: a random Qwen2 of `layers` layers at a tiny width, so that the
    host's work per token (tracing every layer's ops, hashing the graph) shows, not the CPU backend's arithmetic.
    Per token: wall time of a whole generation / tokens, median over `repeats` after one warm-up; and whether both
    sampled the same tokens."""
    import torch_xla.debug.metrics as met

    from platforms import xla
    from platforms.backend.rollout import DecodePlan, TorchRollout
    from remix.interfaces import SamplingParams
    from remix.models.tiny_arith import _new_model, _save
    from remix.models.tokenizer import train_arith_tokenizer

    tokenizer = train_arith_tokenizer()
    model_dir = out_dir / f"qwen2-{layers}-layers"
    _save(_new_model(tokenizer, 0, hidden=64, layers=layers, heads=4, intermediate=128), tokenizer, model_dir)
    prompts = [tokenizer(f"{i} + {i} =")["input_ids"] for i in range(rows)]
    params = SamplingParams(temperature=1.0, max_new_tokens=tokens, seed=7)
    result = {}
    for name, compiled in (("traced", False), ("compiled (openxla)", True)):
        plan = DecodePlan(static_cache=True, sync_every=8, mark_step=xla.sync, compile=compiled,
                          compile_backend="openxla")
        rollout = TorchRollout(model_dir, device=xla.device(), platform="xla", decode=plan)
        first = rollout.generate(prompts, params)  # warm-up: compilations
        compiles_before = (met.metric_data("CompileTime") or (0,))[0]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            gens = rollout.generate(prompts, params)
            times.append((time.perf_counter() - start) / max(len(g[0].token_ids) for g in gens))
        result[name] = {"ms_per_token": 1000 * statistics.median(times), "ms_min": 1000 * min(times),
                        "ms_max": 1000 * max(times), "tokens": [g[0].token_ids for g in first],
                        "later_compilations": (met.metric_data("CompileTime") or (0,))[0] - compiles_before}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args()
    if os.environ.get("PJRT_DEVICE") != "CPU":
        print("error: PJRT_DEVICE: set PJRT_DEVICE=CPU (this benchmark runs XLA on the CPU)", file=sys.stderr)
        return 2
    import torch
    import torch_xla
    import torch_xla.debug.metrics as met

    from platforms import xla

    # The XLA device must exist before the first backward pass of the process (the CPU run's): PyTorch's autograd
    # engine sizes its per-device queues at its first use, and an XLA device that appears later has none.
    xla.device()
    with tempfile.TemporaryDirectory() as tmp:  # first: it compiles graphs of its own, cleared from the counts below
        decode = decode_comparison(Path(tmp))
    same_tokens = decode["traced"]["tokens"] == decode["compiled (openxla)"]["tokens"]
    met.clear_all()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for platform in ("cpu", "xla"):
            cfg = replace(TrainConfig(platform=platform, steps=args.steps, eval_every=args.eval_every),
                          run_dir=Path(tmp) / platform)
            results[platform] = one_run(cfg)
    compile_time = met.metric_data("CompileTime")
    execute = met.metric_data("ExecuteTime")
    results["xla"].update(compilations=int(compile_time[0]), compile_s=compile_time[1] / 1e9,
                          executions=int(execute[0]) if execute else 0)
    # after the runs: a step's own counts (the runs' totals above include evaluations and the first compilations)
    per_step = per_step_counts(TrainConfig(platform="xla"))

    command = "PJRT_DEVICE=CPU python -m bench.xla " + " ".join(sys.argv[1:])
    versions = f"torch {torch.__version__}, torch-xla {torch_xla.__version__}"
    lines = ["# The XLA platform on the CPU (PJRT) beside the CPU platform", "",
             f"Command: `{command}`  ", f"Date: {dt.date.today().isoformat()}  ",
             f"Machine: {machine_description()}; {versions}  ",
             f"Job: the default ReMix-GRPO run on tiny-arith, {args.steps} steps of 64 responses, evaluated every "
             f"{args.eval_every} steps (256 held-out problems, greedy). One run per platform, the same seed.", "",
             "| platform | held-out accuracy (step: accuracy) | first step | later steps, median (min-max) | wall | "
             "XLA compilations | compile time |", "|---|---|---|---|---|---|---|"]
    for platform, r in results.items():
        curve = ", ".join(f"{s}: {a:.3f}" for s, a in r["curve"])
        comp = (f"{r['compilations']} | {r['compile_s']:.0f} s") if platform == "xla" else "- | -"
        lines.append(f"| {platform} | {curve} | {r['first_step_s']:.1f} s | {r['later_step_s_median']:.2f} s "
                     f"({r['later_step_s_min']:.2f}-{r['later_step_s_max']:.2f}) | {r['wall_s']:.0f} s | {comp} |")
    lines += ["", "Step time is generate + grade + learn as the run logs it; the first step includes most "
              "compilations on XLA. Compilations are torch_xla's CompileTime count over the whole XLA run "
              "(evaluations included): one per distinct graph, so later steps in the same length buckets add none.",
              "", "Per training step of the default job on XLA, once warm (mean of 3 steps after 2, torch_xla's "
              "metrics; a decode step is one graph execution, a device-to-host transfer makes the host wait):", "",
              "| device-to-host transfers | graph executions | scalar reads | compilations | ops on the host's "
              "fallback path |", "|---|---|---|---|---|",
              f"| {per_step['transfers']:.1f} | {per_step['executions']:.1f} | {per_step['scalar_reads']:.1f} | "
              f"{per_step['compilations']:.1f} | {', '.join(per_step['fallback_ops']) or 'none'} |"] + [
              "", "Decode, traced token by token against `torch.compile(backend=\"openxla\")` of the same step: a "
              "random Qwen2 of 28 layers at width 64 (the host's tracing shows, not the CPU's arithmetic), 16 rows, "
              "32 tokens, wall time of a generation per token, median (min-max) of 3 after a warm-up:", "",
              "| decode step | ms per token | compilations after the warm-up |", "|---|---|---|",
              *(f"| {k} | {v['ms_per_token']:.1f} ({v['ms_min']:.1f}-{v['ms_max']:.1f}) | {v['later_compilations']} |"
                for k, v in decode.items()),
              "", f"Both sampled {'the same' if same_tokens else 'DIFFERENT'} tokens."]
    write_report(args.out, "xla_cpu", lines, {"command": command, "machine": machine_description(),
                                             "versions": versions, "results": results, "per_step": per_step,
                                             "decode": {k: {kk: vv for kk, vv in v.items() if kk != "tokens"}
                                                        for k, v in decode.items()}, "decode_same_tokens": same_tokens})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
