"""Activation checkpointing that holds on every device: `recompute(fn, *args, **kwargs)` runs fn keeping only its
inputs and recomputes the rest in the backward pass (the transformer blocks under
`--model.activation-checkpointing`, and the LM head's chunks always).

On CPUs and GPUs this is torch's non-reentrant checkpoint. On XLA it is not enough: the whole step is one traced
graph, and XLA's common-subexpression pass merges a recomputation that reads the same inputs as the forward back
into the forward, so the activations are kept after all (the optimized HLO with and without checkpointing was the
same: pytorch/xla's checkpoint docs, and issue 34). torch-xla's own checkpoint puts an optimization barrier over
the saved inputs, the incoming gradients and the function's module weights before it recomputes, which XLA
cannot see through, so the recomputation stays in the backward. It is reentrant and positional only: keyword
arguments that need no gradient (masks, rotary tables, flags) are bound into the function, tensors that need one
are passed positionally, and the function stays a method of its module so that the module's weights join the
barrier. No RNG is replayed (dropout is off: the learner runs in eval mode).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def recompute(fn: Callable[..., Any], *args: Any, owner: nn.Module | None = None, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) with its activations recomputed in the backward pass. `owner`: the module whose
    weights fn reads (joins XLA's barrier; any module-free tensors fn needs gradients of are among args)."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if not tensors or tensors[0].device.type != "xla":
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)
    from torch_xla.utils.checkpoint import checkpoint as xla_checkpoint

    moved = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    nested = [k for k, v in kwargs.items() if isinstance(v, (tuple, list))
              and any(isinstance(t, torch.Tensor) and t.requires_grad for t in v)]
    if nested:  # bound into the function, their gradient would bypass the checkpoint's backward
        raise ValueError(f"recompute on XLA: keyword arguments {nested} hold tensors that need a gradient inside a "
                         "tuple or list; pass them as tensors of their own")
    bound = {k: v for k, v in kwargs.items() if k not in moved}
    n = len(args)

    def run(_owner: nn.Module, *positional: Any) -> Any:
        return fn(*positional[:n], **bound, **dict(zip(moved, positional[n:])))

    method = types.MethodType(run, owner if owner is not None else nn.Module())
    return xla_checkpoint(method, *args, *(kwargs[k] for k in moved), preserve_rng_state=False)
