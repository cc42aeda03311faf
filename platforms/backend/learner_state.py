"""The learner's checkpoints: `save_state` / `load_state` of TorchLearner (a mixin: the same object's models).

The policy as an HF folder (`model/`, safetensors, gathered on rank 0 one tensor at a time), and everything else
(AdamW state, precedent, reference once reincarnated, critic and its optimizer) through
torch.distributed.checkpoint (`state/`), where each rank writes and reads only its own shards. At 7B parameters
AdamW state is 56 GB in float32: gathering it on one rank would need that much host memory on rank 0, while DCP
needs none beyond each rank's shard.

A LoRA learner's checkpoint holds no base weight: the adapter in peft's format (`adapter/`), and in `state/` the
adapter, its AdamW state, the precedent's and the reference's adapter snapshots and the critic's trainable
weights; the base weights are the model folder's.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from platforms.backend import lora
from remix import distributed as dist
from remix.checkpoint import save_hf_model


@contextmanager
def _single_process_dcp():
    """DCP warns on every call without a process group that it assumes one process: here that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


class LearnerCheckpoints:
    """save_state / load_state of TorchLearner (platforms/backend/learner.py), which holds every attribute used."""

    def _fresh_optimizers(self) -> dict[str, bool]:
        """Which optimizers have no state yet (just built, or reset at reincarnation)."""
        fresh = {"optimizer": not self.optimizer.state}
        if self.critic is not None:
            fresh["critic_optimizer"] = not self.critic_optimizer.state
        return fresh

    def _sharded_state(self, fresh: dict[str, bool]) -> dict[str, dict]:
        """Everything but the policy weights, as (sharded) state dicts in the form DCP saves and loads in place.
        A fresh optimizer is left out: torch's get_optimizer_state_dict would first initialise it with a
        zero-learning-rate step (Adam's step count 1), so a run would depend on whether it was saved."""
        state = {}
        if not fresh["optimizer"]:
            state["optimizer"] = get_optimizer_state_dict(self.policy, self.optimizer)
        if self.lora:  # the adapter (the base weights are the model folder's) and its snapshots
            state["adapter"] = self._trainable_state(self.policy)
            if self.precedent_adapter is not None:
                state["precedent_adapter"] = dict(self.precedent_adapter)
            if not self.reference_is_base:
                state["reference_adapter"] = dict(self.reference_adapter)
        if self.precedent is not None:
            state["precedent"] = get_model_state_dict(self.precedent)
        if not self.reference_is_base and self.reference is not None:
            state["reference"] = get_model_state_dict(self.reference)
        if self.critic is not None:
            state["critic"] = self._trainable_state(self.critic)
            if not fresh["critic_optimizer"]:
                state["critic_optimizer"] = get_optimizer_state_dict(self.critic, self.critic_optimizer)
        return state

    def _trainable_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """A model's state for a checkpoint: all of it, or with LoRA its trainable part (the rest is the base
        model's, read from the model folder)."""
        state = get_model_state_dict(module)  # under FSDP2 each rank's shards: nothing is gathered
        if not self.lora:
            return state
        trainable = {name for name, p in module.named_parameters() if p.requires_grad}
        return {k: v for k, v in state.items() if k in trainable}

    def _state_for_dcp(self, fresh: dict[str, bool]) -> dict[str, dict]:
        """The sharded state as DCP reads and writes it: as is on the CPU and CUDA; as host copies on XLA, whose
        tensors DCP's file writer cannot read (the state is loaded into those copies, then into the device)."""
        state = self._sharded_state(fresh)
        if self.plan.static is None:
            return state

        def to_host(x):
            if isinstance(x, dict):
                return {k: to_host(v) for k, v in x.items()}
            if isinstance(x, list):
                return [to_host(v) for v in x]
            return x.cpu() if isinstance(x, torch.Tensor) else x

        return to_host(state)

    def save_state(self, folder: Path) -> None:
        """Collective under several processes: every rank calls it with the same folder."""
        folder.mkdir(parents=True, exist_ok=True)
        full = {}
        # every rank takes part in gathering each tensor; rank 0 keeps it
        for name, t in lora.whole_adapter(self.policy.lm) if self.lora else self.policy_weights():
            if dist.is_main():
                full[name] = t.cpu()
        fresh = self._fresh_optimizers()
        if dist.is_main():
            if self.lora:  # the adapter alone, in peft's format; the final model folder merges it (export_policy)
                lora.save_adapter(self.policy.lm, full, folder / "adapter")
            else:
                save_hf_model(full, self.model_dir, folder / "model")
            meta = {"reference_is_base": self.reference_is_base, "fresh_optimizers": fresh,
                    "lora_rank": self.cfg.lora.rank, "base_model": str(self.model_dir), "updates": self.updates}
            (folder / "learner.json").write_text(json.dumps(meta) + "\n")
        del full
        with _single_process_dcp():
            dcp.save(self._state_for_dcp(fresh), checkpoint_id=folder / "state", no_dist=not dist.active())

    def load_state(self, folder: Path) -> None:
        from safetensors.torch import load_file

        meta = json.loads((folder / "learner.json").read_text())
        saved_rank = meta.get("lora_rank", 0)
        if saved_rank != self.cfg.lora.rank:
            raise ValueError(f"{folder.parent} was trained with --lora.rank {saved_rank}, this run has --lora.rank "
                             f"{self.cfg.lora.rank}: the saved weights do not fit")
        if not self.lora:
            weights: dict[str, torch.Tensor] = {}
            for f in sorted((folder / "model").glob("*.safetensors")):
                weights.update(load_file(f))
            for alias, name in self._aliases.items():  # tied weights are saved once
                weights.setdefault(alias, weights[name])
            self._load_module(self.policy, {f"lm.{k}": v for k, v in weights.items()}, full=True)
        self.reference_is_base, fresh = meta["reference_is_base"], meta["fresh_optimizers"]
        self.updates = meta.get("updates", 0)
        if self.lora and not self.reference_is_base:  # filled in by the load below
            self.reference_adapter = lora.copy_adapter(self.policy)
        self.reset_optimizer()  # fresh optimizers stay fresh; the others are filled in below
        state = self._state_for_dcp(fresh)
        with _single_process_dcp():
            dcp.load(state, checkpoint_id=folder / "state", no_dist=not dist.active())
        if self.lora:  # the adapter first: the optimizer's state is keyed by its parameters
            self._load_module(self.policy, state["adapter"], partial=True)
            for name in ("precedent_adapter", "reference_adapter"):
                if name in state:
                    self._copy_loaded(state[name], getattr(self, name))
        if "optimizer" in state:
            self._load_optimizer(self.policy, self.optimizer, state["optimizer"])
        if self.precedent is not None:
            self._load_module(self.precedent, state["precedent"])
        if not self.reference_is_base and self.reference is not None:
            self._load_module(self.reference, state["reference"])
        if self.critic is not None:
            self._load_module(self.critic, state["critic"], partial=self.lora)
            if "critic_optimizer" in state:
                self._load_optimizer(self.critic, self.critic_optimizer, state["critic_optimizer"])

    def _load_module(self, module: nn.Module, state: dict[str, torch.Tensor], full: bool = False,
                     partial: bool = False) -> None:
        """A model's saved state into `module` (`partial`: its trainable part, LoRA). Under XLA SPMD tensor by
        tensor, each sharded again at once: set_model_state_dict would leave the whole model replicated on every
        chip (about 25 GB per chip with AdamW's moments at 1.5B), first all of it at once, then for good."""
        if self.plan.spmd:
            self.plan.static.load_into(module, state, partial=partial)
        else:
            set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=full, strict=not partial))

    def _copy_loaded(self, loaded: dict[str, torch.Tensor], snapshot: dict[str, torch.Tensor]) -> None:
        """An adapter snapshot as DCP loaded it into its host copies (XLA) copied into the snapshot's device tensors;
        elsewhere DCP loaded the snapshot's tensors themselves, in place."""
        if self.plan.static is None:
            return
        with torch.no_grad():
            for name, t in snapshot.items():
                t.copy_(loaded[name])
        self.plan.sync()

    def _load_optimizer(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.plan.spmd:  # the moments reach the device sharded as their parameters, one at a time
            self.plan.static.place_optimizer_state(state, module, self.plan.device)
        set_optimizer_state_dict(module, optimizer, state)
