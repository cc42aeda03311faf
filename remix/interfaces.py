"""The three interfaces every platform implements: Rollout, Learner, Buffer; and what a platform package provides.

Records that cross them live here too. Everything is host-side Python/torch so that the
platform-free loop (remix/trainer.py) never needs to know where the tensors were computed.
Optional capabilities raise `NotImplementedError` with a message naming the platform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How a Rollout samples. `n` responses are drawn for every prompt."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1
    seed: int | None = None


@dataclass
class Generation:
    """One response: its token ids, the engine's log-prob per token and why it stopped."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason


@dataclass
class Group:
    """All G responses to one prompt, stored and reused as a unit (ALGORITHM.md section 2).

    `behav_logp[i]` is the *learner's* float32 log-prob of response i under the policy that
    generated it (version `version`); `engine_logp` keeps the engine's own numbers, for the
    sampler/learner gap (metric and guard) and for --objective.rollout-correction. `ref_logp` caches
    log-probs under pi_ref and is valid until reincarnation (the buffer is cleared then).
    """

    prompt_ids: list[int]
    responses: list[list[int]]
    rewards: list[float]
    version: int
    problem_id: str = ""
    answer: Any = None
    finish_reasons: list[FinishReason] = field(default_factory=list)
    engine_logp: list[torch.Tensor] = field(default_factory=list)
    behav_logp: list[torch.Tensor] = field(default_factory=list)
    ref_logp: list[torch.Tensor] | None = None
    advantages: list[float] | None = None  # GRPO: fixed at generation time (ALGORITHM.md decides it)

    def __len__(self) -> int:
        return len(self.responses)


class RolloutFailed(RuntimeError):
    """The rollout engine cannot go on: one of its processes died, or it samples from other weights than the
    learner's. The run stops with this one line; the same command resumes from the last checkpoint."""


def _missing(platform: str, what: str) -> NotImplementedError:
    return NotImplementedError(f"platform '{platform}' does not implement {what}")


class Rollout(ABC):
    """Generates responses. Weights arrive from the learner as a stream through `load_weights`.

    A colocated engine (one sharing the accelerator with the learner) frees its memory while the learner
    works and takes it back before it is needed; the loop calls `release_memory` after generating and
    `resume_memory` before the new weights are loaded. Both are no-ops where the engine keeps its memory.
    """

    platform: str = "abstract"

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Returns, for every prompt, `params.n` generations."""

    @abstractmethod
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replaces the engine's weights with the learner's, given as a stream of (name, full tensor) pairs
        (see `Learner.policy_weights`): the tensors may be on the learner's device and may be consumed in
        buckets; every weight of the model must arrive."""

    def load_adapter(self, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Optional (--lora.sync adapter): samples from now on with the base model plus this LoRA adapter (peft's
        adapter_config.json contents and its tensors under peft's names, see `Learner.policy_adapter`), replacing
        the previous one. An engine without LoRA support takes merged weights through `load_weights` only."""
        raise _missing(self.platform, "Rollout.load_adapter (--lora.sync adapter); use --lora.sync merged")

    def release_memory(self) -> None:
        """Frees the engine's accelerator memory (weights, KV cache) while the learner works. Default: keep it."""
        return None  # an engine that owns its memory for good has nothing to free

    def resume_memory(self) -> None:
        """Takes the memory back before weights are loaded and generation resumes. Default: nothing to do."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue sampling exactly (e.g. RNG state); weights come from the learner."""
        raise _missing(self.platform, "Rollout.state_dict, needed to checkpoint a run")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise _missing(self.platform, "Rollout.load_state_dict, needed to resume a run")


class Learner(ABC):
    """Holds the policy (and for PPO the critic) and the two KL anchors: reference and precedent."""

    platform: str = "abstract"

    @abstractmethod
    def logprobs(
        self, batch: TokenBatch, policy: Literal["current", "reference", "precedent"] = "current"
    ) -> torch.Tensor:
        """float32 log-probs [B, T] of the response tokens under one of the three policies. Collective under several
        processes: every rank calls it, with as many rows as it has (0 too)."""

    @abstractmethod
    def update(self, batch: TokenBatch, kl_lambda: float) -> dict[str, float]:
        """One optimizer step on one mini-batch; returns scalar metrics."""

    @abstractmethod
    def policy_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The policy's weights as (name, full tensor) pairs, one at a time, in state-dict order and names.

        Tensors stay on the learner's device; a sharded learner gathers each one just in time, so a
        consumer copies them into place as they come or holds a bucket of them at a time, never all, and
        none past the next update (an unsharded learner hands out its parameters themselves). Under
        several processes every rank must iterate to the end: gathering a sharded weight is a collective.
        """

    def policy_adapter(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Optional, for LoRA policies: the adapter as peft saves it, (adapter_config.json's contents, whole
        tensors under peft's names). Collective under several processes."""
        raise NotImplementedError("policy_adapter: this learner trains no LoRA adapter (--lora.rank 0)")

    def device_rng_state(self) -> Any:
        """Optional: the state of the random generator of this process's device where the learner draws from it
        (LoRA dropout's masks on a GPU), saved in this process's checkpoint; None where it draws from the CPU's
        generator, which the trainer saves, or seeds its draws itself."""
        return None

    def set_device_rng_state(self, state: Any) -> None:  # noqa: B027 (optional: nothing to restore by default)
        """Restores what `device_rng_state` returned."""

    @abstractmethod
    def snapshot_precedent(self) -> None:
        """Makes the current weights the precedent policy pi_prev used from the next step on."""

    @abstractmethod
    def reincarnate_reference(self) -> None:
        """Makes the current weights the KL reference pi_ref (policy reincarnation)."""

    def values(self, batch: TokenBatch) -> torch.Tensor:
        """Critic values [B, T] (PPO only)."""
        raise _missing(self.platform, "a critic (values), needed by --algo ppo")

    def save_state(self, folder: Path) -> None:
        """Writes everything needed to resume into `folder`: the policy as an HF folder (`folder/model`),
        optimizer state, the precedent weights, the reference weights once reincarnated, the PPO critic.
        Only safetensors, torch.distributed.checkpoint and `torch.save` files that load with
        `weights_only=True`. Under several processes every rank calls it with the same folder."""
        raise _missing(self.platform, "Learner.save_state, needed to checkpoint a run")

    def load_state(self, folder: Path) -> None:
        """Restores what `save_state` wrote (the learner was built from the same base model and config)."""
        raise _missing(self.platform, "Learner.load_state, needed to resume a run")

    def reset_optimizer(self) -> None:
        """Fresh optimizer state of the policy and of the PPO critic (used at reincarnation with
        --remix.reset-optimizer-at-reincarnation)."""
        raise _missing(self.platform, "reset_optimizer, needed by --remix.reset-optimizer-at-reincarnation")


class Buffer(ABC):
    """Holds whole groups of recent policies, keyed by the version that generated them."""

    @abstractmethod
    def add(self, groups: list[Group]) -> None: ...

    @abstractmethod
    def sample(self, num_responses: int, generator: torch.Generator) -> list[Group]:
        """Whole groups totalling at most `num_responses` responses."""

    @abstractmethod
    def evict_older_than(self, min_version: int) -> int:
        """Drops groups with version < min_version; returns how many groups were dropped."""

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def num_responses(self) -> int: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TokenBatch:
    """A padded batch of prompt+response sequences as the learner sees them.

    `input_ids`/`attention_mask` are [B, P+T] with prompts left-padded to P and responses
    right-padded to T; `response_mask` is [B, T] (bool) over the response tokens.
    Per-token tensors that the objective needs are [B, T] and aligned with `response_mask`.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    fields: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor) -> TokenBatch:
        return TokenBatch(
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            response_mask=self.response_mask[index],
            prompt_len=self.prompt_len,
            fields={k: v[index] for k, v in self.fields.items()},
        )

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch with every tensor on `device` (a no-op copy-free view where it already is)."""
        return TokenBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_mask=self.response_mask.to(device),
            prompt_len=self.prompt_len,
            fields={k: v.to(device) for k, v in self.fields.items()},
        )


class Platform(Protocol):
    """What a platform package under platforms/ provides (platforms.get_platform returns one); the core gets it
    handed in and never imports platforms/ itself."""

    NAME: str
    DIST_BACKEND: str  # the torch.distributed backend of a multi-process job: gloo, nccl

    def make_rollout(self, model_dir: str | Path, *, seed: int = 0, dtype: str = "float32", options: Any = None,
                     prompt_tokens: int | None = None) -> Rollout: ...

    def make_learner(self, model_dir: str | Path, cfg: Any) -> Learner: ...
