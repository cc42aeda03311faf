"""docs/ARCHITECTURE.md's import rules, read off the source with `ast`: the core never imports the platforms,
benchmarks, evaluation or scripts; a platform never imports another; nothing in the library imports bench/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(folder: str) -> dict[str, set[str]]:
    """file -> the top modules it imports (absolute imports; remix has no relative ones)."""
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def _offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f} imports {m}" for f, names in _imports(folder).items() for m in sorted(names)
            if m.split(".")[0] in forbidden or m in forbidden or m.startswith(tuple(x + "." for x in forbidden))]


def test_the_core_imports_no_platform_benchmark_evaluation_or_script():
    assert _offending("remix", ("platforms", "bench", "eval", "scripts")) == []


def test_a_platform_imports_no_other_platform_and_no_benchmark():
    assert _offending("platforms", ("bench", "eval", "scripts")) == []
    for name in ("cpu", "cuda", "xla"):
        others = tuple(f"platforms.{o}" for o in ("cpu", "cuda", "xla") if o != name)
        assert _offending(f"platforms/{name}", others) == []


def test_evaluation_imports_no_benchmark():
    assert _offending("eval", ("bench", "scripts")) == []
