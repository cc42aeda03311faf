import subprocess
import sys

import pytest
import tyro

from remix import schedule
from remix.config import ReMixConfig, RolloutConfig, TrainConfig
from remix.validation import ConfigError


def parse(*args: str) -> TrainConfig:
    return tyro.cli(TrainConfig, args=list(args))


def test_defaults_are_the_papers_remix_knobs():
    c = parse()
    assert (c.remix.offpolicy_fraction, c.remix.history_window, c.remix.utd_ratio) == (0.4, 2, 2)
    assert c.remix.reincarnation_step == 50 and c.objective.kl_coef == 1e-3 and c.objective.kl_estimator == "k3"
    assert c.objective.clip_eps == 0.2 and c.objective.loss_agg == "token-mean"


def test_flags_everything_else_relies_on():
    c = parse("--platform", "cpu", "--algo", "ppo", "--variant", "onpolicy", "--model.name", "x",
              "--task", "arith", "--steps", "3", "--seed", "7", "--run-dir", "/tmp/r")
    assert (c.algo, c.variant, c.steps, c.seed, str(c.run_dir)) == ("ppo", "onpolicy", 3, 7, "/tmp/r")
    assert schedule.offpolicy_fraction(c, False) == 0.0 and schedule.utd_ratio(c, False) == 1
    assert schedule.reincarnation_step(c) is None and schedule.kl_lambda(c, 95, None) == 1.0
    assert parse("--data.path", "x.jsonl").data.task == "file"


def test_reincarnation_switches_knobs_and_lambda_clock():
    c = parse()
    assert schedule.offpolicy_fraction(c, True) == 0.0 and schedule.utd_ratio(c, True) == 1
    assert schedule.kl_lambda(c, 61, reincarnated_at=50) == pytest.approx(0.8)
    c2 = parse("--remix.restart-lambda-clock")
    assert schedule.kl_lambda(c2, 61, reincarnated_at=50) == 1.0
    assert schedule.kl_lambda(parse("--remix.no-kl-convex"), 95, None) == 1.0


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"batch_size": 60}, "--batch-size"),
        ({"mini_batch_size": 24}, "--mini-batch-size"),
        ({"batch_size": 8, "mini_batch_size": 8, "micro_batch_size": 8}, "--remix.offpolicy-fraction"),
    ],
)
def test_a_config_built_in_python_is_checked_at_construction(kwargs, flag):
    """(The command line defers the check to print it as one line: tests/unit/test_cli_errors.py.)"""
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**kwargs)


def test_history_bound_is_on_the_global_batch_under_several_processes(monkeypatch):
    """The historical draw is one for all processes (remix/trainer.py), so p x B = 8 responses fill one group of 8
    on 2 processes as on 1; 7.2 do not."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    TrainConfig(batch_size=32, mini_batch_size=32, micro_batch_size=16,
                remix=ReMixConfig(offpolicy_fraction=0.25), rollout=RolloutConfig(group_size=8))
    with pytest.raises(ConfigError, match="--remix.offpolicy-fraction"):
        TrainConfig(batch_size=32, mini_batch_size=32, micro_batch_size=16,
                    remix=ReMixConfig(offpolicy_fraction=0.225), rollout=RolloutConfig(group_size=8))


def test_help_shows_field_docs():
    code = "import tyro; from remix.config import ReMixConfig, RolloutConfig, TrainConfig; tyro.cli(TrainConfig)"
    proc = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "share of each batch taken from the buffer" in proc.stdout


def test_import_remix_never_imports_sglang_or_torch_xla():
    code = ("import sys, remix, remix.config, remix.objective, remix.buffer, remix.advantages, platforms;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sglang', 'torch_xla')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lines_never_break_mid_sentence():
    """The parser keeps a field docstring's line breaks, so each of its lines must end a sentence or clause."""
    import docstring_parser

    from eval.math_suite import SuiteConfig
    from remix import config, objective

    classes = (config.ModelConfig, config.DataConfig, config.RolloutConfig, config.OptimConfig, config.ReMixConfig,
               config.PPOConfig, config.TrainConfig, objective.ObjectiveConfig, SuiteConfig)
    for cls in classes:
        for param in docstring_parser.parse_from_object(cls).params:
            for line in (param.description or "").splitlines()[:-1]:
                assert line.rstrip().endswith((".", ";", ":", ",")), f"{cls.__name__}.{param.arg_name}: {line!r}"


def test_every_option_group_has_its_own_help():
    """A comment once leaked into the wrong group's help ('ppo options' showed the compile note)."""
    code = "import tyro; from remix.config import ReMixConfig, RolloutConfig, TrainConfig; tyro.cli(TrainConfig)"
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True).stdout
    ppo = out[out.index("ppo options"):]
    ppo = ppo[:ppo.index("╰")]
    assert "compile" not in ppo
