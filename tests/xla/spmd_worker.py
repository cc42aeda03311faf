"""One learner update on a fixed batch, for tests/xla/test_xla_platform.py: `python -m tests.xla.spmd_worker
MODEL_DIR OUT.json` under PJRT_DEVICE=CPU CPU_NUM_DEVICES=4 runs it on the XLA platform's SPMD learner and writes
the metrics and the weight update; `one_update("cpu", ...)` is the same on the CPU platform. With a third argument
`lora`, the same for a LoRA learner (`lora_update`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from platforms import get_platform
from remix.batching import collate
from remix.config import LoRAConfig
from remix.interfaces import Group
from tests.helpers import small_config


def fixed_batch(tokenizer, pad_id):
    g = torch.Generator().manual_seed(0)
    prompts = [tokenizer(t)["input_ids"] for t in ("What is 1 + 2?", "7 * 8 =", "Hi", "Compute 4 - 1.")]
    groups = [Group(prompt_ids=p, responses=[torch.randint(3, 300, (3 + i + j,), generator=g).tolist()
                                             for j in range(2)], rewards=[0.0, 1.0], version=1)
              for i, p in enumerate(prompts)]
    batch = collate(groups, pad_id)
    base = -5 + torch.rand(batch.response_mask.shape, generator=g)
    batch.fields.update(behav_logp=base + 0.1, prox_logp=base.clone(), ref_logp=base - 0.1, prev_logp=base + 0.05,
                        advantages=torch.randn(len(batch), 1, generator=g).expand_as(base).clone())
    return batch


UPDATE_CONFIG = dict(batch_size=8, mini_batch_size=8, micro_batch_size=4)


def one_update(platform: str, model_dir, learner=None) -> tuple[dict, torch.Tensor]:
    """(metrics, flattened weight update) of one update of mini-batch 8, micro-batch 4."""
    from transformers import AutoTokenizer

    if learner is None:
        learner = get_platform(platform).make_learner(model_dir, small_config(model_dir, **UPDATE_CONFIG))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = fixed_batch(tokenizer, tokenizer.pad_token_id)
    before = {k: v.detach().cpu().clone() for k, v in learner.policy_weights()}
    metrics = learner.update(batch, kl_lambda=0.8)
    after = {k: v.detach().cpu() for k, v in learner.policy_weights()}
    delta = torch.cat([(after[k] - before[k]).flatten() for k in sorted(before)])
    return metrics, delta


PROMPTS = ("What is 1 + 2?", "7 * 8 =", "Hi", "Compute 4 - 1.", "2 + 2 =", "Name a prime.", "9 - 3 =", "Go")


def generations(platform: str, model_dir) -> tuple[list[list[int]], object]:
    """(the response tokens of PROMPTS, the rollout) sampled at temperature 1 with the seed of small_config."""
    from remix.interfaces import SamplingParams

    cfg = small_config(model_dir)
    rollout = get_platform(platform).make_rollout(model_dir, seed=cfg.seed, options=cfg.rollout)
    prompts = [rollout.tokenizer(t)["input_ids"] for t in PROMPTS]
    gens = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=cfg.rollout.max_new_tokens))
    return [g[0].token_ids for g in gens], rollout


LORA_UPDATE_CONFIG = dict(UPDATE_CONFIG, lora=LoRAConfig(rank=4, alpha=8.0))


def lora_update(platform: str, model_dir, learner=None) -> dict:
    """One update of a LoRA learner (rank 4) with the precedent snapshotted before it: the metrics, the update of
    the merged weights, and the three policies' log-probs of the batch afterwards."""
    from transformers import AutoTokenizer

    if learner is None:
        learner = get_platform(platform).make_learner(model_dir, small_config(model_dir, **LORA_UPDATE_CONFIG))
    learner.snapshot_precedent()
    metrics, delta = one_update(platform, model_dir, learner)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = fixed_batch(tokenizer, tokenizer.pad_token_id)
    logprobs = {policy: learner.logprobs(batch, policy).cpu().tolist() for policy in ("current", "reference",
                                                                                      "precedent")}
    return {"metrics": metrics, "delta": delta.tolist(), "logprobs": logprobs}


def sharding_counts(learner, module=None) -> dict[str, int]:
    """Of the parameters of `module` (the policy by default) that divide over the mesh: how many there are, how many
    are sharded, and how many of their AdamW moments are."""
    import torch_xla

    def sharded(t) -> bool:
        return "devices=" in torch_xla._XLAC._get_xla_sharding_spec(t)

    n = learner.plan.static.mesh.size()
    params = [p for p in (module or learner.policy).parameters() if p.dim() > 0 and p.shape[0] % n == 0]
    moments = [v for p in params for k, v in learner.optimizer.state.get(p, {}).items() if k.startswith("exp_avg")]
    return {"shardable": len(params), "sharded": sum(map(sharded, params)), "moments": len(moments),
            "sharded_moments": sum(map(sharded, moments))}


def saved_and_loaded(learner, model_dir, cfg, folder: Path):
    """A fresh XLA learner loaded from `learner`'s checkpoint in `folder`, and whether its weights are the same."""
    learner.save_state(folder)
    resumed = get_platform("xla").make_learner(model_dir, cfg)
    resumed.load_state(folder)
    same = all(torch.equal(a.cpu(), b.cpu()) for (_, a), (_, b) in zip(learner.policy_weights(),
                                                                      resumed.policy_weights()))
    return resumed, same


def lora_main(model_dir: Path, out: Path) -> None:
    """lora_update on the SPMD learner, with how its base weights, adapter and AdamW moments are sharded, and a
    save/load of its state into a fresh learner."""
    import torch_xla.runtime as xr

    learner = get_platform("xla").make_learner(model_dir, small_config(model_dir, **LORA_UPDATE_CONFIG))
    result = lora_update("xla", model_dir, learner)
    adapter = [p for name, p in learner.policy.named_parameters() if "lora_" in name]
    base = [p for name, p in learner.policy.named_parameters() if "lora_" not in name]
    resumed, same = saved_and_loaded(learner, model_dir, small_config(model_dir, **LORA_UPDATE_CONFIG),
                                     out.parent / "checkpoint")
    out.write_text(json.dumps({**result, "devices": xr.global_runtime_device_count(),
                               "trained": sharding_counts(learner), "resumed": sharding_counts(resumed),
                               "trainable": sum(p.requires_grad for p in learner.policy.parameters()),
                               "adapter": len(adapter), "frozen_base": sum(not p.requires_grad for p in base),
                               "resumed_weights_equal": same}))


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    import torch_xla.runtime as xr

    from platforms import xla

    assert xla.spmd(), "run with CPU_NUM_DEVICES > 1"
    if sys.argv[3:] == ["lora"]:
        lora_main(model_dir, out)
        return
    import torch_xla

    cfg = small_config(model_dir, **UPDATE_CONFIG)
    learner = get_platform("xla").make_learner(model_dir, cfg)
    micro_specs = []  # the sharding of each micro-batch the policy's forward is handed during the update
    hook = learner.policy.register_forward_pre_hook(
        lambda module, args: micro_specs.append(torch_xla._XLAC._get_xla_sharding_spec(args[0].input_ids)))
    metrics, delta = one_update("xla", model_dir, learner)
    hook.remove()
    trained = sharding_counts(learner)
    # the precedent's per-step copy of the policy (snapshot_precedent): does an XLA-to-XLA copy keep the sharding,
    # or must every step shard it again?
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    set_model_state_dict(learner.precedent, get_model_state_dict(learner.policy))
    precedent = sharding_counts(learner, learner.precedent)
    # a checkpoint of the updated learner, loaded into a fresh one: the same weights, sharded as before
    resumed, same = saved_and_loaded(learner, model_dir, cfg, out.parent / "checkpoint")
    from platforms.backend.kv_cache import cache_tensors

    tokens, rollout = generations("xla", model_dir)
    cache_specs = [torch_xla._XLAC._get_xla_sharding_spec(t) for c in rollout._caches.values()
                   for t in cache_tensors(c)]
    out.write_text(json.dumps({"devices": xr.global_runtime_device_count(), "metrics": metrics,
                               "rollout_tokens": tokens, "rollout_cache_shardings": cache_specs,
                               "delta": delta.tolist(), "micro_batch_shardings": micro_specs, "trained": trained,
                               "resumed": sharding_counts(resumed), "resumed_weights_equal": same,
                               "precedent_after_copy": precedent}))


if __name__ == "__main__":
    main()
