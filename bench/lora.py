"""LoRA against full finetuning: what the learner holds and how long its step takes, and what LoRA gives up in
learning on the default task.

    python -m bench.lora memory        # Qwen2.5-0.5B's shape, random weights, float32 on the CPU; counted at 1.5B/7B
    python -m bench.lora efficiency    # the default job (tiny-arith), full vs LoRA, a few seeds

`memory`: one ReMix-GRPO learner step (log-probs under the policy, the reference and the precedent, the precedent
snapshot, m = 2 updates over one mini-batch) with and without LoRA, each configuration in its own process (a clean
peak RSS), alternating, repeated. Reported: the bytes the learner holds, counted tensor by tensor (weights of the
policy and its anchors, gradients as they exist at an update, AdamW state), the process's peak RSS over its
baseline, and the step's wall time. The same counts at 1.5B and 7B come from the shapes on the meta device
(`predicted_bytes`, which equals the counted bytes at 0.5B: checked in the report and in tests/unit/test_lora.py).
Writes docs/benchmarks/lora_memory.md/.json. scripts/gpu_check.py's `lora` part measures the same step on a GPU at
1.5B in bf16 (peak allocated memory).

`efficiency`: LoRA's learning rate chosen on the validation split (seed 0) from --lrs, then --seeds seeds of full
finetuning (the default job's lr) and of LoRA at that lr: held-out accuracy against rollouts. Writes
docs/benchmarks/lora_efficiency.md/.json; runs persist in runs/bench-lora/ (a rerun reuses finished ones).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from bench.reporting import machine_description, peak_rss_bytes, write_report
from bench.shapes import QWEN05B, QWEN7B, QWEN15B, random_model

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
RANK = 16
LORA_ALPHA = 32.0
SHAPES = {"Qwen2.5-0.5B": QWEN05B, "Qwen2.5-1.5B": QWEN15B, "Qwen2.5-7B": QWEN7B}


# ------------------------------------------------------------------------------------------- bytes held
def _storage_bytes(tensors, seen: set[int]) -> int:
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def learner_bytes(learner) -> dict[str, int]:
    """What a TorchLearner holds for its policy, anchors and optimizer, counted storage by storage: `weights`
    (policy, reference, precedent, adapter snapshots, critic), `gradients` (one per trainable parameter: they
    exist from an update's first backward pass to its optimizer step), `optimizer` (AdamW's moments and steps)."""
    seen: set[int] = set()
    modules = [m for m in (learner.policy, learner.reference, learner.precedent, learner.critic) if m is not None]
    snapshots = [t for snap in (learner.precedent_adapter, learner.reference_adapter) if snap for t in snap.values()]
    weights = _storage_bytes([p for m in modules for p in m.parameters()] + snapshots, seen)
    trainable = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizers = [learner.optimizer] + ([learner.critic_optimizer] if learner.critic is not None else [])
    state = [t for o in optimizers for s in o.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {"weights": weights, "gradients": sum(p.numel() * p.element_size() for p in trainable),
            "optimizer": _storage_bytes(state, set())}


def predicted_bytes(shape: dict, lora_rank: int, dtype: str = "float32", reincarnated: bool = False,
                    targets: tuple[str, ...] | None = None) -> dict[str, int]:
    """`learner_bytes` of a ReMix-GRPO learner (KL-Convex on: the precedent kept) of a Qwen2 of `shape`, from the
    parameter counts of the model built on the meta device: no memory, any size. Unsharded plans: a bf16 plan
    stores frozen block linears in bf16 and everything trainable in float32 (platforms/backend/parallel.py)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from remix.config import LoRAConfig

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    params = sum(p.numel() for p in model.parameters())
    block_linear = sum(p.numel() for layer in model.model.layers for m in layer.modules()
                       if isinstance(m, nn.Linear) for p in m.parameters())
    n_tensors = len(list(model.parameters()))
    frozen_copy = 4 * params if dtype == "float32" else 2 * block_linear + 4 * (params - block_linear)
    if lora_rank == 0:  # policy float32, reference and precedent full copies, gradients, AdamW (+ a step each)
        return {"weights": 4 * params + 2 * frozen_copy, "gradients": 4 * params,
                "optimizer": 8 * params + 4 * n_tensors}
    from platforms.backend.lora import add_adapter

    options = LoRAConfig(rank=lora_rank, alpha=LORA_ALPHA, **({"target_modules": targets} if targets else {}))
    with torch.device("meta"):
        adapter = [p for p in add_adapter(model, options, seed=0).parameters() if p.requires_grad]
    a = sum(p.numel() for p in adapter)
    snapshots = 2 if reincarnated else 1  # the precedent's adapter; the reference's from reincarnation on
    return {"weights": frozen_copy + 4 * a * (1 + snapshots), "gradients": 4 * a,
            "optimizer": 8 * a + 4 * len(adapter)}


# ------------------------------------------------------------------------------------------- one learner step
def step_batch(vocab: int, rows: int, prompt: int, response: int):
    from remix.interfaces import TokenBatch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (rows, prompt + response), generator=g)
    batch = TokenBatch(ids, torch.ones_like(ids), torch.ones(rows, response, dtype=torch.bool), prompt)
    batch.fields["advantages"] = torch.randn(rows, 1, generator=g).expand(rows, response).clone()
    return batch


def remix_learner_step(learner, batch, passes: int = 2) -> None:
    """What one ReMix-GRPO step asks of the learner (trainer.py, steps 3 and 4): log-probs under pi_k, pi_ref and
    pi_{k-1}, the precedent snapshot, then `passes` updates over the batch as one mini-batch, lambda < 1."""
    prox = learner.logprobs(batch, "current")
    batch.fields.update(prox_logp=prox, behav_logp=prox, ref_logp=learner.logprobs(batch, "reference"),
                        prev_logp=learner.logprobs(batch, "precedent"))
    learner.snapshot_precedent()
    for _ in range(passes):
        learner.update(batch, kl_lambda=0.5)


def learner_config(model_dir: Path, lora_rank: int, dtype: str, rows: int, micro: int, response: int):
    from remix.config import LoRAConfig, ModelConfig, ReMixConfig, RolloutConfig, TrainConfig
    from remix.objective import ObjectiveConfig

    return TrainConfig(model=ModelConfig(name=str(model_dir), dtype=dtype), batch_size=rows, mini_batch_size=rows,
                       micro_batch_size=micro, rollout=RolloutConfig(max_new_tokens=response, group_size=2),
                       remix=ReMixConfig(offpolicy_fraction=0.5),  # the learner's step does not depend on it
                       lora=LoRAConfig(rank=lora_rank, alpha=LORA_ALPHA), objective=ObjectiveConfig(compile=False))


def _child(args) -> int:
    """One configuration in this process: learner built, `--steps` learner steps; prints a JSON line."""
    from platforms.backend import ParallelPlan, TorchLearner

    cfg = learner_config(args.model, args.lora_rank, "float32", args.rows, args.micro, args.response)
    batch = step_batch(json.loads((args.model / "config.json").read_text())["vocab_size"], args.rows, args.prompt,
                       args.response)
    baseline = peak_rss_bytes()
    learner = TorchLearner(args.model, cfg, ParallelPlan(device=torch.device("cpu")))
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        remix_learner_step(learner, batch)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"lora_rank": args.lora_rank, "seconds": seconds, "peak_rss_over_baseline":
                      peak_rss_bytes() - baseline, "counted": learner_bytes(learner)}), flush=True)
    return 0


def memory(args) -> int:
    from remix.models.tokenizer import train_arith_tokenizer

    shape_name = "Qwen2.5-0.5B"
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        train_arith_tokenizer().save_pretrained(tok_dir)
        model_dir, params = random_model(Path(tmp) / "model", SHAPES[shape_name], tok_dir)
        order = [r for _ in range(args.repeats) for r in (0, RANK)]  # alternating: full, LoRA, full, LoRA
        for rank in order:
            cmd = [sys.executable, "-m", "bench.lora", "_child", "--model", str(model_dir), "--lora-rank", str(rank),
                   "--steps", str(args.steps), "--rows", str(args.rows), "--micro", str(args.micro),
                   "--prompt", str(args.prompt), "--response", str(args.response)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(f"lora rank {rank}: {runs[-1]['seconds']} s per step", flush=True)
    predicted = {name: {r: predicted_bytes(shape, r) for r in (0, RANK)} for name, shape in SHAPES.items()}
    lines = report_lines(args, runs, predicted, params)
    data = {"command": "python -m bench.lora " + " ".join(sys.argv[1:]), "machine": machine_description(),
            "shape": shape_name, "params": params, "runs": runs, "predicted": predicted}
    write_report(args.out, "lora_memory", lines, data)
    return 0


def _spread(values: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    v = [x / scale for x in values]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"


def report_lines(args, runs: list[dict], predicted: dict, params: int) -> list[str]:
    import transformers

    by_rank = {r: [x for x in runs if x["lora_rank"] == r] for r in (0, RANK)}
    total = {r: sum(by_rank[r][0]["counted"].values()) for r in by_rank}
    lines = ["# LoRA against full finetuning: the learner's memory and step time", "",
             f"Command: `python -m bench.lora {' '.join(sys.argv[1:])}`  ", f"Date: {dt.date.today().isoformat()}  ",
             f"Machine: {machine_description()}; transformers {transformers.__version__}, peft "
             f"{__import__('peft').__version__}  ",
             f"Model: a random Qwen2 of Qwen2.5-0.5B's shape ({params / 1e6:.0f}M parameters), float32 on the CPU. "
             f"LoRA: rank {RANK}, alpha {LORA_ALPHA:g}, every projection of the blocks. One ReMix-GRPO learner step: "
             f"log-probs under the policy, the reference and the precedent, the precedent snapshot, m = 2 updates "
             f"of {args.rows} rows x ({args.prompt} + {args.response}) tokens, {args.micro} rows per micro-batch. "
             f"Each configuration in its own process, alternating, {args.repeats} processes each, {args.steps} steps "
             "per process (the first includes AdamW's state allocation).", "",
             "| | weights | gradients (at an update) | AdamW state | total held | x full | peak RSS over baseline "
             "| step time, median (min-max) |", "|---|---|---|---|---|---|---|---|"]
    for r, name in ((0, "full finetuning"), (RANK, f"LoRA r={RANK}")):
        c = by_rank[r][0]["counted"]
        later = [s for x in by_rank[r] for s in x["seconds"][1:]]
        lines.append(f"| {name} | {c['weights'] / GIB:.2f} GiB | {c['gradients'] / GIB:.3f} GiB | "
                     f"{c['optimizer'] / GIB:.3f} GiB | {total[r] / GIB:.2f} GiB | {total[r] / total[0]:.3f} | "
                     f"{_spread([x['peak_rss_over_baseline'] for x in by_rank[r]], GIB, '{:.2f}')} GiB | "
                     f"{_spread(later)} s |")
    same = all(by_rank[r][0]["counted"] == predicted["Qwen2.5-0.5B"][r] for r in by_rank)
    lines += ["", "Held: counted tensor by tensor in the learner after its steps (unique storages). Peak RSS: the "
              "process's high-water mark over its mark before the learner was built (activations, temporaries and "
              "the allocator's slack included). Step time: steps 2 on, all processes.", "",
              f"The same counts from the shapes alone (`predicted_bytes`, meta device; at 0.5B "
              f"{'equal to' if same else 'DIFFERENT from'} the counts above), before reincarnation (from it on, LoRA "
              "also keeps the reference's adapter snapshot):", "",
              "| shape | dtype | full finetuning | LoRA r=16 | x full |", "|---|---|---|---|---|"]
    for name, shape in SHAPES.items():
        for dtype in ("float32", "bfloat16"):
            full, lora = (sum(predicted_bytes(shape, r, dtype).values()) for r in (0, RANK))
            lines.append(f"| {name} | {dtype} | {full / GIB:.1f} GiB | {lora / GIB:.1f} GiB | {lora / full:.3f} |")
    lines += ["", "bf16: frozen weights of the block linears in bf16 (the reference and precedent copies of full "
              "finetuning, LoRA's base), trainable weights, gradients and AdamW float32 (unsharded plans; FSDP2 "
              "shards all of it over the processes)."]
    return lines


# ------------------------------------------------------------------------------------------- efficiency
def efficiency(args) -> int:
    from platforms import get_platform
    from remix.config import DataConfig, LoRAConfig, OptimConfig, TrainConfig
    from remix.runner import run
    from remix.tracking import read_metrics

    runs_dir = ROOT / "runs" / "bench-lora"
    base = TrainConfig(eval_every=0, eval_at_rollouts=tuple(args.grid), data=DataConfig(validation_size=256))

    def one(name: str, cfg: TrainConfig) -> dict:
        run_dir = runs_dir / name
        if not (run_dir / "summary.json").is_file():
            run(replace(cfg, run_dir=run_dir), get_platform("cpu"))
        records = read_metrics(run_dir / "metrics.jsonl")
        summary = json.loads((run_dir / "summary.json").read_text())
        curve = lambda split: [(r["rollouts"], r[f"{split}/accuracy"]) for r in records  # noqa: E731
                               if f"{split}/accuracy" in r]
        return {"name": name, "heldout": curve("heldout"), "validation": curve("validation"),
                "wall_s": summary["wall_seconds"]}

    def lora(lr: float, seed: int) -> TrainConfig:
        return replace(base, seed=seed, optim=OptimConfig(lr=lr), lora=LoRAConfig(rank=RANK, alpha=LORA_ALPHA))

    sweep = {lr: one(f"lora-lr{lr:g}-seed0", lora(lr, 0)) for lr in args.lrs}
    score = {lr: statistics.mean(a for _, a in r["validation"]) for lr, r in sweep.items()}
    best = max(score, key=score.get)
    full = [one(f"full-seed{s}", replace(base, seed=s)) for s in range(args.seeds)]
    low = [sweep[best]] + [one(f"lora-lr{best:g}-seed{s}", lora(best, s)) for s in range(1, args.seeds)]
    lines = efficiency_lines(args, full, low, best, score)
    write_report(args.out, "lora_efficiency", lines, {"command": "python -m bench.lora " + " ".join(sys.argv[1:]),
                                                      "machine": machine_description(), "full": full, "lora": low,
                                                      "lora_lr": best, "validation_score": score})
    return 0


def efficiency_lines(args, full: list[dict], lora: list[dict], best: float, score: dict) -> list[str]:
    from remix.config import OptimConfig

    def at(runs, i):
        return [r["heldout"][i][1] for r in runs if i < len(r["heldout"])]

    rollouts = [x for x, _ in full[0]["heldout"]]
    lines = ["# LoRA against full finetuning on the default task: held-out accuracy against rollouts", "",
             f"Command: `python -m bench.lora {' '.join(sys.argv[1:])}`  ", f"Date: {dt.date.today().isoformat()}  ",
             f"Machine: {machine_description()}  ",
             f"Job: the default ReMix-GRPO run on tiny-arith (300 steps), evaluated at the first step reaching each "
             f"rollout count of the grid (256 held-out problems, greedy). Full finetuning at the default lr "
             f"{OptimConfig().lr:g} (`make run`'s job, not tuned here); LoRA rank {RANK}, alpha {LORA_ALPHA:g}, "
             f"lr {best:g}, chosen on the 256-problem validation split at seed 0 (mean validation accuracy over "
             f"the grid: "
             + ", ".join(f"{lr:g}: {s:.3f}" for lr, s in score.items())
             + ("; the choice is at the sweep's edge" if best in (min(score), max(score)) else "; inside the sweep")
             + f"). {args.seeds} seeds each.", "",
             "| rollouts | full finetuning, mean (min-max) | LoRA, mean (min-max) |", "|---|---|---|"]
    for i, x in enumerate(rollouts):
        cells = []
        for runs in (full, lora):
            v = at(runs, i)
            cells.append(f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" if v else "-")
        lines.append(f"| {x:,} | {cells[0]} | {cells[1]} |")
    walls = [statistics.median(r["wall_s"] for r in runs) for runs in (full, lora)]
    lines += ["", f"Wall time per run, median: full {walls[0]:.0f} s, LoRA {walls[1]:.0f} s. tiny-arith has 0.57M "
              "parameters; its adapter is not small beside it, and its speed says nothing about LoRA at 1.5B. "
              "The held-out error of one evaluation is about 0.03 (binomial, 256 problems)."]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--repeats", type=int, default=2)
    m.add_argument("--steps", type=int, default=3)
    e = sub.add_parser("efficiency")
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4, 5e-4, 1e-3])
    e.add_argument("--grid", type=int, nargs="+", default=[2000, 4000, 8000, 12000, 18000])
    c = sub.add_parser("_child")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--lora-rank", type=int, required=True)
    c.add_argument("--steps", type=int, default=3)
    for p in (m, c):
        p.add_argument("--rows", type=int, default=4)
        p.add_argument("--micro", type=int, default=2)
        p.add_argument("--prompt", type=int, default=64)
        p.add_argument("--response", type=int, default=64)
    for p in (m, e):
        p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args()
    return {"memory": memory, "efficiency": efficiency, "_child": _child}[args.what](args)


if __name__ == "__main__":
    raise SystemExit(main())
