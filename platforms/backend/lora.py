"""LoRA (through peft): one base model and small adapters in place of ReMix's three full weight copies.

With `--lora.rank R > 0` the learner's policy is the base model with a LoRA adapter on the projections of every
transformer block; only the adapter is trained and held by AdamW. The two KL anchors need no model of their own:

- reference pi_ref: the policy with the adapter switched off (peft's `disable_adapter`), which *is* the base
  model, exactly. Reincarnation (ALGORITHM.md section 6: the reference becomes the policy at T) keeps a snapshot
  of the adapter at T, the *reference adapter*, and afterwards the reference is the policy with that snapshot
  swapped in. The alternative, merging the adapter into the base weights and starting a fresh one, was not
  chosen: it would change the base weights (checkpoints would then have to hold them), round them again in bf16
  runs, and restart the adapter's AdamW state, which ALGORITHM.md keeps across reincarnation.
- precedent pi_{k-1}: the policy with the snapshot of the adapter taken at the start of the step swapped in.

Swapping copies adapter tensors (megabytes) into the policy's adapter parameters and back after the pass; the
results are those of a second model holding that adapter, bit for bit (the same modules compute them).

The rollout engine receives merged weights, W + (B @ A) * alpha / r per adapted layer under the base model's own
names, computed tensor by tensor as the stream goes out (the learner's base weights are never modified); the
values equal peft's `merge_and_unload()`. Checkpoints hold the adapter, its optimizer state and the snapshots;
the base weights are the model folder's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from platforms.backend.parallel import full_tensor
from remix.config import LoRAConfig
from remix.models import quiet_peft
from remix.validation import ConfigError

ADAPTER = "default"  # peft's name of the one adapter


def add_adapter(model: nn.Module, options: LoRAConfig, seed: int) -> nn.Module:
    """`model` (an HF model, float32) wrapped by peft with a fresh LoRA adapter: B = 0, so the policy starts as the
    base model. peft freezes every base weight and leaves the adapter trainable; parameters outside `model` (the
    PPO critic's value head) keep theirs. A is drawn from `seed` alone, not from the process's random state: every
    process of a job (FSDP2 keeps each rank's shard of its own copy) and every run with that seed start alike.

    Adapters go on linear layers of the transformer blocks only (anything else is refused in one line): the merged
    weight stream, the FSDP2 units (one per block, the root resharded only by backward) and SGLang's adapter
    format assume that. The embedding's output is made to require grad (HF's `enable_input_require_grads`):
    with the base frozen nothing upstream of the first block would, and a reentrant activation checkpoint (XLA's)
    then cuts every block out of the backward pass."""
    try:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # the config refuses --lora.rank without peft; this is for callers that bypass it
        raise ImportError("--lora.rank needs peft: pip install 'remix-rft[lora]'") from None
    flag = f"--lora.target-modules {' '.join(options.target_modules)}"
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), bias="none")
    try:
        with quiet_peft(), torch.random.fork_rng(devices=[]):
            # the CPU generator alone (the model is on the host): torch.manual_seed would reseed CUDA's too
            torch.default_generator.manual_seed(seed)
            peft_model = get_peft_model(model, config)
    except ValueError as e:  # e.g. no module matches
        raise ConfigError(f"{flag}: {e}") from None
    outside = [name for name, m in _lora_layers(peft_model).items()
               if not isinstance(m, LoraLinear) or ".layers." not in f".{name}."]
    if outside:
        raise ConfigError(f"{flag}: adapters go on the linear layers of the transformer blocks only, not on "
                          f"{', '.join(sorted(outside)[:3])}")
    peft_model.enable_input_require_grads()
    return peft_model


def adapter_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters of a LoRA policy (the adapter), in a fixed order."""
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def whole_adapter(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The adapter of the peft `model` as (name in `model`, whole tensor) pairs, one at a time (collective under
    FSDP2: every rank gathers each tensor)."""
    for name, p in adapter_parameters(model):
        yield name, full_tensor(p).detach()


def copy_adapter(module: nn.Module) -> dict[str, torch.Tensor]:
    """A snapshot of the adapter: detached copies, on the parameters' device and sharding."""
    return {name: p.detach().clone() for name, p in adapter_parameters(module)}


@contextmanager
def adapter_swapped_in(module: nn.Module, snapshot: dict[str, torch.Tensor]):
    """Inside, `module`'s adapter holds `snapshot`; afterwards its own values again (bit for bit)."""
    params = dict(adapter_parameters(module))
    live = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(snapshot[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(live[name])


@contextmanager
def adapter_disabled(module: nn.Module):
    """Inside, every adapter of `module` is switched off (the base model computes). peft's `disable_adapter` also
    sets the adapter's requires_grad to False and back, which FSDP2 would read if this were a sharded model's first
    forward pass (the adapter would then never train); only the flag its layers' forward reads is set here."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    before = [m._disable_adapters for m in layers]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m._disable_adapters = b


@contextmanager
def adapter_dropout(module: nn.Module, enabled: bool):
    """peft's adapter dropout on inside (it is an nn.Dropout, and the learner keeps every module in eval mode so
    that its log-prob passes are deterministic): only the gradient passes of an update drop."""
    drops = [m for name, m in module.named_modules() if name.split(".")[-1] == "lora_dropout"] if enabled else []
    for m in drops:
        m.train()
    try:
        yield
    finally:
        for m in drops:
            m.eval()


def _lora_layers(base: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


def delta_weight(layer: nn.Module) -> torch.Tensor:
    """(B @ A) * scaling of one adapted linear layer, as peft computes it (`LoraLayer.get_delta_weight`), from
    whole tensors (gathered where FSDP2 shards them)."""
    a, b = full_tensor(layer.lora_A[ADAPTER].weight), full_tensor(layer.lora_B[ADAPTER].weight)
    delta = (b.float() @ a.float()) * layer.scaling[ADAPTER]
    return delta.T if layer.fan_in_fan_out else delta


def merged_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of the policy with its adapter merged, under the base model's state-dict names and order, one
    tensor at a time (collective under FSDP2: every rank gathers each tensor). Each adapted weight is W + delta,
    as `merge_and_unload()` computes it, in float32: in bf16 plans W is stored in bf16 and a delta added in bf16
    would lose most of its bits (an engine that samples in bf16 then rounds the sum once). The model itself is not
    modified; weights without an adapter go out as stored."""
    base = model.get_base_model()
    layers = _lora_layers(base)
    for key, tensor in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if any(part.startswith("lora_") for part in owner.split(".")):
            continue  # the adapter's own tensors
        if owner.endswith(".base_layer") and owner[:-len(".base_layer")] in layers:
            name = owner[:-len(".base_layer")]
            full = full_tensor(tensor).detach()
            if leaf == "weight":  # float32 + float32: bit for bit peft's merge of a float32 model
                full = full.float() + delta_weight(layers[name])
            yield f"{name}.{leaf}", full
        else:
            yield key, full_tensor(tensor).detach()


def peft_format(model: nn.Module, adapter: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json's contents, tensors under peft's saved names: `...q_proj.lora_A.weight`) from whole
    tensors under the model's own names (`...q_proj.lora_A.default.weight`), as `save_pretrained` writes them."""
    from peft import get_peft_model_state_dict

    config = model.peft_config[ADAPTER].to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set in peft's config: JSON and SGLang take lists
    return config, get_peft_model_state_dict(model, state_dict=adapter, adapter_name=ADAPTER)


def save_adapter(model: nn.Module, adapter: dict[str, torch.Tensor], folder) -> None:
    """The adapter as peft saves it (adapter_config.json, adapter_model.safetensors): loadable with
    `PeftModel.from_pretrained(base_model, folder)`. `adapter`: whole host tensors under the model's own names."""
    model.save_pretrained(folder, state_dict=adapter, safe_serialization=True)
