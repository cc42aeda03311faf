"""What a lazy-tensor device (XLA) needs of the learner, in one object: XLA compiles one program per graph shape
and runs a graph when it is cut, so the learner keeps shapes to a few buckets and cuts the graph itself.

A `ParallelPlan` holds a `StaticShapes` where the device is XLA (platforms/xla builds it) and None elsewhere; the
backend asks it, rather than the device, whenever XLA needs something else:

- batches: prompt and response lengths padded to powers of two of at least `min_length` (`pad`), forward passes over
  chunks of exactly `rows` rows (`chunks`), log-probs over every position of the padded grid (no boolean
  indexing, whose result has a data-dependent shape);
- graph cuts: `cut()` (torch_xla.sync) after each backward, each optimizer step and each weight copy;
- SPMD: with several devices, `mesh` is a one-axis mesh ('fsdp') over all of them: every parameter is sharded
  along its first dimension (replicated where that does not divide) and each batch along its rows;
- the objective is traced into the step's graph rather than torch.compile'd; checkpoints go through host
  copies (DCP's file writer cannot read XLA tensors); the update's metrics are read once per optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from remix.interfaces import TokenBatch


@dataclass(frozen=True)
class StaticShapes:
    min_length: int  # learner batches: prompt and response lengths are padded to powers of two, at least this
    cut: Callable[[], None]  # cuts the lazy graph here and runs it (torch_xla.sync)
    mesh: Any = None  # torch_xla.distributed.spmd.Mesh with one axis 'fsdp', or None with one device

    def pad(self, batch: TokenBatch) -> TokenBatch:
        return pad_to_lengths(batch, length_bucket(batch.prompt_len, self.min_length),
                              length_bucket(batch.response_mask.shape[1], self.min_length))

    @staticmethod
    def chunks(batch: TokenBatch, rows: int) -> list[tuple[TokenBatch, int]]:
        return row_chunks(batch, rows)

    @staticmethod
    def to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Device tensors copied to the host in one transfer, without a graph of their own (a torch.cat on the
        device would be one more program to compile for every new number of tensors)."""
        import torch_xla

        return torch_xla._XLAC._xla_get_cpu_tensors(tensors)

    def shard_batch(self, batch: TokenBatch) -> None:
        """SPMD: every tensor of the batch sharded along its rows over the mesh (where they divide)."""
        if self.mesh is None or len(batch) % self.mesh.size() != 0:
            return
        import torch_xla.distributed.spmd as xs

        for t in (batch.input_ids, batch.attention_mask, batch.response_mask, *batch.fields.values()):
            xs.mark_sharding(t, self.mesh, ("fsdp",) + (None,) * (t.dim() - 1))

    def shard_parameters(self, module: nn.Module) -> None:
        """SPMD: every parameter sharded along its first dimension (replicated where that does not divide)."""
        if self.mesh is None:
            return
        import torch_xla.distributed.spmd as xs

        for p in module.parameters():
            if p.dim() > 0:
                xs.mark_sharding(p, self.mesh, self.parameter_spec(p))

    def parameter_spec(self, t: torch.Tensor) -> tuple[str | None, ...]:
        """A parameter's partition spec: along its first dimension where the mesh divides it, else replicated."""
        return ("fsdp" if t.shape[0] % self.mesh.size() == 0 else None,) + (None,) * (t.dim() - 1)

    def _shard_like(self, t: torch.Tensor, param: torch.Tensor) -> int:
        """t sharded as `param` is (1), unless it is already sharded or param is replicated (0)."""
        if param.dim() == 0 or param.shape[0] % self.mesh.size():
            return 0
        import torch_xla
        import torch_xla.distributed.spmd as xs

        current = torch_xla._XLAC._get_xla_sharding_spec(t)  # "" or "{replicated}" after a load
        if "devices=" in current:
            return 0
        if current:
            xs.clear_sharding(t)  # an annotation is replaced only after it is cleared
        xs.mark_sharding(t, self.mesh, self.parameter_spec(param))
        return 1

    def load_into(self, module: nn.Module, state: dict[str, torch.Tensor], partial: bool = False) -> None:
        """SPMD: a state dict (host tensors, the module's own names, tied ones included) copied into the module one
        tensor at a time, each sharded again at once: a replicated copy of the whole model never exists on a chip
        (set_model_state_dict copies everything, then the sharding is lost). `partial`: only some of the module's
        tensors (a LoRA adapter's), the others keep theirs."""
        own = module.state_dict(keep_vars=True)  # the parameters themselves (XLA copies into aliases are lost)
        missing, unexpected = set() if partial else set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise KeyError(f"load_into: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        done: set[int] = set()
        with torch.no_grad():
            for name, value in state.items():
                t = own[name]
                if id(t) in done:  # a tied weight, loaded under its first name
                    continue
                done.add(id(t))
                t.copy_(value.to(t.dtype))
                if isinstance(t, nn.Parameter):
                    self._shard_like(t, t)

    def place_optimizer_state(self, state: dict, module: nn.Module, device: torch.device) -> None:
        """SPMD: an optimizer state dict's moments (host copies read from a checkpoint, keyed by parameter name)
        moved to the device one at a time and sharded as their parameters, in place, before the optimizer loads
        them (it would otherwise move each to the device whole: every moment replicated at once)."""
        params = dict(module.named_parameters())
        for name, entry in state.get("state", {}).items():
            p = params.get(name)
            for k, v in entry.items():
                if p is not None and isinstance(v, torch.Tensor) and v.shape == p.shape:
                    placed = v.to(device)
                    self._shard_like(placed, p)
                    entry[k] = placed


def length_bucket(n: int, minimum: int) -> int:
    """The smallest power of two that holds n tokens, at least `minimum` (a power of two). Each (prompt, response)
    bucket pair is one compiled program of the whole unrolled model: multiples of 32 gave 128 response lengths up to
    4,096 (times the prompt lengths), each a full compile of minutes on a TPU; powers of two give 8, for at most
    twice the tokens of padding to the longest row (2 ln 2 = 1.39x on average over uniformly spread lengths)."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def pad_to_lengths(batch: TokenBatch, P2: int, T2: int) -> TokenBatch:
    """The batch with its prompt part left-padded to P2 tokens and its response part right-padded to T2. The padding
    is masked out everywhere (attention and response masks 0, per-token fields 0), so nothing computed from it
    changes."""
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    if (P2, T2) == (P, T):
        return batch
    B = len(batch)

    def widen(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        out = torch.zeros((B, left + x.shape[1] + right), dtype=x.dtype, device=x.device)
        out[:, left:left + x.shape[1]] = x
        return out

    def pad_sequence(x: torch.Tensor) -> torch.Tensor:  # [B, P + T] -> [B, P2 + T2]
        return torch.cat([widen(x[:, :P], P2 - P, 0), widen(x[:, P:], 0, T2 - T)], dim=1)

    fields = {k: widen(v, 0, T2 - T) if v.dim() == 2 and v.shape[1] == T else v for k, v in batch.fields.items()}
    return TokenBatch(pad_sequence(batch.input_ids), pad_sequence(batch.attention_mask),
                      widen(batch.response_mask, 0, T2 - T), P2, fields)


def row_chunks(batch: TokenBatch, rows: int) -> list[tuple[TokenBatch, int]]:
    """The batch cut into chunks of exactly `rows` rows (the last one filled up with copies of its first row), each
    with its number of real rows: one shape for every chunk."""
    out = []
    for start in range(0, len(batch), rows):
        idx = torch.arange(start, min(start + rows, len(batch)))
        real = len(idx)
        idx = torch.cat([idx, idx[:1].expand(rows - real)])
        out.append((batch.select(idx), real))
    return out
