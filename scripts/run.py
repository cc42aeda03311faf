"""Train with ReMix (or its on-policy baseline): `python scripts/run.py --help` lists every option.

Examples:
    python scripts/run.py                                   # ReMix-GRPO on arith, tiny-arith, CPU
    python scripts/run.py --algo ppo --variant onpolicy     # the on-policy PPO baseline
    python scripts/run.py --model smollm2-135m --task math --steps 100
"""

from __future__ import annotations

import sys
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from remix.config import TrainConfig  # noqa: E402
from remix.runner import run  # noqa: E402


def main() -> None:
    run(tyro.cli(TrainConfig))


if __name__ == "__main__":
    main()
