"""One learner update on the XLA platform, for tests/xla/test_xla_platform.py: `python -m tests.xla.hlo_worker
MODEL_DIR OUT.json [--activation-checkpointing]` under PJRT_DEVICE=CPU, with XLA_FLAGS set by the caller to dump the
HLO XLA compiles; writes the weight update."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from platforms import get_platform
from tests.helpers import small_config
from tests.xla.spmd_worker import UPDATE_CONFIG, one_update


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = small_config(model_dir, **UPDATE_CONFIG)
    cfg = replace(cfg, model=replace(cfg.model, activation_checkpointing="--activation-checkpointing" in sys.argv))
    learner = get_platform("xla").make_learner(model_dir, cfg)
    _, delta = one_update("xla", model_dir, learner)
    out.write_text(json.dumps({"delta": delta.tolist()}))


if __name__ == "__main__":
    main()
