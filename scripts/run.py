"""Train with ReMix (or its on-policy baseline): `python scripts/run.py --help` lists every option.

Examples:
    python scripts/run.py                                   # ReMix-GRPO on arith, tiny-arith, CPU
    python scripts/run.py --algo ppo --variant onpolicy     # the on-policy PPO baseline
    python scripts/run.py --model smollm2-135m --task math --steps 100
    python scripts/run.py --run-dir runs/a                  # run again: resumes from its newest checkpoint
    torchrun --nproc-per-node 2 scripts/run.py              # data-parallel on 2 processes (FSDP2)

Exit status: 0 done, 2 bad input (data, model, config; nothing trained), 3 stopped after too many
skipped updates (checkpointed), 4 the rollout engine failed (a process of it died, or it does not sample
from the learner's weights; the last checkpoint resumes), 130 / 143 stopped by Ctrl-C / SIGTERM after
finishing and checkpointing the current step (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from platforms import PlatformUnavailable, get_platform  # noqa: E402
from remix import distributed as dist  # noqa: E402
from remix.config import TrainConfig  # noqa: E402
from remix.data import DataError  # noqa: E402
from remix.interfaces import RolloutFailed  # noqa: E402
from remix.models import ModelNotFound  # noqa: E402
from remix.runner import Interrupted, RunError, StoppedAtOnce, TrainingHalted, run  # noqa: E402
from remix.validation import ConfigError, parse_cli  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(TrainConfig, argv)  # a flag tyro cannot parse: one line, exit 2; bad values: one line below
    try:
        cfg.validate()
        run(cfg, get_platform(cfg.platform))
    except (ConfigError, DataError, ModelNotFound, RunError, PlatformUnavailable) as e:
        if dist.launched_rank() == 0:  # every rank of a torchrun job stops with the same message: say it once
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingHalted as e:
        if dist.launched_rank() == 0:
            print(f"stopped: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except RolloutFailed as e:  # may be one process's alone (its engine died): each says it, with its rank
        where = f"rank {dist.launched_rank()}: " if dist.launched_world_size() > 1 else ""
        print(f"error: {where}{e}", file=sys.stderr)
        raise SystemExit(4) from None
    except (Interrupted, StoppedAtOnce) as e:
        if dist.launched_rank() == 0:
            print(str(e), file=sys.stderr)
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    main()
