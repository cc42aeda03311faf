"""What a lazy-tensor device (XLA) needs of the learner, in one object: XLA compiles one program per graph shape
and runs a graph when it is cut, so the learner keeps shapes to a few buckets and cuts the graph itself.

A `ParallelPlan` holds a `StaticShapes` where the device is XLA (platforms/xla builds it) and None elsewhere; the
backend asks it, rather than the device, whenever XLA needs something else:

- batches: prompt and response lengths padded to multiples of `length_multiple` (`pad`), forward passes over
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
    length_multiple: int  # learner batches: prompt and response lengths are padded to multiples of this
    cut: Callable[[], None]  # cuts the lazy graph here and runs it (torch_xla.sync)
    mesh: Any = None  # torch_xla.distributed.spmd.Mesh with one axis 'fsdp', or None with one device

    def pad(self, batch: TokenBatch) -> TokenBatch:
        return pad_to_multiple(batch, self.length_multiple)

    @staticmethod
    def chunks(batch: TokenBatch, rows: int) -> list[tuple[TokenBatch, int]]:
        return row_chunks(batch, rows)

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

        n = self.mesh.size()
        for p in module.parameters():
            if p.dim() > 0:
                spec = ("fsdp" if p.shape[0] % n == 0 else None,) + (None,) * (p.dim() - 1)
                xs.mark_sharding(p, self.mesh, spec)


def pad_to_multiple(batch: TokenBatch, multiple: int) -> TokenBatch:
    """The batch with its prompt part left-padded and its response part right-padded to multiples of `multiple`
    tokens. The padding is masked out everywhere (attention and response masks 0, per-token fields 0), so nothing
    computed from it changes."""
    P, T = batch.prompt_len, batch.response_mask.shape[1]
    P2, T2 = -(-P // multiple) * multiple, -(-T // multiple) * multiple
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
