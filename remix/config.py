"""One nested dataclass config, parsed by tyro (`python scripts/run.py --help` lists every field).

Each field's own limits are declared in its type (`Annotated[int, Limit(ge=1)]`); rules across fields are in the
classes' `check()`. Both raise `ConfigError` (a ValueError) naming the flag, at construction, or after parsing
on the command line, so that a bad value is one line with exit status 2 (remix/validation.py). The ReMix knobs
default to the paper's values (ALGORITHM.md section 7); sizes default to what runs in minutes on a 2-core CPU
with `tiny-arith`. What the loop makes of the knobs (p and m after reincarnation, lambda(t), whether the
precedent policy is kept) is algorithm code: remix/schedule.py.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import tyro

from remix.distributed import launched_rank, launched_world_size
from remix.objective import ObjectiveConfig
from remix.prompts import PromptConfig
from remix.rewards.functions import BUILTIN as BUILTIN_REWARD
from remix.rewards.functions import RewardSet, RewardSpecError
from remix.validation import Checked, ConfigError, Limit, require

PLATFORMS = ("cpu", "cuda", "xla")
Algo = Literal["grpo", "ppo"]
Variant = Literal["remix", "onpolicy"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("REMIX_CACHE", Path.home() / ".cache" / "remix"))


@dataclass
class ModelConfig(Checked):
    FLAG_PREFIX = "model."

    name: Annotated[str, tyro.conf.arg(aliases=("--model",))] = "tiny-arith"
    """Model: a built-in name (tiny-arith, smollm2-135m), a local HF folder, or a hub id (needs network)."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where built-in models are built/converted once and cached (env REMIX_CACHE overrides the default)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: the rollout samples with bf16 weights; the learner computes forward and backward passes in bf16.
    Its master weights, AdamW state and gradient reductions stay float32 (FSDP2 mixed precision or autocast).
    Log-probs, entropies and losses are float32 always."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass (less memory, more compute)."""


@dataclass
class DataConfig(PromptConfig):
    FLAG_PREFIX = "data."

    task: Annotated[str, tyro.conf.arg(aliases=("--task",))] = "arith"
    """Training task: 'arith' (built-in generated arithmetic), 'math' or 'aime' (packaged sets), or 'file'."""
    path: Path | None = None
    """A jsonl/json/parquet file, a folder of parquet shards, or a datasets save_to_disk folder (its train split).
    It implies --task file."""
    problem_key: str = "problem"
    """The column of --data.path holding the problem (the prompt's {problem}); other columns reach the rewards."""
    answer_key: str = "answer"
    """The column of --data.path holding the reference answer (read only when the math reward is used)."""
    heldout_size: Annotated[int, Limit(ge=1)] = 256
    """Problems in the held-out evaluation split."""
    validation_size: Annotated[int, Limit(ge=0)] = 0
    """Problems in a validation split, disjoint from held-out and from training, evaluated beside held-out.
    It is for choosing hyperparameters such as the lr without looking at the reported held-out split. 0: none."""
    max_prompt_tokens: Annotated[int, Limit(ge=8)] = 512
    """Prompts longer than this (in tokens, chat template included) are dropped and counted."""
    arith_levels: tuple[int, ...] = (1, 2, 3)
    """Difficulty levels of the arith task (1: one-digit sums ... 4: three-term expressions)."""

    def normalize(self) -> None:
        if self.path is not None and self.task == "arith":
            self.task = "file"

    def check(self) -> None:
        super().check()
        builtin = f"names a column of --data.path; the {self.task} task's columns are problem and answer"
        require(self.task == "file" or self.problem_key == "problem", "data.problem_key", builtin)
        require(self.task == "file" or self.answer_key == "answer", "data.answer_key", builtin)
        require(self.task in ("arith", "math", "aime", "file"), "data.task",
                f"must be arith, math, aime or file, got {self.task!r}")
        require(self.task != "file" or self.path is not None, "data.path", "--task file needs --data.path")
        require(all(1 <= lv <= 4 for lv in self.arith_levels) and len(self.arith_levels) > 0, "data.arith_levels",
                f"levels must be in 1..4, got {self.arith_levels}")


@dataclass
class RolloutConfig(Checked):
    FLAG_PREFIX = "rollout."

    temperature: Annotated[float, Limit(gt=0)] = 1.0
    """Sampling temperature; the learner divides logits by it so log-probs match the sampler."""
    top_p: float = 1.0
    """Nucleus sampling; must stay 1.0 in training (the learner cannot represent the truncation)."""
    max_new_tokens: Annotated[int, Limit(ge=1)] = 40
    """Maximum response length in tokens."""
    group_size: Annotated[int, Limit(ge=1)] = 8
    """G: responses per prompt (GRPO group; PPO also samples G per prompt)."""
    engine: Literal["auto", "torch", "sglang"] = "auto"
    """Rollout engine of --platform cuda. sglang: SGLang's offline engine on the learner's GPU (the cuda extra).
    It always samples with bf16 weights: its attention kernels take no float32.
    torch: the backend's own decode loop. auto: sglang where it can be imported, else torch (with a notice).
    The cpu and xla platforms always use torch."""
    kv_cache: Literal["auto", "static", "dynamic"] = "auto"
    """KV cache of the torch engine. static: preallocated, fixed shapes per length bucket (compiled on cuda).
    dynamic: grows per token. auto: static on cuda and xla, dynamic on cpu."""
    weight_sync_bucket_mb: Annotated[int, Limit(ge=1)] = 512
    """sglang: weights go from the learner to the engine in flattened buckets of about this many MiB."""
    sglang_mem_fraction: Annotated[float, Limit(gt=0, lt=1)] = 0.5
    """sglang: share of the GPU's memory the engine reserves for weights and KV cache (mem_fraction_static).
    It is released while the learner works and taken back before generation."""
    max_sampler_gap: Annotated[float, Limit(ge=0)] = 1.0
    """Stop the run (exit status 4) when the engine's log-probs of its own samples are further from the learner's,
    in nats per fresh token on average, than this: the engine does not hold the learner's weights.
    A correct engine is within a few hundredths (bf16 SGLang) or 1e-6 (the torch engine in float32); 0: never stop."""
    sglang_deterministic: bool = False
    """sglang: deterministic inference (seeded per request, batch-invariant kernels; slower).
    Without it SGLang's sampling is not reproducible: a resumed run samples other responses than the first run would."""

    def check(self) -> None:
        require(self.top_p == 1.0, "rollout.top_p",
                "must be 1.0 in training: the learner cannot represent the truncation")


@dataclass
class OptimConfig(Checked):
    FLAG_PREFIX = "optim."

    lr: Annotated[float, Limit(gt=0)] = 5e-5
    """AdamW learning rate of the policy (the paper uses 1e-6 on 1.5B/7B models)."""
    critic_lr: Annotated[float, Limit(gt=0)] = 1e-4
    """AdamW learning rate of the PPO critic."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Gradient-norm clip; <= 0 disables it."""



@dataclass
class LoRAConfig(Checked):
    FLAG_PREFIX = "lora."

    rank: Annotated[int, Limit(ge=0)] = 0
    """LoRA rank r of the policy's adapter (peft, the lora extra). Only the adapter is trained; the reference is the
    base model (the adapter switched off) and the precedent an adapter snapshot. 0: full finetuning."""
    alpha: Annotated[float, Limit(gt=0)] = 32.0
    """LoRA alpha: the adapter's product B @ A is scaled by alpha / rank."""
    dropout: Annotated[float, Limit(ge=0, lt=1)] = 0.0
    """Dropout on the adapter's input, in the gradient passes of an update only (log-prob passes never drop)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Names of the linear layers that get an adapter (default: every projection of Qwen2/Llama-style blocks)."""
    sync: Literal["merged", "adapter"] = "merged"
    """How the policy reaches the rollout engine. merged: the merged weights (every engine).
    adapter: the adapter alone, through SGLang's LoRA API (--rollout.engine sglang)."""

    def check(self) -> None:
        require(self.rank == 0 or importlib.util.find_spec("peft") is not None, "lora.rank",
                "LoRA needs peft: pip install 'remix-rft[lora]'")
        require(self.sync == "merged" or self.rank > 0, "lora.sync", "adapter needs --lora.rank > 0")
        require(len(self.target_modules) > 0, "lora.target_modules", "name at least one module")


@dataclass
class ReMixConfig(Checked):
    FLAG_PREFIX = "remix."

    offpolicy_fraction: Annotated[float, Limit(ge=0, lt=1)] = 0.4
    """p: share of each batch taken from the buffer (whole groups) before reincarnation."""
    history_window: Annotated[int, Limit(ge=1)] = 2
    """N: the buffer keeps the samples of the last N policies."""
    utd_ratio: Annotated[int, Limit(ge=1)] = 2
    """m: passes of mini-batch updates over each batch (update-to-data ratio) before reincarnation."""
    reincarnation_step: Annotated[int | None, Limit(ge=1)] = 50
    """T: after step T the reference becomes the current policy, p -> 0, m -> 1, the buffer is cleared.
    None: never reincarnate (an ablation)."""
    kl_convex: bool = True
    """Mix KL to the reference and to the precedent policy with lam(t); False: plain KL to the reference."""
    lambda_start: int = 50
    """lam(t) stays 1 through this step."""
    lambda_every: Annotated[int, Limit(ge=1)] = 10
    """lam(t) drops every this many steps after lambda_start."""
    lambda_decay: Annotated[float, Limit(ge=0)] = 0.1
    """lam(t) drops by this much each time."""
    lambda_floor: Annotated[float, Limit(ge=0, le=1)] = 0.5
    """lam(t) never goes below this."""
    reset_optimizer_at_reincarnation: bool = False
    """Reset AdamW state at reincarnation (default: the state continues, as ALGORITHM.md decides)."""
    restart_lambda_clock: bool = False
    """Restart lam(t)'s step count at reincarnation (default: the clock continues, as ALGORITHM.md decides)."""



@dataclass
class PPOConfig(Checked):
    FLAG_PREFIX = "ppo."

    gamma: Annotated[float, Limit(gt=0, le=1)] = 1.0
    """GAE discount."""
    lam: Annotated[float, Limit(ge=0, le=1)] = 1.0
    """GAE lambda."""
    value_clip: Annotated[float, Limit(gt=0)] = 0.2
    """Clip range of the value loss around the values at the start of the step."""



@dataclass
class TrainConfig(Checked):
    """ReMix off-policy RL finetuning (and its on-policy baselines)."""

    platform: Annotated[str, tyro.conf.arg(metavar="{cpu,cuda,xla}")] = "cpu"
    """Backend: cpu (reference), cuda (SGLang + FSDP2) or xla (TPU via torch-xla)."""
    algo: Algo = "grpo"
    """grpo (group-normalised advantages, no critic) or ppo (critic + GAE)."""
    variant: Variant = "remix"
    """remix, or onpolicy: the same loop with p = 0, m = 1, no reincarnation and plain KL to the reference."""
    steps: Annotated[int, Limit(ge=1)] = 300
    """Training steps (one step = generate, grade, update)."""
    batch_size: Annotated[int, Limit(ge=1)] = 64
    """B: responses per step (fresh + historical), over all processes.
    Each of N torchrun processes generates and trains on B/N of them (whole groups)."""
    mini_batch_size: int = 32
    """Responses per optimizer step, over all processes (each of N processes holds 1/N of them)."""
    micro_batch_size: int = 16
    """Responses per forward/backward pass in each process (gradient accumulation inside a mini-batch).
    A memory knob: it never changes the update."""
    grpo_scale_by_std: bool = True
    """GRPO advantages are (R - mean) / (std + eps); False skips the std division (Dr. GRPO)."""
    seed: int = 0
    """Seed of data order, sampling and initialisation."""
    run_dir: Annotated[Path | None, tyro.conf.arg(help_behavior_hint="(default: runs/<algo>-<variant>-<time>)")] = None
    """Metrics, config, checkpoints and plots go here."""
    eval_every: Annotated[int, Limit(ge=0)] = 25
    """Evaluate held-out accuracy (greedy) every this many steps, and before and after training.
    0: only before and after."""
    eval_at_rollouts: Annotated[tuple[int, ...], Limit(ge=0)] = ()
    """Also evaluate at the first step whose rollouts reach each of these counts.
    Runs with different rollouts per step (ReMix and on-policy) then share one grid; each point is evaluated once."""
    logprob_chunk_tokens: Annotated[int, Limit(ge=1)] = 1024
    """Tokens per chunk of the learner's log-prob computation (bounds the logits tensor)."""
    grader_workers: Annotated[int, Limit(ge=1)] = 2
    """Worker processes of the math grader."""
    grader_timeout_s: Annotated[float, Limit(gt=0)] = 5.0
    """Hard wall-clock deadline per graded response; a timed-out response scores 0."""
    grading: Literal["boxed", "lenient"] = "boxed"
    """Rule of the math reward.
    boxed: the paper's (DeepScaleR's) grader; a response without a \\boxed{} after </think> scores 0.
    lenient: without a box, math-verify's own extraction (e.g. the last number) is graded instead."""
    reward: Annotated[tuple[str, ...], tyro.conf.UseAppendAction, tyro.conf.arg(
        metavar="SPEC", help_behavior_hint="(default: math)")] = ()
    """A reward function fn(response, row) -> float: math (the built-in), PATH.py:FUNCTION or module:FUNCTION.
    Once per function; the reward is their sum weighted by --reward-weights; each is logged as reward/NAME/mean."""
    reward_weights: tuple[float, ...] = ()
    """One weight per --reward, in order (default: 1 each)."""
    checkpoint_every: Annotated[int, Limit(ge=0)] = 50
    """Checkpoint every this many steps (and always at the end); 0: only at the end."""
    keep_checkpoints: Annotated[int, Limit(ge=1)] = 1
    """Complete checkpoints kept; an older one is deleted only after a newer one is fully written."""
    checkpoint_steps: Annotated[tuple[int, ...], Limit(ge=1)] = ()
    """Also checkpoint at these steps, and keep those checkpoints besides the newest --keep-checkpoints,
    to --fork-from them later."""
    fork_from: Path | None = None
    """Start from another run's checkpoint (RUN/checkpoints/step-NNNNNN): its state, and its metrics through that step,
    become this run's; training goes on from there with this config.
    The configs may differ anywhere but where the saved state's shape depends on them: platform, algo, model, data,
    batch and group size, processes.
    The new run's config.json and summary.json name the checkpoint it was forked from."""
    resume: Literal["auto", "never"] = "auto"
    """auto: rerunning with the same --run-dir resumes from its newest checkpoint.
    never: always start fresh, in a new directory (RUN_DIR-2, ...) if RUN_DIR is not empty; nothing is overwritten."""
    max_consecutive_skips: Annotated[int, Limit(ge=1)] = 10
    """Updates with a non-finite loss or gradient are skipped; this many in a row stop the run (checkpointed)."""
    loggers: tuple[Literal["tensorboard", "wandb"], ...] = ()
    """Extra metric sinks (need the matching extra). metrics.jsonl is always written."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    remix: ReMixConfig = field(default_factory=ReMixConfig)
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(compile=True))
    """The ReMix loss; training compiles its per-token part (--objective.no-compile for eager)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def normalize(self) -> None:
        if not self.reward:
            self.reward = (BUILTIN_REWARD,)

    def loss_objective(self) -> ObjectiveConfig:
        """--objective as the loss uses it. Dr. GRPO's divisor, when --objective.loss-agg-constant is not given, is
        the maximum response length, the same at every step; resolved here, where it is used, so a config copied
        with another --rollout.max-new-tokens (dataclasses.replace) never keeps the old one."""
        if self.objective.loss_agg == "seq-mean-token-sum-norm" and self.objective.loss_agg_constant is None:
            return replace(self.objective, loss_agg_constant=float(self.rollout.max_new_tokens))
        return self.objective

    def rewards(self) -> RewardSet:
        """The reward functions of --reward and --reward-weights; the math reward reads --data.answer-key."""
        return RewardSet(self.reward, self.reward_weights, self.data.answer_key, self.grading)

    def check(self) -> None:
        """The rules across fields (each field's own limits are declared with it)."""
        require(self.platform in PLATFORMS, "platform", f"{self.platform!r} is not a platform; choose cpu, cuda or xla"
                + (" (TPUs are --platform xla, through torch-xla)" if self.platform.lower() == "tpu" else "")
                + (" (NVIDIA GPUs are --platform cuda)" if self.platform.lower() == "gpu" else ""))
        require(self.rollout.engine != "sglang" or self.platform == "cuda", "rollout.engine",
                f"sglang runs only on --platform cuda (got --platform {self.platform})")
        require(self.lora.dropout == 0 or not self.model.activation_checkpointing, "lora.dropout",
                "dropout with --model.activation-checkpointing is not supported: the recomputed blocks would draw "
                "other dropout masks than the forward pass did")
        require(self.lora.sync == "merged" or self.rollout.engine == "sglang", "lora.sync",
                "adapter sends the adapter through SGLang's LoRA API: it needs --rollout.engine sglang "
                "(the torch engine takes merged weights)")
        world, G = launched_world_size(), self.rollout.group_size
        per_rank = f" per process ({world} processes)" if world > 1 else ""
        require(
            self.batch_size % (world * G) == 0,
            "batch_size",
            f"{self.batch_size} is not a multiple of " + (
                f"{world * G} = --rollout.group-size {G} x {world} processes: groups are kept whole and every process "
                "gets the same number" if world > 1 else f"--rollout.group-size {G}: groups are kept whole"),
        )
        require(
            1 <= self.mini_batch_size <= self.batch_size and self.batch_size % self.mini_batch_size == 0
            and self.mini_batch_size % world == 0,
            "mini_batch_size",
            f"{self.mini_batch_size} must divide --batch-size {self.batch_size}"
            + (f" and be a multiple of {world} processes" if world > 1 else ""),
        )
        local_mini = self.mini_batch_size // world
        require(
            1 <= self.micro_batch_size <= local_mini and local_mini % self.micro_batch_size == 0,
            "micro_batch_size",
            f"{self.micro_batch_size} must divide --mini-batch-size{per_rank} ({local_mini})",
        )
        require(self.algo != "grpo" or self.rollout.group_size >= 2, "rollout.group_size",
                "GRPO needs at least 2 responses per prompt")
        require(not self.reward_weights or len(self.reward_weights) == len(self.reward), "reward_weights",
                f"{len(self.reward_weights)} weights for {len(self.reward)} --reward functions "
                f"({', '.join(self.reward)})")
        require(all(math.isfinite(w) for w in self.reward_weights), "reward_weights",
                f"must be finite numbers, got {self.reward_weights}")
        try:
            self.rewards().load()  # a missing file or function, or a module that fails to import: now, in one line
        except RewardSpecError as e:
            raise ConfigError(str(e)) from None
        for sink in self.loggers:  # fail at parse time, not after the run directory was made
            require(importlib.util.find_spec(sink) is not None, "loggers",
                    f"{sink} is not installed: pip install 'remix-rft[{sink}]'")
        if "wandb" in self.loggers and launched_rank() == 0:  # rank 0 alone logs (its node's login counts)
            from remix.tracking import wandb_login_problem

            problem = wandb_login_problem()
            require(problem is None, "loggers", f"wandb: {problem}")
        if self.variant == "remix":
            # The trainer draws int(p * B) responses in whole groups once for all processes (each keeps its
            # share), so the bound is on the global batch whatever the number of processes.
            drawn = self.remix.offpolicy_fraction * self.batch_size
            require(
                self.remix.offpolicy_fraction == 0 or int(drawn) // self.rollout.group_size >= 1,
                "remix.offpolicy_fraction",
                f"p x --batch-size = {drawn:g} responses is less than one group of {self.rollout.group_size}: "
                "raise --batch-size or --remix.offpolicy-fraction",
            )
