"""Which code made a result: the git commit and the versions of what decides the numbers. Torch-free (read from the
installed packages' metadata), so that grading saved responses (`eval.math_suite --from-responses`) imports no torch."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def code_version() -> dict[str, Any]:
    """The code a result was made with: the git commit (and whether tracked files differed from it) and the versions
    of what decides the numbers (math-verify grades them)."""
    root = Path(__file__).resolve().parents[1]
    commit = _git(root, "rev-parse", "HEAD")
    return {
        "git_commit": commit,
        "git_dirty": None if commit is None else bool(_git(root, "status", "--porcelain", "--untracked-files=no")),
        "versions": {"python": platform.python_version(), "torch": _version("torch"),
                     "transformers": _version("transformers"), "math-verify": _version("math-verify"),
                     "remix": _version("remix-rft")},
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an installed package)
        return None
    return out.stdout.strip()
