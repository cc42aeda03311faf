"""`scripts/run.py` with `--rollout.engine sglang`'s rollout, SGLang faked (tests/fakes/sglang.py), on the CPU
platform: what a CUDA run with SGLang does to its processes and signals, where no GPU is.

    python -m tests.integration.sglang_run --run-dir ... [scripts/run.py's flags]
    torchrun --nproc-per-node 2 -m tests.integration.sglang_run ...

Used by tests/integration/test_sglang_run.py.
"""

from __future__ import annotations

import sys

import platforms.cpu as cpu
from platforms.cuda.sglang_rollout import SGLangRollout
from remix import distributed as dist
from tests.fakes import sglang as fake


def make_rollout(model_dir, *, seed=0, dtype="float32", options=None, prompt_tokens=None):
    """The CUDA platform's SGLang rollout (one engine per process), with the fake engine."""
    return SGLangRollout(model_dir, seed=seed, dtype=dtype, gpu=dist.local_rank(), api=fake.api())


if __name__ == "__main__":
    import os

    # what the test is about: torchrun sets this for its workers, and SGLang's scheduler inherits it
    print(f"{fake.TORCHRUN_AGENT_STORE}={os.environ.get(fake.TORCHRUN_AGENT_STORE)}", flush=True)
    cpu.make_rollout = make_rollout
    from scripts.run import main

    main(sys.argv[1:])
