"""Throughput and memory: training steps, the compiled objective, chunked log-probs.

    python -m bench.throughput            # everything below (about 10 minutes on 2 cores)
    python -m bench.throughput --help

1. Training steps on the CPU platform (tiny-arith at the default batch; smollm2-135m at a small one):
   rollout tokens/s (generated tokens per second of generation), learner tokens/s (prompt+response
   tokens through forward and backward, m passes, per second of learning), the time split of a step
   and the process's peak resident memory; CPU only (a GPU's whole steps are scripts/gpu_check.py's).
2. The ReMix objective (loss + backward) on [64, 4096], torch.compile'd against eager.
3. Response-token log-probs through an LM head of vocabulary 151,936 (Qwen2's), hidden 896, 2,048
   tokens, forward and backward: chunked (the learner's `head_logprobs`) against the naive full
   [N, V] computation. Time and peak memory.
Parts 2 and 3 also run on CUDA when a GPU is present. Every memory number comes from a fresh
subprocess (peak resident set size above the process's size before the measured work; on CUDA,
torch's peak allocated memory), so one case cannot inflate another's.
Writes OUT/throughput.md and OUT/throughput.json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro


from bench.reporting import machine_description, peak_rss_bytes, write_report

ROOT = Path(__file__).resolve().parents[1]  # the checkout: cases run as `python -m` from it

VOCAB, HIDDEN, TOKENS = 151_936, 896, 2048


@dataclass
class ThroughputConfig:
    out: Path = Path("docs/benchmarks")
    """Where throughput.md and throughput.json go."""
    steps: int = 5
    """Measured training steps per model (after one warm-up step)."""
    smollm2: bool = True
    """Also measure smollm2-135m steps (about 2 minutes per step on 2 cores at batch 16)."""
    chunk_tokens: tuple[int, ...] = (256, 1024)
    """Chunk sizes of the chunked log-probs to measure."""
    case: str | None = None
    """Internal: run one measurement in this process and print it as JSON."""


# --- measurements (each runs in its own subprocess) -------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timed(fn, repeats: int, device) -> float:
    """Median seconds of `fn` over `repeats` calls, after one warm-up call."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def case_objective(device_name: str, compiled: bool) -> dict:
    import torch

    from remix.objective import LossInputs, ObjectiveConfig, remix_loss

    device = torch.device(device_name)
    g = torch.Generator(device="cpu").manual_seed(0)
    B, T = 64, 4096

    def rand():
        return (-torch.rand(B, T, generator=g) * 3).to(device)

    fixed = dict(behav_logp=rand(), prox_logp=rand(), ref_logp=rand(), prev_logp=rand(),
                 advantages=torch.randn(B, T, generator=g).to(device),
                 mask=(torch.rand(B, T, generator=g) < 0.9).to(device))
    logp0 = rand()
    cfg = ObjectiveConfig(compile=compiled)
    t0 = time.perf_counter()

    def step():
        logp = logp0.clone().requires_grad_(True)
        loss, _ = remix_loss(LossInputs(logp=logp, **fixed), cfg, kl_lambda=0.8)
        loss.backward()

    step()
    first = time.perf_counter() - t0
    return {"seconds": _timed(step, 20, device), "first_call_seconds": first}


def case_logprobs(device_name: str, chunk_tokens: int) -> dict:
    """chunk_tokens 0: the naive full-vocabulary computation."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from platforms.backend.logprobs import head_logprobs

    device = torch.device(device_name)
    torch.manual_seed(0)
    head = nn.Linear(HIDDEN, VOCAB, bias=False).to(device)
    states0 = torch.randn(TOKENS, HIDDEN, device=device)
    targets = torch.randint(VOCAB, (TOKENS,), device=device)

    def naive():
        states = states0.clone().requires_grad_(True)
        logp_all = F.log_softmax(F.linear(states, head.weight).float(), dim=-1)
        logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        (logp.sum() + entropy.sum()).backward()

    def chunked():
        states = states0.clone().requires_grad_(True)
        logp, entropy = head_logprobs(states, targets, head, 1.0, chunk_tokens, with_grad=True)
        (logp.sum() + entropy.sum()).backward()

    fn = naive if chunk_tokens == 0 else chunked
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    fn()  # the first call measures peak memory
    peak = (torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else (peak_rss_bytes() - base)
    return {"seconds": _timed(fn, 3, device), "peak_bytes": peak}


def case_steps(model: str, steps: int) -> dict:
    import torch

    from remix.config import TrainConfig
    from remix.models import quiet_transformers
    from remix.rewards import GraderPool
    from platforms import get_platform
    from remix.runner import build_trainer

    quiet_transformers()
    cfg = TrainConfig(model=dataclasses.replace(TrainConfig().model, name=model))
    if model != "tiny-arith":  # a batch that gives one step in about 2 minutes on 2 cores
        cfg = dataclasses.replace(cfg, batch_size=16, mini_batch_size=8, micro_batch_size=8,
                                  rollout=dataclasses.replace(cfg.rollout, max_new_tokens=64, group_size=4))
    with GraderPool(cfg.grader_workers, cfg.grader_timeout_s, rewards=cfg.rewards()) as grader:
        trainer = build_trainer(cfg, get_platform(cfg.platform), grader)
        gen_tokens, learn_tokens = [], []
        real_generate, real_update = trainer.rollout.generate, trainer.learner.update

        def generate(prompts, params):
            out = real_generate(prompts, params)
            gen_tokens.append(sum(len(g.token_ids) for gs in out for g in gs))
            return out

        def update(batch, kl_lambda):
            learn_tokens.append(int(batch.attention_mask.sum()))
            return real_update(batch, kl_lambda)

        trainer.rollout.generate, trainer.learner.update = generate, update
        trainer.train_step()  # warm-up: torch.compile of the objective, first allocations
        gen_tokens.clear()
        learn_tokens.clear()
        metrics = [trainer.train_step() for _ in range(steps)]
    times = {k: sum(m[f"time/{k}"] for m in metrics) for k in ("generate", "grade", "learn")}
    return {
        "model": model, "batch_size": cfg.batch_size, "group_size": cfg.rollout.group_size,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "steps": steps, "seconds_per_step": sum(times.values()) / steps,
        "split": {k: v / steps for k, v in times.items()},
        "rollout_tokens_per_s": sum(gen_tokens) / times["generate"],
        "learner_tokens_per_s": sum(learn_tokens) / times["learn"],
        "peak_rss_bytes": peak_rss_bytes(), "threads": torch.get_num_threads(),
    }


CASES = {
    "objective": lambda a: case_objective(a[0], a[1] == "compiled"),
    "logprobs": lambda a: case_logprobs(a[0], int(a[1])),
    "steps": lambda a: case_steps(a[0], int(a[1])),
}


def measure(case: str, *args) -> dict:
    """Runs one case in a fresh subprocess and returns its JSON result."""
    cmd = [sys.executable, "-m", "bench.throughput", "--case", ":".join([case, *map(str, args)])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(cfg: ThroughputConfig) -> None:
    import torch

    if cfg.case:
        name, *args = cfg.case.split(":")
        print(json.dumps(CASES[name](args)))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    start = time.time()
    lines = ["# Throughput and memory", "", f"Measured {dt.date.today().isoformat()} on {machine_description()}.", "",
             "Command: `" + " ".join(["python -m bench.throughput", *sys.argv[1:]]) + "`", ""]
    result: dict = {"devices": devices}

    print("training steps on the CPU platform ...", flush=True)
    models = ["tiny-arith"] + (["smollm2-135m"] if cfg.smollm2 else [])
    result["steps"] = [measure("steps", m, cfg.steps if m == "tiny-arith" else 1) for m in models]
    lines += ["## Training steps (CPU platform)", "",
              "| model | batch x new tokens | s/step | generate / grade / learn (s) | rollout tok/s | "
              "learner tok/s | peak RSS |", "|---|---|---|---|---|---|---|"]
    for r in result["steps"]:
        s = r["split"]
        shape = f"{r['batch_size']} ({r['group_size']} per prompt) x {r['max_new_tokens']}"
        lines.append(f"| {r['model']} | {shape} | {r['seconds_per_step']:.2f} | "
                     f"{s['generate']:.2f} / {s['grade']:.2f} / {s['learn']:.2f} | {r['rollout_tokens_per_s']:,.0f} | "
                     f"{r['learner_tokens_per_s']:,.0f} | {mib(r['peak_rss_bytes'])} |")
    lines += ["", "Steps are ReMix-GRPO with the default settings (m = 2, so every batch token is learned on twice); "
              "averages over the measured steps after one warm-up step.", ""]

    print("objective: compiled against eager ...", flush=True)
    lines += ["## The ReMix objective on [64, 4096] (loss and backward)", "",
              "| device | eager | compiled | speed-up | first compiled call (compile time) |", "|---|---|---|---|---|"]
    result["objective"] = {}
    for d in devices:
        eager, comp = measure("objective", d, "eager"), measure("objective", d, "compiled")
        result["objective"][d] = {"eager": eager, "compiled": comp}
        lines.append(f"| {d} | {1e3 * eager['seconds']:.1f} ms | {1e3 * comp['seconds']:.1f} ms | "
                     f"{eager['seconds'] / comp['seconds']:.2f}x | {comp['first_call_seconds']:.1f} s |")

    print("log-probs: chunked against naive ...", flush=True)
    lines += ["", f"## Log-probs through an LM head: vocabulary {VOCAB:,}, hidden {HIDDEN}, {TOKENS:,} tokens, "
              "forward + backward", "",
              "| device | method | time | peak memory above inputs |", "|---|---|---|---|"]
    result["logprobs"] = {}
    for d in devices:
        for chunk in (0, *cfg.chunk_tokens):
            r = measure("logprobs", d, chunk)
            label = "naive [N, V]" if chunk == 0 else f"chunked ({chunk} tokens)"
            result["logprobs"][f"{d}:{label}"] = r
            lines.append(f"| {d} | {label} | {r['seconds']:.2f} s | {mib(r['peak_bytes'])} |")
    lines += ["", f"A [N, V] float32 logits tensor alone is {mib(TOKENS * VOCAB * 4)} here; the naive path also keeps "
              "its log-softmax for the backward pass.", "",
              f"Total benchmark time {time.time() - start:.0f} s.", ""]
    write_report(cfg.out, "throughput", lines, result)


if __name__ == "__main__":
    main(tyro.cli(ThroughputConfig, description=__doc__))
