"""The one backend on an accelerator, checked and timed in one call (the GPU sessions' prepared command).

    python -m scripts.gpu_check --device cpu --quick --out /tmp/gpu-check     # the smoke test run here (tested)
    python3 -m scripts.gpu_check --out "$OUT"                                 # on a CUDA machine (repository root)

On the lent H100/H200 (torch 2.11, transformers 5.17, safetensors there; no package registry) carry the pure
Python wheels the configs need, downloaded here with `bash scripts/gpu_wheels.sh`, then run

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. \
        && REMIX_CACHE=.cache/remix PYTHONUNBUFFERED=1 python3 -m scripts.gpu_check --budget-s 480 --out "$OUT"

with `.whl` and `.cache/remix` (the tiny-arith model, built here once by `python -m scripts.gpu_check --prepare`)
named in the call's carry.

First a preflight: every package the project imports, the features the carried wheels need of the machine's
own packages (typeguard needs typing_extensions.Sentinel), and the project itself; a failure there is the
report's first row and nothing else runs. Then, in order: (a) the tests marked cuda (`pytest -m cuda
tests/cuda`), one row each; (b) every check builds the backend (platforms/backend) on --device exactly as a
platform would and compares it with a reference that does not depend on the device: float64 log-probs over the
full vocabulary on the host, the same update on the same batch on the CPU, the float32 update, the eager
objective; then ReMix-GRPO on tiny-arith for a few steps with rollout and learner on the device, its first
update's loss against the CPU platform's on the same batch; (c) on a randomly initialised model of
Qwen2.5-1.5B's shape in bf16 (much smaller with --quick), with the configuration a run of that size would
use (`scale_config`, tested in CI): learner tokens/s and MFU at 4,096-token sequences (the peak from the
detected GPU), the chunked log-prob pass, weight-sync time, rollout tokens/s of the torch engine at batch 64
with the dynamic and the static compiled KV cache side by side, resident and peak memory; (d) LoRA (rank 16, peft)
against full finetuning in (c)'s configuration: one ReMix-GRPO learner step each (bench/lora.py), step time, peak
memory, and the bytes held, LoRA's at most 0.25x full finetuning's. Timings use the device's own clock
(synchronised), a median over repeats after warm-up.

A part that raises is one FAIL row naming it and its error (traceback on stderr), and the next part runs. The
report (OUT/gpu-<gpu>-<date>.md and .json, with each part's wall time) is written after every part, so a call
killed at its time limit still returns what it measured; `--budget-s` skips the parts that would start after
it (one row each) and stops a part still running at it. `--parts` runs a subset (a rerun of what is missing).
Exits 1 if a check failed. Nothing here needs the grader (math-verify) or the network: the models are built on
the spot or carried; the loops' rewards are exact string matches. Not measurable here: the SGLang engine (not
installable on the lent GPU machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import importlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

from bench.reporting import machine_description, write_report  # stdlib and torch only
from bench.shapes import QUICK_SHAPE, QWEN15B, random_model  # torch only

ROOT = Path(__file__).resolve().parents[1]

# The project's own imports pull in tyro, typeguard and transformers: a missing or too old package (the lent machine
# has no registry) becomes the preflight's row in the report, not a traceback before any report exists.
try:
    from platforms.backend import DTYPES, ParallelPlan, TorchLearner, TorchRollout, decode_plan_for
    from platforms.backend.logprobs import head_logprobs
    from remix.batching import collate, positions_of
    from remix.config import DataConfig, ModelConfig, RolloutConfig, TrainConfig
    from remix.interfaces import Group, SamplingParams, TokenBatch
    from remix.models import build_tiny_random_model, quiet_transformers
    from remix.objective import LossInputs, ObjectiveConfig, remix_loss
except Exception as e:  # noqa: BLE001 -- any import failure is reported by preflight(), then the script stops
    PROJECT_IMPORT_ERROR: Exception | None = e
else:
    PROJECT_IMPORT_ERROR = None


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, value: float, limit: float, what: str, higher_is_better: bool = False) -> None:
        ok = value >= limit if higher_is_better else value <= limit
        self.rows.append({"check": name, "value": value, "limit": limit, "passed": bool(ok), "what": what,
                          "bound": ">=" if higher_is_better else "<="})

    def time(self, name: str, seconds: list[float], what: str) -> None:
        self.rows.append({"check": name, "value": statistics.median(seconds), "min": min(seconds),
                          "max": max(seconds), "passed": True, "what": what, "timing": True})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def config(model_dir: Path, dtype: str = "float32", activation_checkpointing: bool = False) -> TrainConfig:
    model = ModelConfig(name=str(model_dir), dtype=dtype, activation_checkpointing=activation_checkpointing)
    return TrainConfig(model=model, batch_size=16, mini_batch_size=8, micro_batch_size=4, logprob_chunk_tokens=16,
                       rollout=RolloutConfig(max_new_tokens=8, group_size=2), data=DataConfig(heldout_size=8),
                       objective=ObjectiveConfig(kl_coef=0.1, entropy_coef=0.01))


def learner_on(device: torch.device, model_dir: Path, cfg: TrainConfig) -> TorchLearner:
    plan = ParallelPlan(device=device, compute_dtype=DTYPES[cfg.model.dtype],
                        activation_checkpointing=cfg.model.activation_checkpointing)
    return TorchLearner(model_dir, cfg, plan, platform=device.type)


PROMPTS = ("What is 1 + 2?", "7 * 8 =", "Hi", "Compute 12 - 5, then add 3.")  # several lengths: left padding


def sampled_batch(rollout: TorchRollout, n: int, tokens: int):
    tok = rollout.tokenizer
    prompts = [tok(t)["input_ids"] for t in PROMPTS]
    assert len({len(p) for p in prompts}) > 1, "the prompts must differ in length to exercise left padding"
    gens = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=tokens, n=n, seed=3))
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[float(i % 2) for i in range(len(gs))],
                    version=1, engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    return collate(groups, rollout.pad_id), groups


def check_logprobs(c: Checks, device, model_dir: Path) -> None:
    """Learner log-probs on the device against float64 over the full vocabulary on the host; the engine's
    sampled log-probs against the learner's."""
    cfg = config(model_dir)
    learner = learner_on(device, model_dir, cfg)
    rollout = TorchRollout(model_dir, seed=1, device=device, platform=device.type)
    batch, groups = sampled_batch(rollout, n=2, tokens=8)
    got = learner.logprobs(batch)
    host = learner.policy.lm.to("cpu").double()
    logits = host(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  position_ids=positions_of(batch.attention_mask)).logits
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    want = F.log_softmax(logits[:, P - 1:P + T - 1], -1).gather(-1, batch.input_ids[:, P:P + T, None]).squeeze(-1)
    want = want * batch.response_mask
    c.add("learner log-probs vs float64 host", float((got.double() - want.detach()).abs().max()), 1e-4,
          "max absolute difference over response tokens (float32 on the device)")
    engine = torch.zeros_like(got)
    for i, t in enumerate(t for g in groups for t in g.engine_logp):
        engine[i, :len(t)] = t
    c.add("engine vs learner log-probs", float((engine - got).abs().max()), 1e-3,
          "max absolute difference: the sampler's log-probs of its own tokens against the learner's")
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    prompts = [rollout.tokenizer("What is 2 + 2?")["input_ids"]]
    c.add("greedy decoding repeats", float(rollout.generate(prompts, greedy) != rollout.generate(prompts, greedy)),
          0.0, "1 if two greedy generations of the same prompt differ")


def update_batch(model_dir: Path):
    """One batch for every update of check_precision, sampled on the host (the same tokens whatever the device),
    with log-prob fields around the float32 policy's own log-probs."""
    rollout = TorchRollout(model_dir, seed=2)
    batch, _ = sampled_batch(rollout, n=2, tokens=8)
    base = learner_on(torch.device("cpu"), model_dir, config(model_dir)).logprobs(batch)
    g = torch.Generator().manual_seed(0)
    batch.fields.update(behav_logp=base + 0.3 * torch.randn(base.shape, generator=g), prox_logp=base.clone(),
                        ref_logp=base - 0.1, prev_logp=base + 0.1,
                        advantages=torch.randn(len(batch), 1, generator=g).expand_as(base).clone())
    return batch


def one_update(device, model_dir: Path, batch, dtype: str = "float32", activation_checkpointing: bool = False):
    """Metrics, weight change and parameter dtypes of one update of the initial model on `batch`."""
    learner = learner_on(device, model_dir, config(model_dir, dtype, activation_checkpointing))
    before = {k: v.detach().float().cpu().clone() for k, v in learner.policy_weights()}
    metrics = learner.update(batch, kl_lambda=0.7)
    after = {k: v.detach().float().cpu().clone() for k, v in learner.policy_weights()}
    delta = torch.cat([(after[k] - before[k]).flatten() for k in sorted(before)])
    return metrics, delta, {k: v.dtype for k, v in learner.policy.named_parameters()}


def check_precision(c: Checks, device, model_dir: Path) -> None:
    batch = update_batch(model_dir)
    fp32, d32, _ = one_update(device, model_dir, batch)
    host, h32, _ = one_update(torch.device("cpu"), model_dir, batch)
    for key in ("loss/policy", "grad_norm"):
        c.add(f"float32 update on the device vs the CPU: {key}", abs(fp32[key] - host[key]) / max(abs(host[key]), 1e-8),
              1e-4, "relative difference, same batch and weights")
    c.add("float32 update on the device vs the CPU: direction", float(F.cosine_similarity(d32, h32, dim=0)), 0.999,
          "cosine between the two weight updates", higher_is_better=True)
    bf16, d16, dtypes = one_update(device, model_dir, batch, "bfloat16")
    c.add("bf16 vs float32 update: loss", abs(bf16["loss/policy"] - fp32["loss/policy"]) / max(abs(fp32["loss/policy"]),
          1e-8), 1e-2, "relative difference of the policy loss")
    c.add("bf16 vs float32 update: direction", float(F.cosine_similarity(d16, d32, dim=0)), 0.99,
          "cosine between the two weight updates", higher_is_better=True)
    c.add("bf16 master weights stay float32", float(any(t != torch.float32 for t in dtypes.values())), 0.0,
          "1 if any learner parameter is not float32")
    _, dac, _ = one_update(device, model_dir, batch, activation_checkpointing=True)
    c.add("activation checkpointing, same update", float((dac - d32).abs().max()), 1e-6,
          "max absolute difference of the weight update with and without recomputation")


def check_objective(c: Checks, device, quick: bool) -> None:
    B, T = (8, 256) if quick else (64, 4096)
    g = torch.Generator().manual_seed(0)

    def inputs():
        base = -2 * torch.rand(B, T, generator=g)
        x = {k: (base + 0.1 * torch.randn(B, T, generator=g)).to(device) for k in
             ("behav_logp", "prox_logp", "ref_logp", "prev_logp")}
        advantages = torch.randn(B, T, generator=g).to(device)
        return LossInputs(logp=base.to(device).requires_grad_(True), advantages=advantages,
                          mask=torch.ones(B, T, dtype=torch.bool, device=device), **x)

    x = inputs()
    eager_cfg, compiled_cfg = ObjectiveConfig(kl_coef=0.05), ObjectiveConfig(kl_coef=0.05, compile=True)
    loss_e, _ = remix_loss(x, eager_cfg, 0.7)
    (grad_e,) = torch.autograd.grad(loss_e, x.logp)
    loss_c, _ = remix_loss(x, compiled_cfg, 0.7)
    (grad_c,) = torch.autograd.grad(loss_c, x.logp)
    c.add("compiled objective vs eager", float((grad_c - grad_e).abs().max() + (loss_c - loss_e).detach().abs()), 1e-6,
          "max absolute difference of loss and gradient")
    for name, cfg in (("eager", eager_cfg), ("compiled", compiled_cfg)):
        def step(cfg=cfg):
            loss, _ = remix_loss(x, cfg, 0.7)
            torch.autograd.grad(loss, x.logp)
        c.time(f"objective loss+backward {name} [{B}, {T}]", timed(step, device, 5 if quick else 20),
               "seconds, median (min-max)")


def check_chunked_head(c: Checks, device, quick: bool) -> None:
    """Peak memory of chunked log-probs against the naive [N, V] computation (Qwen2.5's vocabulary), forward and
    backward. Gradients are returned (torch.autograd.grad), not accumulated into .grad, so both sides count
    theirs alike from the same starting memory."""
    N, H, V = (64, 32, 1000) if quick else (2048, 896, 151_936)
    g = torch.Generator().manual_seed(0)
    states = torch.randn(N, H, generator=g).to(device).requires_grad_(True)
    targets = torch.randint(0, V, (N,), generator=g).to(device)
    head = torch.nn.Linear(H, V, bias=False).to(device)

    def chunked():
        logp, _ = head_logprobs(states, targets, head, 1.0, 1024 if not quick else 16, with_grad=True)
        torch.autograd.grad(logp.sum(), [states, head.weight])

    def naive():
        logp = torch.log_softmax(head(states).float(), -1).gather(-1, targets[:, None])
        torch.autograd.grad(logp.sum(), [states, head.weight])

    for name, fn in (("chunked", chunked), ("naive", naive)):
        times = timed(fn, device, 3 if quick else 10, warmup=1)
        c.time(f"head log-probs {name} N={N} V={V}", times, "seconds, median (min-max)")
        if device.type == "cuda":
            torch.cuda.empty_cache()
            start = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            peak = (torch.cuda.max_memory_allocated(device) - start) / 2**20
            c.rows.append({"check": f"head log-probs {name}: peak memory", "value": peak, "passed": True,
                           "what": "MiB above the inputs (one call, gradients included)", "timing": True,
                           "min": peak, "max": peak})


def check_loop(c: Checks, device, model_dir: Path, quick: bool) -> None:
    """ReMix-GRPO on tiny-arith (the tiny random model with --quick) for a few steps, rollout and learner on the
    device as the platform builds them (exact-match rewards, the compiled objective); the first update's loss
    against the CPU platform's on the same batch and weights."""
    from remix.data import ArithTask, ProblemSource
    from remix.models import resolve_model
    from remix.rewards import GradeReport, extract_answer
    from remix.runner import encode_problems
    from remix.trainer import Trainer

    class ExactMatch:  # the trainer hands over dataset rows, as to a GraderPool with --reward functions
        names = ("exact",)

        def grade(self, texts, rows, timeout_s=None):
            scores = [float(extract_answer(t) == str(row["answer"])) for t, row in zip(texts, rows)]
            return GradeReport(scores=scores, parts=[(s,) for s in scores], names=self.names)

    name = "tiny random" if quick else "tiny-arith"
    if not quick:
        model_dir = resolve_model("tiny-arith")  # REMIX_CACHE: carried to the GPU machine, built here
    cfg = replace(config(model_dir), steps=4, eval_every=0, batch_size=32, mini_batch_size=16, micro_batch_size=8,
                  rollout=RolloutConfig(max_new_tokens=16, group_size=4), objective=ObjectiveConfig(compile=True))
    rollout = TorchRollout(model_dir, seed=0, device=device, platform=device.type,
                           decode=decode_plan_for(cfg.rollout, device, prompt_tokens=cfg.data.max_prompt_tokens))
    learner = learner_on(device, model_dir, cfg)
    first: list = []
    update = learner.update

    def recording_update(batch, kl_lambda):  # the first mini-batch as the loop hands it over (on the host)
        metrics = update(batch, kl_lambda)
        if not first:
            first.append((batch, kl_lambda, metrics))
        return metrics

    learner.update = recording_update
    task = ArithTask((1,))
    train = encode_problems(rollout.tokenizer, task.train_problems(), 512, "training set")
    trainer = Trainer(cfg, rollout, learner, ExactMatch(), rollout.tokenizer, ProblemSource(train, 0), [])
    steps = [trainer.train_step() for _ in range(2 if quick else 4)]
    c.add(f"loop ({name}): steps finish with finite losses",
          float(not all(abs(s["loss/policy"]) < 1e6 for s in steps)), 0.0, "1 if a step's policy loss was not finite")
    batch, kl_lambda, on_device = first[0]
    on_cpu = learner_on(torch.device("cpu"), model_dir, cfg).update(batch, kl_lambda)  # the same initial weights
    for key in ("loss/policy", "grad_norm"):
        c.add(f"loop ({name}) first update on the device vs the CPU platform: {key}",
              abs(on_device[key] - on_cpu[key]) / max(abs(on_cpu[key]), 1e-8), 1e-3,
              "relative difference, the same batch and initial weights")
    c.add(f"loop ({name}): engine vs learner log-probs", max(s["sampler/logp_abs_diff"] for s in steps), 1e-3,
          "mean absolute difference per token of a step's fresh samples, largest step (sampler/logp_abs_diff)")
    if not quick:
        c.add(f"loop ({name}): rewards seen", float(sum(s["reward/mean"] for s in steps) > 0), 1.0,
              "1 if any sampled response was graded correct (tiny-arith solves some of level 1)", higher_is_better=True)
    for phase in ("generate", "learn"):
        c.time(f"loop ({name}) step time/{phase}", [s[f"time/{phase}"] for s in steps[1:]],
               "seconds, median (min-max)")


# Dense bf16 tensor-core peaks from NVIDIA's datasheets (no sparsity), by the name torch reports; most specific first:
# "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H200".
DENSE_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU named `device_name`, or None for one not in DENSE_BF16_PEAK."""
    return next((v for k, v in DENSE_BF16_PEAK.items() if k in device_name), None)


def scale_sizes(quick: bool) -> dict[str, int]:
    """Part (c)'s sizes: sequence, prompt, micro-batch rows, rollout batch, new tokens decoded."""
    if quick:
        return dict(seq=128, prompt=16, micro=2, rollout_batch=4, new_tokens=16)
    return dict(seq=4096, prompt=512, micro=2, rollout_batch=64, new_tokens=256)


def scale_config(model_dir: Path, quick: bool) -> TrainConfig:
    """The learner's configuration in part (c), as a run of this size would have it: bf16, activation
    checkpointing, one mini-batch of 4 micro-batches, responses up to the sequence length, ReMix's defaults
    (tests/unit/test_gpu_check_configs.py builds it, so a size the config refuses fails in CI, not on the GPU)."""
    z = scale_sizes(quick)
    batch = 4 * z["micro"]
    return replace(config(model_dir, "bfloat16", activation_checkpointing=True), batch_size=batch,
                   mini_batch_size=batch, micro_batch_size=z["micro"], logprob_chunk_tokens=1024,
                   data=DataConfig(heldout_size=8, max_prompt_tokens=z["prompt"]),
                   rollout=RolloutConfig(max_new_tokens=z["seq"] - z["prompt"], group_size=2))


def configurations(model_dir: Path, quick: bool) -> dict[str, TrainConfig]:
    """Every TrainConfig the checks build (before any model is loaded), by the part that uses it."""
    loop = replace(config(model_dir), steps=4, eval_every=0, batch_size=32, mini_batch_size=16, micro_batch_size=8,
                   rollout=RolloutConfig(max_new_tokens=16, group_size=4), objective=ObjectiveConfig(compile=True))
    return {"(b) float32": config(model_dir), "(b) bf16": config(model_dir, "bfloat16"),
            "(b) activation checkpointing": config(model_dir, activation_checkpointing=True),
            "(b) tiny-arith loop": loop, "(c) at scale": scale_config(model_dir, quick),
            "(d) LoRA at scale": lora_config(model_dir, quick)}


def lora_config(model_dir: Path, quick: bool) -> TrainConfig:
    """Part (d)'s LoRA learner: part (c)'s configuration with bench/lora.py's adapter (rank 16 on every projection)."""
    from bench.lora import LORA_ALPHA, RANK
    from remix.config import LoRAConfig

    return replace(scale_config(model_dir, quick), lora=LoRAConfig(rank=RANK, alpha=LORA_ALPHA))


def gib_allocated(device) -> float:
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def check_scale(c: Checks, device, tiny_dir: Path, quick: bool, tmp: Path) -> None:
    """Learner tokens/s and MFU, the chunked log-prob pass, weight sync, rollout tokens/s, resident and peak memory
    at 1.5B / 4096 tokens in bf16.

    FLOPs of one update (forward + backward), PaLM's estimate: 6 x parameters x tokens plus the attention
    term 12 x layers x hidden x sequence x tokens. Recomputation (activation checkpointing) is not counted.
    """
    shape, z = (QUICK_SHAPE if quick else QWEN15B), scale_sizes(quick)
    seq, prompt, micro, rollout_batch, new_tokens = z["seq"], z["prompt"], z["micro"], z["rollout_batch"], \
        z["new_tokens"]
    model_dir, params = random_model(tmp / "shape", shape, tiny_dir)
    cfg = scale_config(model_dir, quick)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    learner = learner_on(device, model_dir, cfg)
    cuda = device.type == "cuda"
    if cuda:
        c.time("learner resident after construction", [gib_allocated(device)],
               "GiB allocated: float32 policy, bf16 frozen reference and precedent")
    g = torch.Generator().manual_seed(0)
    B, T = cfg.batch_size, seq - prompt
    ids = torch.randint(3, shape["vocab_size"], (B, seq), generator=g)
    batch = TokenBatch(ids, torch.ones(B, seq, dtype=torch.long), torch.ones(B, T, dtype=torch.bool), prompt)
    base = -10 + torch.rand(B, T, generator=g)
    batch.fields.update(behav_logp=base, prox_logp=base, ref_logp=base, prev_logp=base,
                        advantages=torch.randn(B, 1, generator=g).expand(B, T).clone())
    seconds = timed(lambda: learner.update(batch, 1.0), device, 2 if quick else 3, warmup=1)
    tokens = B * seq
    flops = 6 * params * tokens + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seq * tokens
    c.time(f"learner update, {params / 1e9:.3g}B params, {B} x {seq} tokens, bf16", seconds, "seconds, median")
    c.time("learner tokens/s", [tokens / s for s in seconds], "tokens per second (forward + backward)")
    name = torch.cuda.get_device_name(device) if cuda else ""
    peak = peak_flops(name)
    if peak is not None:
        c.time("learner MFU", [flops / s / peak for s in seconds], f"model FLOPs / s over {peak:.3g} dense bf16 "
               f"({name})")
    if cuda:
        c.time("learner resident between updates", [gib_allocated(device)],
               "GiB allocated: the above plus AdamW state (gradients are freed after each step)")
    logp_s = timed(lambda: learner.logprobs(batch, "reference"), device, 2 if quick else 3, warmup=1)
    c.time(f"log-prob pass (reference), {B} x {seq} tokens, {micro} rows at a time", logp_s, "seconds, median")
    prompts = [ids[i % B, :prompt].tolist() for i in range(rollout_batch)]
    params_ = SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
    # as the platforms build them, for a run of this size (the static cache holds prompt + seq - prompt slots)
    layouts = {"dynamic KV cache": decode_plan_for(replace(cfg.rollout, kv_cache="dynamic"), device),
               f"static KV cache of {seq} slots" + (", compiled decode" if cuda else ""):
               decode_plan_for(replace(cfg.rollout, kv_cache="static"), device, prompt_tokens=prompt)}
    for i, (layout, plan) in enumerate(layouts.items()):  # side by side, one engine at a time on the device
        rollout = TorchRollout(model_dir, seed=0, dtype=torch.bfloat16, device=device, platform=device.type,
                               decode=plan)
        if i == 0:
            sync_s = timed(lambda r=rollout: r.load_weights(learner.policy_weights()), device, 2 if quick else 3,
                           warmup=1)
            c.time(f"weight sync learner -> rollout ({params / 1e9:.3g}B)", sync_s, "seconds, median")
        rollout.stop_ids = {-1}  # random weights: never stop early, so every row decodes new_tokens tokens
        sync(device)
        t = time.perf_counter()
        rollout.generate(prompts, params_)  # the first call compiles (static layout on CUDA)
        sync(device)
        c.time(f"rollout first call ({layout})", [time.perf_counter() - t], "seconds, compilation included")
        gen_s = timed(lambda r=rollout: r.generate(prompts, params_), device, 2 if quick else 3, warmup=0)
        c.time(f"rollout tokens/s (torch engine, {layout}, batch {rollout_batch}, {new_tokens} new tokens)",
               [rollout_batch * new_tokens / s for s in gen_s], "generated tokens per second")
        if i == len(layouts) - 1:  # the engine a run uses: how far its log-probs are from the learner's
            engine_gap(c, rollout, learner, prompts[:8], min(new_tokens, 64))
        del rollout
        if cuda:
            torch.cuda.empty_cache()
    if cuda:
        c.time("peak GPU memory (learner + rollout)", [torch.cuda.max_memory_allocated(device) / 2**30],
               "GiB allocated at the peak")


def check_lora(c: Checks, device, tiny_dir: Path, quick: bool, tmp: Path) -> None:
    """(d) LoRA against full finetuning in part (c)'s configuration (1.5B's shape, bf16): one ReMix-GRPO learner
    step each (bench/lora.py's: three log-prob passes, the precedent snapshot, m = 2 updates), one learner after the
    other on the device: step time, peak allocated memory, and the bytes held (weights, gradients, AdamW) counted.
    The issue's target: LoRA's held bytes at most 0.25x full finetuning's."""
    import gc

    from bench.lora import RANK, learner_bytes, remix_learner_step, step_batch

    shape, z = (QUICK_SHAPE if quick else QWEN15B), scale_sizes(quick)
    model_dir = tmp / "shape"
    if not (model_dir / "config.json").is_file():  # part (c) built it, unless --parts left it out
        random_model(model_dir, shape, tiny_dir)
    cfg, with_lora = scale_config(model_dir, quick), lora_config(model_dir, quick)
    batch = step_batch(shape["vocab_size"], cfg.batch_size, z["prompt"], z["seq"] - z["prompt"])
    cuda, held = device.type == "cuda", {}
    for rank in (0, RANK):
        name = "full finetuning" if rank == 0 else f"LoRA r={rank}"
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        learner = learner_on(device, model_dir, with_lora if rank else cfg)
        seconds = timed(lambda lr=learner: remix_learner_step(lr, batch), device, 1 if quick else 2, warmup=1)
        held[rank] = sum(learner_bytes(learner).values())
        c.time(f"ReMix-GRPO learner step, {name}, {cfg.batch_size} x {z['seq']} tokens", seconds, "seconds, median")
        c.time(f"learner bytes held, {name}", [held[rank] / 2**30], "GiB: weights, gradients, AdamW (counted)")
        if cuda:
            c.time(f"peak GPU memory, {name}", [torch.cuda.max_memory_allocated(device) / 2**30],
                   "GiB allocated at the peak (activations included)")
        del learner
    # the target is at 1.5B's shape; --quick's width-64 model is no bigger than rank 16 makes the adapter
    c.add("LoRA's held bytes over full finetuning's", held[RANK] / held[0], 1.0 if quick else 0.25,
          "weights + gradients + AdamW, LoRA / full (target at 1.5B: <= 0.25)")


def engine_gap(c: Checks, rollout: TorchRollout, learner: TorchLearner, prompts: list, new_tokens: int) -> None:
    """The engine's log-probs of its own samples against the learner's (what --objective.rollout-correction
    corrects for): a bf16 engine against the learner of the bf16 plan (bf16 compute, float32 weights), at scale."""
    gens = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=new_tokens))
    groups = [Group(prompt_ids=p, responses=[g.token_ids for g in gs], rewards=[0.0] * len(gs), version=1,
                    engine_logp=[torch.tensor(g.logprobs) for g in gs]) for p, gs in zip(prompts, gens)]
    batch = collate(groups, rollout.pad_id)
    got = learner.logprobs(batch)
    engine = torch.zeros_like(got)
    for j, t in enumerate(t for g in groups for t in g.engine_logp):
        engine[j, :len(t)] = t
    diff = (engine - got).abs()[batch.response_mask]
    log_rho = (got - engine) * batch.response_mask
    c.time("engine vs learner log-probs at scale: mean absolute difference per token", [float(diff.mean())],
           f"nats; bf16 torch engine against the bf16-plan learner, {len(prompts)} samples of {new_tokens} tokens")
    c.time("engine vs learner at scale: largest absolute difference", [float(diff.max())], "nats, one token")
    c.time("engine vs learner at scale: sequences outside seq-mis's [0.5, 2]",
           [float(((log_rho.sum(-1) < math.log(0.5)) | (log_rho.sum(-1) > math.log(2.0))).float().mean())],
           "share of samples --objective.rollout-correction seq-mis would drop")


def check_cuda_tests(c: Checks, device, tmp: Path) -> None:
    """(a) The tests marked cuda, one row each (where no GPU is visible they skip, and say so)."""
    report = tmp / "cuda-tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "tests/cuda", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    cases = ET.parse(report).getroot().iter("testcase")
    for case in cases:
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        name = f"cuda test {case.get('name')}"
        if skipped is not None:
            c.rows.append({"check": name, "value": 0.0, "passed": True, "timing": True, "min": 0.0, "max": 0.0,
                           "what": "skipped: " + skipped.get("message", "")})
        else:
            c.add(name, float(failure is not None), 0.0, "1 if it failed" + (
                f": {failure.get('message', '')[:200]}" if failure is not None else ""))
    if proc.returncode not in (0, 1):  # 1: some test failed (rows above); other codes: pytest itself failed
        raise RuntimeError(f"pytest exit {proc.returncode}: {proc.stdout.strip()[-500:]}")


def prepare() -> int:
    """Here, before a GPU call: the tiny-arith model into REMIX_CACHE (carry that folder) and the wheels."""
    from remix.models import resolve_model

    if "REMIX_CACHE" not in os.environ:
        print("error: --prepare: set REMIX_CACHE to a folder inside the checkout to carry (e.g. .cache/remix)",
              file=sys.stderr)
        return 2
    print(f"tiny-arith: {resolve_model('tiny-arith')}")
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_wheels.sh")]).returncode


def report_name(device: torch.device) -> str:
    """gpu-<gpu>-<date>, e.g. gpu-h200-2026-12-02 or gpu-h100-pcie-... (gpu-cpu-... for the smoke test)."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = next((k.lower() for k in DENSE_BF16_PEAK if k in gpu), gpu.lower().replace("nvidia", "").strip())
    return f"gpu-{'-'.join(slug.split())}-{dt.date.today().isoformat()}"


# Packages the project imports on the GPU machine, and what the carried wheels need of them (tyro 1.0 imports
# typing_extensions.TypeForm, typeguard 4.6 typing_extensions.Sentinel: typing_extensions >= 4.14).
PREFLIGHT = {"transformers": (), "safetensors": (), "tokenizers": (), "tyro": (), "typeguard": (),
             "docstring_parser": (), "typing_extensions": ("Sentinel", "TypeForm")}


def preflight(c: Checks) -> bool:
    """One row per package (its version, or why it cannot be used) and one for the project's own imports."""
    from importlib.metadata import PackageNotFoundError, version

    ok = True
    for module, needs in PREFLIGHT.items():
        try:
            loaded = importlib.import_module(module)
            missing = [n for n in needs if not hasattr(loaded, n)]
            try:
                found = version(module.replace("_", "-"))
            except PackageNotFoundError:
                found = getattr(loaded, "__version__", "?")
            what = f"{module} {found}" + (f": lacks {', '.join(missing)} (carry it: scripts/gpu_wheels.sh)"
                                          if missing else "")
        except Exception as e:  # noqa: BLE001 -- reported as the row; the checks do not start
            missing, what = [module], f"{module}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        ok &= not missing
        c.add(f"preflight: {module}", float(bool(missing)), 0.0, what)
    error = PROJECT_IMPORT_ERROR
    c.add("preflight: the project imports", float(error is not None), 0.0,
          "ok" if error is None else f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    return ok and error is None


def report_lines(c: Checks, device, command: str, walls: dict[str, float], state: str) -> list[str]:
    lines = [f"# The backend on `{device}`", "", f"Command: `{command}`  ", f"Date: {dt.date.today().isoformat()}  ",
             f"Machine: {machine_description()}  ", f"State: {state}  ",
             "Wall time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) +
             f" ({sum(walls.values()):.0f} s in all)", "",
             "| check | value | bound | result | what |", "|---|---|---|---|---|"]
    for r in c.rows:
        if r.get("not_run"):
            lines.append(f"| {r['check']} | | | not run | {r['what']} |")
        elif r.get("timing"):
            spread = f"{r['value']:.4g} ({r['min']:.4g}-{r['max']:.4g})"
            lines.append(f"| {r['check']} | {spread} | | measured | {r['what']} |")
        else:
            verdict = "pass" if r["passed"] else "**FAIL**"
            lines.append(f"| {r['check']} | {r['value']:.3g} | {r['bound']} {r['limit']:g} | {verdict} | {r['what']} |")
    return lines


class BudgetSpent(Exception):
    """--budget-s ran out while a part was running."""


PARTS = ("tests", "logprobs", "precision", "objective", "head", "loop", "scale", "lora")


def run_parts(c: Checks, parts: dict[str, object], budget_s: float | None, report) -> dict[str, float]:
    """Runs each part (name -> callable), reporting after each one. A part that raises is a FAIL row; with a
    budget, a part still running when it is spent is stopped (a row says so) and later parts are not started."""
    walls: dict[str, float] = {}
    started = time.monotonic()

    def spent(signum, frame):
        raise BudgetSpent(f"the budget of {budget_s:g} s was spent")

    if budget_s is not None:
        signal.signal(signal.SIGALRM, spent)
        signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        for part, check in parts.items():
            if budget_s is not None and time.monotonic() - started >= budget_s:
                c.rows.append({"check": part, "passed": True, "not_run": True,
                               "what": f"skipped: the budget of {budget_s:g} s was spent"})
                continue
            start = time.perf_counter()
            try:
                check()
            except BudgetSpent as e:
                c.rows.append({"check": f"{part}: stopped", "passed": True, "not_run": True, "what": str(e)})
            except Exception as e:  # noqa: BLE001 -- one part's failure is reported as a row; the others still run
                traceback.print_exc()
                first_line = str(e).splitlines()[0][:300] if str(e) else ""
                c.add(f"{part}: raised", 1.0, 0.0, f"{type(e).__name__}: {first_line}")
            walls[part] = time.perf_counter() - start
            print(f"{part}: {walls[part]:.1f}s", file=sys.stderr, flush=True)
            report(walls, f"after {part}")
    finally:
        if budget_s is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return walls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="torch device to check (cuda, cuda:1, cpu)")
    ap.add_argument("--quick", action="store_true", help="small sizes: the smoke test on a CPU")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks", help="where the .md/.json go")
    ap.add_argument("--prepare", action="store_true", help="build what the GPU call carries, here, and stop")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop a part running at this many seconds and start no other (a row says which)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = ap.parse_args()
    if args.prepare:
        return prepare()
    chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        print(f"error: --parts: unknown part(s) {', '.join(unknown) or '(none given)'}; choose from "
              f"{', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.budget_s is not None and args.budget_s <= 0:
        print("error: --budget-s: must be > 0", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device here", file=sys.stderr)
        return 2
    command = "python -m scripts.gpu_check " + " ".join(sys.argv[1:])
    c = Checks()

    def report(walls: dict[str, float], state: str, echo: bool = False) -> None:
        write_report(args.out, report_name(device), report_lines(c, device, command, walls, state),
                     {"command": command, "device": str(device), "machine": machine_description(), "state": state,
                      "wall_s": walls, "rows": c.rows}, echo=echo)

    if not preflight(c):
        report({}, "stopped at the preflight", echo=True)
        return 1
    torch.manual_seed(0)
    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_random_model(Path(tmp) / "tiny", seed=0)
        parts = {
            "(a) cuda tests": ("tests", lambda: check_cuda_tests(c, device, Path(tmp))),
            "(b) log-probs": ("logprobs", lambda: check_logprobs(c, device, model_dir)),
            "(b) precision": ("precision", lambda: check_precision(c, device, model_dir)),
            "(b) objective": ("objective", lambda: check_objective(c, device, args.quick)),
            "(b) chunked head": ("head", lambda: check_chunked_head(c, device, args.quick)),
            "(b) tiny-arith loop": ("loop", lambda: check_loop(c, device, model_dir, args.quick)),
            "(c) at scale": ("scale", lambda: check_scale(c, device, model_dir, args.quick, Path(tmp))),
            "(d) LoRA at scale": ("lora", lambda: check_lora(c, device, model_dir, args.quick, Path(tmp))),
        }
        walls = run_parts(c, {name: fn for name, (key, fn) in parts.items() if key in chosen}, args.budget_s, report)
    not_run = sum(bool(r.get("not_run")) for r in c.rows)
    report(walls, "finished" + (f"; {not_run} part(s) not run (--budget-s)" if not_run else ""), echo=True)
    return 0 if all(r["passed"] for r in c.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
