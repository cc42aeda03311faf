"""LoRA (--lora.rank): one model, an adapter that trains, the anchors as the adapter off or snapshots swapped in
(platforms/backend/lora.py), merged weights for the engine, adapter-only checkpoints."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch

pytest.importorskip("peft")

from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.distributed.checkpoint import FileSystemReader  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from platforms.backend import ParallelPlan, TorchLearner, plan_for  # noqa: E402
from remix.batching import collate  # noqa: E402
from platforms.backend import lora  # noqa: E402
from remix.config import LoRAConfig, ModelConfig, ReMixConfig  # noqa: E402
from remix.interfaces import Group  # noqa: E402
from remix.validation import ConfigError  # noqa: E402
from tests.helpers import small_config  # noqa: E402

LORA = LoRAConfig(rank=4, alpha=8.0)


def _batch(rows: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    groups = []
    for i in range(rows // 2):
        prompt = torch.randint(3, 60, (5 + i % 3,), generator=g).tolist()
        responses = [torch.randint(3, 60, (3 + (i + j) % 4,), generator=g).tolist() for j in range(2)]
        groups.append(Group(prompt_ids=prompt, responses=responses, rewards=[1.0, 0.0], version=1,
                            advantages=[1.0, -1.0]))
    batch = collate(groups, pad_id=0)
    T = batch.response_mask.shape[1]
    for name in ("behav_logp", "prox_logp", "ref_logp", "prev_logp"):
        batch.fields[name] = torch.zeros(len(batch), T)
    batch.fields["advantages"] = batch.fields["seq_advantage"][:, None] * batch.response_mask
    return batch


def _learner(model_dir, lora=LORA, activation_checkpointing=False, **overrides):
    cfg = small_config(model_dir, lora=lora, **overrides)
    cfg = replace(cfg, model=replace(cfg.model, activation_checkpointing=activation_checkpointing))
    return TorchLearner(model_dir, cfg, plan_for(cfg, torch.device("cpu")))


def _fill_anchors(learner, batch):
    prox = learner.logprobs(batch, "current")
    batch.fields.update(behav_logp=prox, prox_logp=prox, ref_logp=learner.logprobs(batch, "reference"),
                        prev_logp=prox)


def test_only_the_adapter_trains_and_the_reference_is_the_base_model(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    full = _learner(tiny_model_dir, lora=LoRAConfig())  # the same base, full finetuning
    batch = _batch()
    base_logp = full.logprobs(batch, "current")
    assert torch.equal(learner.logprobs(batch, "current"), base_logp)  # B = 0: the policy starts as the base model
    trainable = {n for n, p in learner.policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(p.numel() for g in learner.optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for n, p in learner.policy.named_parameters() if n in trainable)
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    for _ in range(2):
        _fill_anchors(learner, batch)
        learner.update(batch, kl_lambda=1.0)
    changed = {n for n, p in learner.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any(".lora_A." in n for n in changed)  # B moved first, then A gets a gradient too
    assert not torch.equal(learner.logprobs(batch, "current"), base_logp)
    assert torch.equal(learner.logprobs(batch, "reference"), base_logp)  # the adapter off: the base model exactly
    assert torch.equal(full.logprobs(batch, "reference"), base_logp)


def test_precedent_is_the_previous_step_and_reincarnation_keeps_the_adapter_at_T(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    plain = _learner(tiny_model_dir, lora=LoRAConfig())
    batch = _batch()
    base = plain.logprobs(batch, "current")
    assert torch.equal(learner.logprobs(batch, "precedent"), base)  # before step 2: the initial model
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=1.0)
    learner.snapshot_precedent()
    at_snapshot = learner.logprobs(batch, "current")
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=1.0)
    now = learner.logprobs(batch, "current")
    assert not torch.equal(now, at_snapshot)
    assert torch.equal(learner.logprobs(batch, "precedent"), at_snapshot)
    assert torch.equal(learner.logprobs(batch, "current"), now)  # swapped back, bit for bit
    learner.reincarnate_reference()
    assert torch.equal(learner.logprobs(batch, "reference"), now)
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=1.0)
    assert torch.equal(learner.logprobs(batch, "reference"), now)  # the reference stays the policy of step T
    assert not torch.equal(learner.logprobs(batch, "current"), now)


def test_merged_weights_equal_peft_merge_and_unload(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    batch = _batch()
    for _ in range(2):
        _fill_anchors(learner, batch)
        learner.update(batch, kl_lambda=1.0)
    sent = dict(learner.policy_weights())
    reference = copy.deepcopy(learner.policy.lm).merge_and_unload().state_dict()
    assert list(sent) == list(reference) == list(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict())
    assert all(torch.equal(sent[k], reference[k]) for k in sent)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sent[q], base[q])
    # the learner's own base weights are untouched
    own = learner.policy.lm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(own, base[q])


def test_checkpoint_holds_the_adapter_alone_and_resumes_exactly(tiny_model_dir, tmp_path):
    cfg_kwargs = dict(remix=ReMixConfig(reincarnation_step=1))
    learner = _learner(tiny_model_dir, **cfg_kwargs)
    batch = _batch()
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=0.5)
    learner.snapshot_precedent()
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=0.5)
    learner.reincarnate_reference()
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=0.5)
    learner.save_state(tmp_path / "ck")
    assert not (tmp_path / "ck" / "model").exists()
    adapter = tmp_path / "ck" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    # no base weight anywhere: the adapter file and the DCP state hold adapter tensors (and their moments) only
    assert all(".lora_" in k for k in load_file(adapter / "adapter_model.safetensors"))
    dcp_keys = FileSystemReader(tmp_path / "ck" / "state").read_metadata().state_dict_metadata
    tensor_keys = [k for k in dcp_keys if not k.endswith(("step", "lr", "betas", "eps", "weight_decay", "amsgrad",
                                                            "maximize", "foreach", "capturable", "differentiable",
                                                            "fused", "decoupled_weight_decay", "params"))]
    assert tensor_keys and all(".lora_" in k for k in tensor_keys), tensor_keys
    # peft loads the adapter folder onto the base model: the same policy
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in learner.policy.lm.state_dict().items())

    resumed = _learner(tiny_model_dir, **cfg_kwargs)
    resumed.load_state(tmp_path / "ck")
    for name in ("current", "reference", "precedent"):
        assert torch.equal(resumed.logprobs(batch, name), learner.logprobs(batch, name)), name
    for learner_ in (learner, resumed):
        _fill_anchors(learner_, batch)
        learner_.update(batch, kl_lambda=0.5)
    assert all(torch.equal(a, b) for a, b in zip(learner.policy.parameters(), resumed.policy.parameters()))

    with pytest.raises(ValueError, match="--lora.rank 4, this run has --lora.rank 0"):
        _learner(tiny_model_dir, lora=LoRAConfig(), **cfg_kwargs).load_state(tmp_path / "ck")


def test_ppo_critic_gets_an_adapter_and_a_whole_value_head(tiny_model_dir):
    learner = _learner(tiny_model_dir, algo="ppo")
    trainable = {n for n, p in learner.critic.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(n.startswith("head.") or ".lora_" in n for n in trainable)


def test_dropout_acts_in_updates_only(tiny_model_dir):
    batch = _batch()
    learners = [_learner(tiny_model_dir, lora=replace(LORA, dropout=d)) for d in (0.0, 0.5)]
    first = [lr.logprobs(batch, "current") for lr in learners]
    assert torch.equal(first[0], first[1])  # log-prob passes never drop
    torch.manual_seed(0)
    for lr in learners:
        _fill_anchors(lr, batch)
        lr.update(batch, kl_lambda=1.0)
        lr.update(batch, kl_lambda=1.0)
    after = [lr.logprobs(batch, "current") for lr in learners]
    assert not torch.equal(after[0], after[1])
    assert torch.equal(learners[1].logprobs(batch, "current"), after[1])


def test_activation_checkpointing_gives_the_same_update(tiny_model_dir):
    """With the base frozen only the adapter needs gradients; the blocks are recomputed in the backward pass all
    the same (the embedding's output requires grad: a reentrant checkpoint, XLA's, would otherwise cut them out)."""
    batch = _batch()
    learners = [_learner(tiny_model_dir, activation_checkpointing=ac) for ac in (False, True)]
    assert learners[1].plan.activation_checkpointing
    for lr in learners:
        _fill_anchors(lr, batch)
        lr.update(batch, kl_lambda=1.0)
    a, b = (dict(lora.adapter_parameters(lr.policy)) for lr in learners)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in a.items() if ".lora_B." in n)  # it trained
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-7, msg=name)


@pytest.mark.parametrize("modules, message", [
    (("nope",), "--lora.target-modules nope: Target modules"),
    (("embed_tokens",), "linear layers of the transformer blocks only, not on base_model.model.model.embed_tokens"),
])
def test_adapters_outside_the_blocks_are_refused_in_one_line(tiny_model_dir, modules, message):
    with pytest.raises(ConfigError, match=message):
        _learner(tiny_model_dir, lora=LoRAConfig(rank=4, target_modules=modules))


def test_dropout_with_activation_checkpointing_is_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="--lora.dropout: dropout with --model.activation-checkpointing"):
        small_config(lora=LoRAConfig(rank=4, dropout=0.1),
                     model=ModelConfig(name=str(tiny_model_dir), activation_checkpointing=True))


@pytest.mark.parametrize("lora, field", [
    (dict(rank=0, sync="adapter"), "lora.sync"),
    (dict(rank=4, sync="adapter"), "lora.sync"),  # the torch engine takes merged weights only
    (dict(rank=-1), "lora.rank"),
    (dict(rank=4, dropout=1.0), "lora.dropout"),
    (dict(rank=4, target_modules=()), "lora.target-modules"),
])
def test_bad_lora_flags_name_the_flag(tiny_model_dir, lora, field):
    with pytest.raises(ConfigError, match=f"--{field.replace('_', '-')}"):
        small_config(tiny_model_dir, lora=LoRAConfig(**lora))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rank", [0, 4])
def test_bytes_held_equal_the_prediction_from_the_shape(tiny_model_dir, rank, dtype):
    """bench/lora.py counts what the learner holds tensor by tensor, and predicts it for any size from the shape
    on the meta device (its 1.5B and 7B rows): the two agree exactly here, before and after reincarnation."""
    from transformers import AutoConfig

    from bench.lora import learner_bytes, predicted_bytes

    cfg = small_config(tiny_model_dir, lora=LoRAConfig(rank=rank, alpha=8.0) if rank else LoRAConfig())
    cfg = replace(cfg, model=replace(cfg.model, dtype=dtype))
    learner = TorchLearner(tiny_model_dir, cfg, ParallelPlan(device=torch.device("cpu"),
                                                             compute_dtype=getattr(torch, dtype)))
    batch = _batch()
    _fill_anchors(learner, batch)
    learner.update(batch, kl_lambda=0.5)
    shape = AutoConfig.from_pretrained(tiny_model_dir).to_dict()
    assert learner_bytes(learner) == predicted_bytes(shape, rank, dtype)
    learner.reincarnate_reference()
    assert learner_bytes(learner) == predicted_bytes(shape, rank, dtype, reincarnated=True)
    if rank:  # under half of full finetuning's even on this 2-layer model of width 32 (rank 4 is large beside it)
        full = sum(predicted_bytes(shape, 0, dtype).values())
        assert sum(learner_bytes(learner).values()) < 0.5 * full
