"""Every config check on the command line: one line naming the flag, exit status 2, no traceback.

The cases are checked against the source: every `require(...)` in the configs must have a case here,
so a new check cannot be added without showing what its error looks like.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG_SOURCES = [ROOT / "remix" / "config.py", ROOT / "remix" / "objective.py"]

# field of a require(...) -> command-line arguments that break it
CASES: dict[str, list[str]] = {
    "platform": ["--platform", "tpu"],
    "data.task": ["--task", "nope"],
    "data.path": ["--task", "file"],
    "data.heldout_size": ["--data.heldout-size", "0"],
    "data.validation_size": ["--data.validation-size", "-1"],
    "data.max_prompt_tokens": ["--data.max-prompt-tokens", "4"],
    "data.arith_levels": ["--data.arith-levels", "5"],
    "rollout.temperature": ["--rollout.temperature", "0"],
    "rollout.top_p": ["--rollout.top-p", "0.9"],
    "rollout.max_new_tokens": ["--rollout.max-new-tokens", "0"],
    "rollout.group_size": ["--rollout.group-size", "1"],
    "rollout.engine": ["--rollout.engine", "sglang"],  # on the default --platform cpu
    "rollout.weight_sync_bucket_mb": ["--rollout.weight-sync-bucket-mb", "0"],
    "rollout.sglang_mem_fraction": ["--rollout.sglang-mem-fraction", "1.5"],
    "rollout.max_sampler_gap": ["--rollout.max-sampler-gap", "-1"],
    "eval_at_rollouts": ["--eval-at-rollouts", "-5"],
    "optim.lr": ["--optim.lr", "0"],
    "optim.critic_lr": ["--optim.critic-lr", "0"],
    "remix.offpolicy_fraction": ["--remix.offpolicy-fraction", "1.0"],
    "remix.history_window": ["--remix.history-window", "0"],
    "remix.utd_ratio": ["--remix.utd-ratio", "0"],
    "remix.reincarnation_step": ["--remix.reincarnation-step", "0"],
    "remix.lambda_every": ["--remix.lambda-every", "0"],
    "remix.lambda_floor": ["--remix.lambda-floor", "2"],
    "remix.lambda_decay": ["--remix.lambda-decay", "-1"],
    "ppo.gamma": ["--ppo.gamma", "0"],
    "ppo.lam": ["--ppo.lam", "2"],
    "ppo.value_clip": ["--ppo.value-clip", "0"],
    "steps": ["--steps", "0"],
    "batch_size": ["--batch-size", "60"],
    "mini_batch_size": ["--mini-batch-size", "24"],
    "micro_batch_size": ["--micro-batch-size", "3"],
    "eval_every": ["--eval-every", "-1"],
    "logprob_chunk_tokens": ["--logprob-chunk-tokens", "0"],
    "grader_workers": ["--grader-workers", "0"],
    "checkpoint_every": ["--checkpoint-every", "-1"],
    "keep_checkpoints": ["--keep-checkpoints", "0"],
    "checkpoint_steps": ["--checkpoint-steps", "0"],
    "max_consecutive_skips": ["--max-consecutive-skips", "0"],
    "grader_timeout_s": ["--grader-timeout-s", "0"],
    "loggers": ["--loggers", "wandb"],
    "objective.clip_eps": ["--objective.clip-eps", "0"],
    "objective.clip_eps_high": ["--objective.clip-eps-high", "0"],
    "objective.kl_coef": ["--objective.kl-coef", "-1"],
    "objective.loss_agg_constant": ["--objective.loss-agg-constant", "0"],
    "objective.tis_cap": ["--objective.tis-cap", "0"],
    "objective.seq_mis_bounds": ["--objective.seq-mis-bounds", "2", "1"],
    "objective.geo_mis_bounds": ["--objective.geo-mis-bounds", "0", "1"],
    "data.problem_key": ["--data.problem-key", "question"],  # on the arith task
    "data.answer_key": ["--data.answer-key", "solution"],
    "reward_weights": ["--reward", "math", "--reward-weights", "1", "2"],
    "lora.rank": ["--lora.rank", "-1"],
    "lora.alpha": ["--lora.alpha", "0"],
    "lora.dropout": ["--lora.dropout", "1"],
    "lora.sync": ["--lora.sync", "adapter"],  # without --lora.rank
    "lora.target_modules": ["--lora.rank", "4", "--lora.target-modules"],
}
# Checks of a base class shared with eval.math_suite (remix/prompts.py: PromptConfig), whose flag prefix is the
# config's own, and the reward specs, checked by loading them: the same one-line treatment.
SHARED_CASES: dict[str, list[str]] = {
    "data.prompt_template": ["--data.prompt-template", "Solve it."],
    "data.system_prompt": ["--data.system-prompt", "You are terse.", "--data.no-chat-template"],
    "reward": ["--reward", "no_such_file.py:score"],
}
# Checked by the parser itself (a Literal: the flag accepts no other value), so unreachable from the CLI.
PARSER_CHECKED = {"objective.kl_estimator", "objective.loss_agg", "objective.rollout_correction"}


def required_fields() -> set[str]:
    """Every field with a check: the limits declared in the configs' types, and the fields of the hand-written
    `require(...)` calls."""
    from remix import config, objective
    from remix.validation import Checked, limits

    fields = set()
    classes = {c for m in (config, objective) for c in vars(m).values()
               if isinstance(c, type) and issubclass(c, Checked) and c is not Checked}
    for cls in classes:  # every config class, a new one too
        fields |= {cls.FLAG_PREFIX + name for name in limits(cls)}
    for path in CONFIG_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                arg = node.args[1]
                assert isinstance(arg, ast.Constant), f"{path}: require() with a computed field name"
                fields.add(arg.value)
    return fields


def run_script_main():
    spec = importlib.util.spec_from_file_location("run_script", ROOT / "scripts" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_every_check_has_a_case():
    assert required_fields() == set(CASES) | PARSER_CHECKED


@pytest.mark.parametrize("field", sorted(CASES | SHARED_CASES))
def test_bad_value_is_one_line_naming_the_flag_with_exit_2(field, capsys):
    if field == "loggers" and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed: --loggers wandb is valid here")
    with pytest.raises(SystemExit) as e:
        run_script_main()((CASES | SHARED_CASES)[field])
    err = capsys.readouterr().err
    flag = "--" + field.replace("_", "-")
    assert e.value.code == 2
    assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_the_messages_name_the_numbers_and_the_right_platform(monkeypatch):
    from remix.config import TrainConfig
    from remix.validation import ConfigError

    with pytest.raises(ConfigError, match="^--platform: 'tpu' is not a platform; .*TPUs are --platform xla"):
        TrainConfig(platform="tpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: checked before the process group forms
    with pytest.raises(ConfigError, match=r"^--batch-size: 30 is not a multiple of 16 = --rollout.group-size 8 x 2 "):
        TrainConfig(batch_size=30)


def test_run_dir_help_shows_one_default():
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), "--help"], capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "80"}).stdout  # one column
    block = out[out.index("--run-dir"):out.index("--eval-every")]
    assert block.count("default") == 1 and "runs/<algo>-<variant>-<time>" in block


def test_eval_suite_bad_value_is_one_line(capsys):
    from eval.math_suite import cli

    with pytest.raises(SystemExit) as e:
        cli(["--model", "m", "--samples", "4"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --samples: ") and err.count("\n") == 1


@pytest.mark.parametrize("platform, needle", [("xla", "torch_xla is not installed"),
                                               ("cuda", "no CUDA device is visible")])
def test_unavailable_platform_is_one_line(capsys, platform, needle):
    import torch

    if platform == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is visible: --platform cuda is available here")
    if platform == "xla" and importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed: --platform xla is available here")
    with pytest.raises(SystemExit) as e:
        run_script_main()(["--platform", platform])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: --platform {platform}: {needle}") and err.count("\n") == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_a_second_signal_is_one_line_with_its_exit_status(capsys, monkeypatch):
    import remix.runner

    def stopped(cfg, platform):
        raise remix.runner.StoppedAtOnce(15)

    main = run_script_main()
    monkeypatch.setitem(main.__globals__, "run", stopped)  # the script's own name for remix.runner.run
    with pytest.raises(SystemExit) as e:
        main([])
    err = capsys.readouterr().err
    assert e.value.code == 143 and err.startswith("stopped at once by a second SIGTERM") and err.count("\n") == 1


def test_a_checkpoint_of_another_format_is_refused_in_one_line(capsys, tmp_path):
    import json

    run_dir = tmp_path / "old"
    (run_dir / "checkpoints" / "step-000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000001" / "meta.json").write_text(json.dumps({"step": 1, "format": 1}))
    (run_dir / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        run_script_main()(["--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "another version of remix (checkpoint format 1" in err and err.count("\n") == 1
    assert (run_dir / "config.json").read_text() == "{}"  # untouched


def test_eval_suite_with_a_bad_model_writes_nothing(capsys, tmp_path):
    from eval.math_suite import cli

    with pytest.raises(SystemExit) as e:
        cli(["--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--nope"], "error: Unrecognized options: --nope (--help lists every option)"),
    (["--algo", "xyz"], "error: invalid choice 'xyz' for argument '--algo'. Expected one of ('grpo', 'ppo')."),
    (["--steps", "abc"], "error: Error parsing --steps: invalid literal for int() with base 10: 'abc'"),
    (["--rollout.group-size"], "error: Missing value for argument '--rollout.group-size'."),
])
def test_what_the_parser_itself_rejects_is_one_line_too(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_script_main()(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_the_parse_error_is_read_from_either_frame():
    from remix.validation import parse_error_line

    boxed = ("╭─ Unrecognized options ───────────╮\n│ Unrecognized options: --nope     │\n"
             "│ ──────────────────────────────── │\n│ For full helptext, run -c --help │\n"
             "╰──────────────────────────────────╯\n")
    plain = (" Invalid choice              \n ---------------------------- \n  invalid choice 'x' for      \n"
             "  argument '--algo'.          \n  ----------------------------\n  For full helptext, run p --help\n")
    assert parse_error_line(boxed) == "Unrecognized options: --nope"
    assert parse_error_line(plain) == "invalid choice 'x' for argument '--algo'."


def test_help_is_the_parsers_own(capsys):
    with pytest.raises(SystemExit) as e:
        run_script_main()(["--help"])
    out = capsys.readouterr()
    assert e.value.code == 0 and "--rollout.group-size" in out.out and out.err == ""
