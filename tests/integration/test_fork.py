"""--fork-from: a run started from another run's checkpoint computes what it would have computed from step 0,
where the two configs agree through that step; --checkpoint-steps keeps the checkpoints it starts from; a fork
that cannot load is refused before anything is written."""

from __future__ import annotations

import dataclasses
import json

import pytest

from remix.checkpoint import checkpoint_dir, list_checkpoints
from remix.config import LoRAConfig, ReMixConfig
from remix.runner import RunError
from tests.helpers import final_weights, run, run_metrics_without_times, same_weights, small_config

STEPS = 4


def _config(model_dir, run_dir, **remix):
    cfg = small_config(model_dir, steps=STEPS, eval_every=2, run_dir=run_dir, checkpoint_every=0,
                       remix=ReMixConfig(**{"reincarnation_step": 3, **remix}))
    # a random model scores 0 everywhere (zero advantages): the entropy bonus makes every update move the weights
    return dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, entropy_coef=0.01))


@pytest.fixture(scope="module")
def base_run(tiny_model_dir, tmp_path_factory):
    """ReMix with reincarnation at step 3, keeping its checkpoint at step 2 besides the final one."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    run(dataclasses.replace(_config(tiny_model_dir, run_dir), checkpoint_steps=(2,)))
    return run_dir


def test_a_fork_computes_what_the_same_run_from_step_0_does(tiny_model_dir, base_run, tmp_path):
    assert [p.name for p in list_checkpoints(base_run)] == ["step-000002", "step-000004"]
    # without reincarnation: the same as the base run through step 2 (it reincarnates at the end of step 3)
    straight = tmp_path / "straight"
    run(_config(tiny_model_dir, straight, reincarnation_step=None))
    forked = tmp_path / "forked"
    summary = run(dataclasses.replace(_config(tiny_model_dir, forked, reincarnation_step=None),
                                      fork_from=checkpoint_dir(base_run, 2)))
    assert run_metrics_without_times(forked) == run_metrics_without_times(straight)
    assert same_weights(final_weights(forked), final_weights(straight))
    assert not same_weights(final_weights(forked), final_weights(base_run))  # it did train on differently
    assert summary["forked_from_step"] == 2 and summary["resumed_from_step"] is None and summary["steps"] == STEPS
    prov = json.loads((forked / "config.json").read_text())["provenance"]
    assert prov["forked_from"]["step"] == 2
    assert prov["forked_from"]["checkpoint"] == str(checkpoint_dir(base_run, 2).absolute())
    assert json.loads((straight / "summary.json").read_text())["forked_from_step"] is None


def test_a_run_with_checkpoint_steps_computes_the_same(tiny_model_dir, base_run, tmp_path):
    plain = tmp_path / "plain"
    run(_config(tiny_model_dir, plain))
    assert run_metrics_without_times(plain) == run_metrics_without_times(base_run)
    assert same_weights(final_weights(plain), final_weights(base_run))
    assert [p.name for p in list_checkpoints(plain)] == ["step-000004"]


def test_a_lora_fork_computes_what_the_same_lora_run_from_step_0_does(tiny_model_dir, tmp_path):
    """The adapter, its optimizer state and the precedent snapshot carry over; a full-finetuning config cannot
    fork a LoRA checkpoint."""
    lora = LoRAConfig(rank=4, alpha=8.0)
    base = tmp_path / "base"
    run(dataclasses.replace(_config(tiny_model_dir, base), lora=lora, checkpoint_steps=(2,)))
    straight, forked = tmp_path / "straight", tmp_path / "forked"
    run(dataclasses.replace(_config(tiny_model_dir, straight, reincarnation_step=None), lora=lora))
    run(dataclasses.replace(_config(tiny_model_dir, forked, reincarnation_step=None), lora=lora,
                            fork_from=checkpoint_dir(base, 2)))
    assert run_metrics_without_times(forked) == run_metrics_without_times(straight)
    assert same_weights(final_weights(forked), final_weights(straight))
    assert (forked / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(RunError, match="--fork-from .*lora.rank: 4 there, 0 here"):
        run(dataclasses.replace(_config(tiny_model_dir, tmp_path / "full"), fork_from=checkpoint_dir(base, 2)))


@pytest.mark.parametrize("change, message", [
    ({"fork_from": "nowhere/checkpoints/step-000002"}, "not a complete checkpoint"),
    ({"algo": "ppo"}, "algo: 'grpo' there, 'ppo' here"),
    ({"batch_size": 8, "mini_batch_size": 8}, "batch_size: 16 there, 8 here"),
    ({"steps": 2}, "not before --steps 2"),
])
def test_a_fork_that_cannot_load_is_refused_before_anything_is_written(tiny_model_dir, base_run, tmp_path, change,
                                                                        message):
    cfg = dataclasses.replace(_config(tiny_model_dir, tmp_path / "fork"), fork_from=checkpoint_dir(base_run, 2))
    with pytest.raises(RunError, match="--fork-from .*" + message.replace("(", r"\(")):
        run(dataclasses.replace(cfg, **change))
    assert not (tmp_path / "fork").exists()


def test_a_fork_needs_the_precedent_policy_it_uses(tiny_model_dir, tmp_path):
    base = tmp_path / "no-kl-convex"
    run(dataclasses.replace(_config(tiny_model_dir, base, kl_convex=False), steps=2, checkpoint_steps=(1,)))
    cfg = dataclasses.replace(_config(tiny_model_dir, tmp_path / "fork"), fork_from=checkpoint_dir(base, 1))
    with pytest.raises(RunError, match="precedent policy"):
        run(cfg)
    assert not (tmp_path / "fork").exists()
