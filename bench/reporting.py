"""Shared by the benchmark scripts: a description of the machine, and writing a result as markdown + JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_description() -> str:
    """e.g. 'x86_64 Linux, 2 CPU cores, Python 3.11.7, torch 2.13.0+cpu, no GPU'."""
    import torch

    gpu = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}, {gpu}")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_report(out: Path, stem: str, lines: list[str], data: Any, echo: bool = True) -> Path:
    """Writes OUT/STEM.md (the table a reader sees) and OUT/STEM.json (the numbers, as data); prints the text
    unless echo is False."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    text = "\n".join(lines).rstrip() + "\n"
    (out / f"{stem}.md").write_text(text)
    if echo:
        print(text)
    return out / f"{stem}.md"
