"""The parallelism plan of the learner: where its models live, in which dtype they compute, whether they are
sharded across processes, and whether transformer blocks recompute their activations in the backward pass.

Every platform builds the same learner over one of these plans (platforms/cpu, cuda and xla only choose
the values). The plan is fixed at construction time:

- `device`: the torch device of this process (cpu, cuda:LOCAL_RANK, the xla device).
- `compute_dtype`: float32, or bfloat16 for a learner that computes in bf16 while its master weights and
  AdamW state stay float32. Sharded, FSDP2's `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`
  casts the gathered parameters (so all-gathers move bf16) and reduces gradients in float32. Unsharded,
  autocast does the casting per op (matmuls in bf16; norms, softmax and losses in float32); the trained
  weights are float32 either way. Log-probs, entropies and losses are float32 in both; in a bf16 plan the
  LM head multiplies bf16-rounded states and weights in float32 (TF32 on CUDA, exact for such inputs), in a
  float32 plan exact float32 (platforms/backend/logprobs.py).
  Frozen models (reference, precedent) hold each weight in the dtype it is computed in, so they cost half
  the memory in bf16 plans and compute exactly what float32 copies would: sharded, every weight in bf16
  (FSDP2 would cast each gathered weight to bf16 anyway); unsharded, the linear layers of the transformer
  blocks (autocast casts exactly those to bf16), with embeddings, norms and the head kept float32.
- `sharded`: FSDP2 (`fully_shard`) over all processes of the job, one unit per transformer block plus the
  root; used whenever the job has more than one process.
- `activation_checkpointing`: each transformer block's activations are recomputed in the backward pass
  (less memory, one more forward of the blocks).
- `static` (XLA only, else None): a `StaticShapes` (platforms/backend/static_shapes.py), everything a lazy-tensor
  device needs of the learner in one object: padded batches, fixed-size chunks, graph cuts, the SPMD mesh.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from platforms.backend.recompute import recompute
from platforms.backend.static_shapes import StaticShapes
from remix.interfaces import TokenBatch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ParallelPlan:
    device: torch.device
    compute_dtype: torch.dtype = torch.float32
    sharded: bool = False
    activation_checkpointing: bool = False
    static: StaticShapes | None = None  # XLA: fixed shapes, graph cuts, SPMD (static_shapes.py)
    # transformers' attention implementation for the learner's models (None: its default, SDPA). XLA takes "eager":
    # its autocast does not cast SDPA's inputs (pytorch/xla#7177), so with bf16 autocast RoPE's float32 tables
    # leave q and k float32 beside a bf16 v and SDPA refuses them; eager attention's matmuls are cast per op.
    attention: str | None = None

    @property
    def static_shapes(self) -> bool:
        return self.static is not None

    @property
    def compile_objective(self) -> bool:
        """Whether --objective.compile is honoured: on XLA the loss is traced into the step's graph instead."""
        return self.static is None

    def sync(self) -> None:
        """XLA: cut the lazy graph here and run it; elsewhere nothing."""
        if self.static is not None:
            self.static.cut()

    def place(self, batch: TokenBatch) -> TokenBatch:
        """The batch on the device; under SPMD with its rows sharded over the mesh (where they divide)."""
        batch = batch.to(self.device)
        if self.static is not None:
            self.static.shard_batch(batch)
        return batch

    def seed_update_rng(self, seed: int, update: int) -> None:
        """XLA: seeds the device's generator for the `update`-th update's draws (LoRA dropout's masks). XLA advances
        its seed at every graph it runs, so the masks of a stream seeded once would depend on how many graphs ran
        before (compilations included), which a resumed process does not repeat; seeded per update, they are a
        function of --seed and the update's number alone. Elsewhere nothing: the CPU's and CUDA's generators are
        streams that the trainer's checkpoint keeps (`device_rng_state`)."""
        if self.device.type == "xla":
            import torch_xla.core.xla_model as xm

            xm.set_rng_state(seed * 1_000_003 + update, str(self.device))

    def device_rng_state(self) -> torch.Tensor | None:
        """CUDA: the state of this process's device's generator, for its checkpoint; None elsewhere (the CPU's the
        trainer saves itself, XLA's is seeded per update)."""
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def set_device_rng_state(self, state: torch.Tensor | None) -> None:
        if state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)

    @property
    def spmd(self) -> bool:
        """Whether parameters are sharded over an XLA SPMD mesh (then loads go through `static`, tensor by tensor)."""
        return self.static is not None and self.static.mesh is not None

    def prepare(self, module: nn.Module, trainable: bool) -> nn.Module:
        """Applies the plan to a freshly built float32 module: activation checkpointing (trainable modules
        only), frozen weights in the compute dtype, FSDP2 sharding, placement. Dropout stays off (eval mode)
        throughout: the old, proximal and current log-probs must be comparable. A trainable module trains the
        parameters it marks as such (all of a fresh HF model; a LoRA model's adapter alone)."""
        module.eval()
        if not trainable:
            module.requires_grad_(False)
        blocks = transformer_blocks(module)
        if self.compute_dtype != torch.float32:  # a LoRA policy's frozen base too
            store_frozen_in_compute_dtype(module, blocks, self.compute_dtype, self.sharded)
        if self.activation_checkpointing and trainable:
            for block in blocks:
                _recompute_in_backward(block)
        if self.sharded:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=None if self.compute_dtype == torch.float32 else self.compute_dtype,
                                      reduce_dtype=torch.float32)
            module.to(self.device)
            for block in blocks:
                fully_shard(block, mp_policy=mp)
            # A frozen model never runs backward, so its root (embeddings, final norm, head) must reshard
            # right after each forward, or it would stay gathered on every rank until the process ends.
            fully_shard(module, mp_policy=mp, reshard_after_forward=True if not trainable else None)
            return module
        module = to_device_keeping_ties(module, self.device)
        if self.static is not None:
            self.static.shard_parameters(module)
        return module

    @property
    def head_dtype(self) -> torch.dtype | None:
        """bf16 plans: the dtype the LM head's inputs are rounded to before its float32 product (None: exact)."""
        return None if self.compute_dtype == torch.float32 else self.compute_dtype

    def float32_matmuls(self) -> contextlib.AbstractContextManager:
        """The context forward *and backward* passes run in: in a bf16 plan on CUDA, float32 matrix products
        (the LM head's) may use TF32 tensor cores; torch leaves TF32 off by default, which makes the head, a
        [tokens, hidden] x [hidden, 151,936] product at Qwen's vocabulary, run at a fraction of bf16 speed. Its
        forward inputs are bf16-rounded there, which TF32 represents exactly; float32 plans stay exact."""
        if self.device.type != "cuda" or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return allow_tf32()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context forward passes run in: bf16 autocast for an unsharded bf16 learner, else nothing
        (float32, or FSDP2 already hands the blocks bf16 parameters)."""
        if self.compute_dtype == torch.float32 or self.sharded:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)


@contextlib.contextmanager
def allow_tf32():
    """CUDA float32 matmuls in TF32 inside (a process-wide flag, read when each product is launched, also by the
    autograd thread that runs the backward pass); the previous setting after."""
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")  # torch >= 2.9; mixing it with allow_tf32 raises there
    before = matmul.fp32_precision if new_api else matmul.allow_tf32
    if new_api:
        matmul.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
    try:
        yield
    finally:
        if new_api:
            matmul.fp32_precision = before
        else:
            matmul.allow_tf32 = before


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a (possibly FSDP-sharded) parameter: gathers a DTensor's shards (collective)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def store_frozen_in_compute_dtype(module: nn.Module, blocks: list[nn.Module], dtype: torch.dtype,
                                  sharded: bool) -> None:
    """Frozen weights (a frozen model's, a LoRA policy's base) in `dtype` wherever that changes no result (see the
    module docstring): all of them under FSDP2's bf16 mixed precision; else the frozen nn.Linear layers of the
    blocks, which autocast runs in `dtype` whatever their storage. Trainable weights stay float32."""
    if sharded:
        for p in module.parameters():  # parameters only: buffers such as RoPE's inv_freq keep their float32
            if not p.requires_grad:
                p.data = p.data.to(dtype)
        return
    for block in blocks:
        for sub in block.modules():
            if isinstance(sub, nn.Linear) and not any(p.requires_grad for p in sub.parameters()):
                sub.to(dtype)


def to_device_keeping_ties(module: nn.Module, device: torch.device) -> nn.Module:
    """module.to(device), with tied parameters (an LM head that is the embedding) still one parameter after it:
    torch-xla's .to() gives each name its own copy, which would train the head and the embedding apart."""
    names_of: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    module = module.to(device)
    for first, *aliases in names_of.values():
        shared = module.get_parameter(first)
        for alias in aliases:
            owner, _, attr = alias.rpartition(".")
            setattr(module.get_submodule(owner) if owner else module, attr, shared)
    return module


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated decoder layers of an HF model (the first `ModuleList` named `...layers`)."""
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and name.split(".")[-1] == "layers":
            return list(child)
    raise ValueError(f"{type(module).__name__}: no transformer blocks found (no ModuleList named 'layers')")


def _recompute_in_backward(block: nn.Module) -> None:
    """Replaces the block's forward by one that keeps only its inputs and recomputes the rest in the
    backward pass. The module tree and parameter names are unchanged (unlike a wrapper module), so
    state dicts and checkpoints are the same with and without it."""
    forward = block.forward

    def recomputed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return recompute(forward, *args, owner=block, **kwargs)  # with XLA's barrier there (recompute.py)

    block.forward = recomputed
