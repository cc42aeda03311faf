"""`remix.runner.run` end to end on a tiny random model: the run directory a user gets."""

from __future__ import annotations

import dataclasses
import json

import torch
from transformers import AutoModelForCausalLM

from remix.tracking import read_metrics
from tests.helpers import build_trainer, run, same_weights, small_config, undocumented_metrics, weights


def test_onpolicy_run_writes_model_metrics_plot_and_summary(tiny_model_dir, tmp_path):
    cfg = small_config(tiny_model_dir, steps=3, eval_every=2, variant="onpolicy", run_dir=tmp_path / "run")
    # A random model scores 0 everywhere (zero advantages): the entropy bonus makes the update non-zero.
    cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, entropy_coef=0.01))
    summary = run(cfg)
    out = tmp_path / "run"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert {"heldout_accuracy_before", "heldout_accuracy_after", "rollouts", "steps", "wall_seconds"} <= set(summary)
    assert summary["steps"] == 3 and summary["rollouts"] == 3 * cfg.batch_size
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [r["step"] for r in records if "heldout/accuracy" in r] == [0, 2, 3]
    assert records[-1]["heldout/accuracy"] == summary["heldout_accuracy_after"]
    # the paper's self-reflection measure, on training samples every step and on held-out responses
    assert all(0 <= r["reflection/keyword_rate"] <= 1 for r in records[1:])
    assert all(0 <= r["heldout/reflection_keyword_rate"] <= 1 for r in records if "heldout/accuracy" in r)
    assert (out / "accuracy.png").stat().st_size > 1000
    saved = json.loads((out / "config.json").read_text())
    assert saved["variant"] == "onpolicy"
    # the run describes itself: where, when, from which commit, with which versions; every row is timestamped
    prov = saved["provenance"]
    assert prov["run_dir"] == str(out.absolute()) and prov["started"] and prov["resumed"] == []
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    assert set(prov["versions"]) == {"python", "torch", "transformers", "math-verify", "remix"}
    assert prov["processes"] == 1
    assert not undocumented_metrics(set().union(*records))  # every name a run writes is in docs/metrics.md
    stamps = [r["time/unix"] for r in records]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] < 3600
    # file modes like the rest of the run directory (the weights were once written 0600)
    assert (out / "model" / "model.safetensors").stat().st_mode & 0o777 == (out / "summary.json").stat().st_mode & 0o777
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    # The saved model is the trained policy, not the starting one.
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not same_weights(weights(model), weights(start))


def test_compiled_objective_trains_like_eager(tiny_model_dir, hash_grader):
    """Two steps with the torch.compile'd objective give the eager run's weights (to float tolerance)."""
    finals = []
    for compile_ in (False, True):
        cfg = small_config(tiny_model_dir, steps=2)
        cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, compile=compile_))
        torch.manual_seed(0)
        trainer = build_trainer(cfg, hash_grader)
        for _ in range(2):
            trainer.train_step()
        finals.append(weights(trainer.learner.policy))
    for k in finals[0]:
        torch.testing.assert_close(finals[1][k], finals[0][k], atol=1e-5, rtol=1e-4)


def test_rollout_grid_and_validation_split(tiny_model_dir, tmp_path):
    """--eval-at-rollouts evaluates at the first step reaching each count (ReMix draws fewer fresh rollouts per
    step than its batch); --data.validation-size evaluates a disjoint split beside held-out."""
    cfg = small_config(tiny_model_dir, steps=5, eval_at_rollouts=(0, 20, 40), run_dir=tmp_path / "run",
                       data=dataclasses.replace(small_config().data, validation_size=4))
    run(cfg)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    rollouts = {r["step"]: r["rollouts"] for r in records}
    evaluated = [r["step"] for r in records if "heldout/accuracy" in r]
    expected = {0, 5} | {min(k for k in rollouts if rollouts[k] >= x) for x in (20, 40)}
    assert evaluated == sorted(expected) and rollouts[1] == 16 and rollouts[2] < 32  # 16, then fewer fresh
    assert all("validation/accuracy" in r for r in records if "heldout/accuracy" in r)
    assert all(r["learner/tokens"] > 0 for r in records if r["step"] >= 1)
    assert not undocumented_metrics(set().union(*records))


def test_validation_split_is_disjoint_and_leaves_held_out_unchanged(tmp_path):
    from remix.data import load_task

    train, heldout, validation = load_task("arith", None, 64, (1, 2, 3), validation_size=32)
    _, heldout_alone, none = load_task("arith", None, 64, (1, 2, 3))
    assert heldout == heldout_alone and none == [] and len(validation) == 32
    texts = [{p.problem for p in split} for split in (train, heldout, validation)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    rows = [json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(50)]
    (tmp_path / "p.jsonl").write_text("\n".join(rows) + "\n")
    train, heldout, validation = load_task("file", tmp_path / "p.jsonl", 5, (1,), validation_size=5)
    assert heldout == load_task("file", tmp_path / "p.jsonl", 5, (1,))[1] and len(validation) == 5
    assert len(train) == 40 and not {p.problem for p in validation} & {p.problem for p in heldout + train}
