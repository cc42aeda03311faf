"""Platform registry: one backend package per platform, imported only when selected.

`import remix` and `import platforms` never import sglang or torch_xla; only
`get_platform("cuda")` / `get_platform("xla")` do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PLATFORMS = {
    "cpu": "platforms.cpu",
    "cuda": "platforms.cuda",
    "xla": "platforms.xla",
}


class PlatformUnavailable(NotImplementedError):
    """The selected platform does not exist in this version (the message says what does)."""


def get_platform(name: str) -> ModuleType:
    """The platform package, which exposes `make_rollout(...)` and `make_learner(...)`, after its own
    `check_available()` where it has one (a platform whose device is absent raises PlatformUnavailable)."""
    if name not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; choose one of {sorted(PLATFORMS)}")
    module = importlib.import_module(PLATFORMS[name])
    check = getattr(module, "check_available", None)
    if check is not None:
        check()  # e.g. cuda without a visible GPU: PlatformUnavailable, one line
    return module
