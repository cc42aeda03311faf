"""The XLA platform: the one PyTorch backend (platforms/backend) on an XLA device through torch-xla (TPUs; also
the CPU through PJRT, which is how it is tested: `PJRT_DEVICE=CPU`, `CPU_NUM_DEVICES=4` for four devices).

torch-xla traces the eager program into lazy graphs and compiles one executable per graph shape, so everything
here keeps shapes fixed and the host out of the step:

- rollout: the backend's static KV cache layout (prompts padded to multiples of 64 tokens, batches to powers of
  two, a fixed-size cache) with a graph cut (`torch_xla.sync`) after the prefill and after each decode step, so
  every step of every generation in a bucket runs one cached executable; the decode step is `torch.compile`d with
  the openxla backend (the host no longer re-traces every layer at every token); sampling draws its uniforms from a
  host generator (XLA devices have no torch.Generator) and samples on the device;
- learner: batches padded to powers of two of at least `MIN_LENGTH` tokens (prompt and response separately), log-probs
  over every position of the padded batch (no boolean indexing, whose result has a data-dependent shape),
  micro-batch metrics kept on the device and read once per optimizer step, a graph cut after each backward and
  after the optimizer step;
- the ReMix objective is the same `remix_loss` as everywhere. It is not `torch.compile`d on XLA: it is traced
  into the step's own graph with the forward and backward, where XLA fuses it with its neighbours. torch.compile
  with the openxla backend would cut the loss into a graph of its own, with a host round trip at each boundary
  and nothing gained (`--objective.compile` is therefore ignored here, and the run says so);
- several chips: one process drives all of them through SPMD (`torch_xla.runtime.use_spmd`), every parameter
  sharded FSDP-style along its first dimension over a one-axis mesh of all devices and each batch along its rows,
  so the data-parallel loop of the backend maps onto the mesh with the same update; torchrun is not used.

Executed here: all of this on the CPU through PJRT (tests/xla, `make test-xla`). Not executed: a real TPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from platforms.backend import DTYPES, ParallelPlan, TorchLearner, torch_rollout
from platforms.backend.static_shapes import StaticShapes
from remix import distributed as dist
from remix.config import RolloutConfig, TrainConfig

NAME = "xla"
DIST_BACKEND = "gloo"  # never joined: one process drives every chip (SPMD); see check_available
MIN_LENGTH = 32  # learner batches: prompt and response lengths are padded to powers of two, at least this
# The learner's attention: torch-xla has no SDPA lowering (SDPA decomposes into the same matmuls and softmax as
# eager attention), and its autocast leaves SDPA's inputs uncast, which with bf16 fails (ParallelPlan.attention).
ATTENTION = "eager"


def check_available() -> None:
    """One line where torch-xla is missing or the job was started by torchrun."""
    from platforms import PlatformUnavailable

    try:
        import torch_xla  # noqa: F401
    except ModuleNotFoundError:
        raise PlatformUnavailable(
            f"--platform xla: torch_xla is not installed (torch {torch.__version__}); it needs torch==2.9.0 and "
            "torch-xla==2.9.0 in an environment of their own: `make test-xla` builds one in .venv-xla "
            "(docs/platforms.md, XLA)"
        ) from None
    if dist.launched_world_size() > 1:
        raise PlatformUnavailable("--platform xla: start one process (it drives every chip through SPMD), not torchrun")
    check_single_host()


def check_single_host() -> None:
    """One line on a multi-host slice (a TPU pod: the same command on every host). Each host's process would see a
    world of one and act as the only process: write full checkpoints, metrics and the model folder, grade on its
    own. Multi-host SPMD (a process group through xla://, DCP with the SPMD planners so each host writes its
    shards, only process 0 writing the rest) is not built: refused rather than run wrong."""
    from platforms import PlatformUnavailable
    import torch_xla.runtime as xr

    hosts = xr.process_count()
    if hosts > 1:
        raise PlatformUnavailable(f"--platform xla: this slice has {hosts} hosts; remix drives the chips of one host "
                                  "only (multi-host SPMD is not supported: docs/platforms.md, XLA)")


_spmd: bool | None = None


def spmd() -> bool:
    """Whether this process drives several XLA devices through SPMD: exactly when the runtime has more than one.
    The first call decides, and switches the runtime to SPMD there (`use_spmd` must come before any XLA tensor
    exists); `device()` makes that call first."""
    global _spmd
    if _spmd is None:
        import torch_xla.runtime as xr

        _spmd = xr.global_runtime_device_count() > 1
        if _spmd:
            xr.use_spmd()
    return _spmd


MATMUL_PRECISION = {"float32": "highest", "bfloat16": "default"}


def set_matmul_precision(dtype: str) -> None:
    """The precision of float32 matmuls for a run in `dtype` (--model.dtype). A TPU's default rounds float32 operands
    to bf16 (one pass), so a float32 run would not compute in float32 there: 'highest' (six bf16 passes, about 22
    bits). A bf16 run keeps the default: its blocks multiply bf16, and its float32 LM head multiplies bf16-rounded
    states and weights (logprobs.py), which one bf16 pass computes exactly; only the head's backward product
    (float32 gradients) is rounded, as the rest of a bf16 backward is. XLA's CPU backend computes float32 either
    way; the precision is written into every float32 dot of the HLO (tests/xla check that). Process-wide."""
    import logging

    import torch_xla.backends

    precision = MATMUL_PRECISION[dtype]
    if torch_xla.backends.get_mat_mul_precision() != precision:
        # it warns on every call that setting it more than once is not recommended: this is the one call
        log = logging.getLogger("torch_xla.backends")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            torch_xla.backends.set_mat_mul_precision(precision)
        finally:
            log.setLevel(level)


def device() -> torch.device:
    """The XLA device of this process, after the SPMD decision (`spmd()`), which must precede it."""
    spmd()
    _register_device_module()
    import torch_xla

    return torch_xla.device()


def _register_device_module() -> None:
    """torch.utils.checkpoint (torch 2.9) looks up `torch.<device type>` even with preserve_rng_state=False, and
    torch-xla registers no `torch.xla`. The backend's recomputation uses torch-xla's own checkpoint on XLA
    (platforms/backend/recompute.py: it keeps XLA from merging the recomputation back into the forward), so this
    only keeps any other use of torch.utils.checkpoint on an XLA tensor working: with preserve_rng_state=False
    nothing in the bare module is used."""
    import types

    if not hasattr(torch, "xla"):
        torch._register_device_module("xla", types.ModuleType("torch.xla", "placeholder for torch.utils.checkpoint"))


def sync() -> None:
    """Cuts the lazy graph here and runs it (torch_xla.sync; xm.mark_step before 2.6)."""
    import torch_xla

    torch_xla.sync()


def mesh():
    """The one-axis device mesh of SPMD ('fsdp': every device), or None with one device."""
    if not spmd():
        return None
    import numpy as np
    import torch_xla.distributed.spmd as xs
    import torch_xla.runtime as xr

    n = xr.global_runtime_device_count()
    return xs.Mesh(np.arange(n), (n,), ("fsdp",))


def shard_rows(t: torch.Tensor) -> None:
    """SPMD: t sharded along its first dimension (rows) over the mesh, where the mesh divides it and t is not
    sharded yet. The rollout splits its rows and their KV cache, which grow with the batch; its weights stay
    replicated (data-parallel decode: sharded weights would be all-gathered at every token)."""
    m = mesh()
    if m is None or t.dim() == 0 or t.shape[0] % m.size():
        return
    import torch_xla
    import torch_xla.distributed.spmd as xs

    if "devices=" not in torch_xla._XLAC._get_xla_sharding_spec(t):
        xs.mark_sharding(t, m, ("fsdp",) + (None,) * (t.dim() - 1))


def make_rollout(model_dir: str | Path, *, seed: int = 0, dtype: str = "float32",
                 options: RolloutConfig | None = None, prompt_tokens: int | None = None):
    dev = device()
    set_matmul_precision(dtype)
    return torch_rollout(model_dir, dev, NAME, seed, dtype, options, mark_step=sync, prompt_tokens=prompt_tokens,
                         shard_rows=shard_rows if spmd() else None)


def make_learner(model_dir: str | Path, cfg: TrainConfig) -> TorchLearner:
    if cfg.objective.compile and dist.is_main():
        print("--platform xla: the objective is traced into the training step's XLA graph, not torch.compile'd "
              "(--objective.compile has no effect here)", flush=True)
    dev = device()
    set_matmul_precision(cfg.model.dtype)
    plan = ParallelPlan(device=dev, compute_dtype=DTYPES[cfg.model.dtype],
                        activation_checkpointing=cfg.model.activation_checkpointing,
                        static=StaticShapes(min_length=MIN_LENGTH, cut=sync, mesh=mesh()),
                        attention=ATTENTION)
    return TorchLearner(model_dir, cfg, plan, platform=NAME)


__all__ = ["DIST_BACKEND", "NAME", "check_available", "check_single_host", "device", "make_learner", "make_rollout",
           "mesh", "set_matmul_precision", "shard_rows", "spmd", "sync"]
