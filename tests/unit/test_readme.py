"""README's commands work as written after `make run`: every shell block that calls the project's Python
activates the virtual environment first (or names .venv/bin explicitly)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_python_commands_in_readme_run_in_the_project_venv():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        calls = [line for line in block.splitlines() if re.match(r"\s*(python|torchrun|pip)\b", line)]
        if calls and "python3 -m venv" not in block:
            first = block.strip().splitlines()[0]
            assert ".venv/bin/activate" in first or all(".venv/bin/" in c for c in calls), block
