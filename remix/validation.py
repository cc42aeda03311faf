"""Config checks that speak in command-line flags, declared once, and a way to run them after parsing.

A limit on one field is declared next to the field, in its type: `steps: Annotated[int, Limit(ge=1)] = 300`.
Rules across fields (a batch size that groups must divide, an engine that needs a platform) are written by hand
in the config's `check()`, with `require`. A config dataclass derives from `Checked`: `validate()` checks every
declared limit, every nested config, then `check()`, and raises `ConfigError` naming the flag
(`--batch-size: must be ...`).

`Checked.__post_init__` validates, so a config built in Python fails at construction. The command line is
different: tyro builds the dataclasses while it parses, and a ConfigError there would come out inside tyro's
framed usage message. So the entry points parse with `parse_cli` (inside `deferred_validation()`, which switches
the construction-time check off) and call `validate()` themselves, making a bad value one line with exit status 2.
`parse_cli` also turns tyro's own parse errors (an unknown flag, a value outside a choice, a value that is not a
number) into that one line; `--help` is tyro's, unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, TypeVar

T = TypeVar("T")

_deferred = False


class ConfigError(ValueError):
    """An invalid flag value or combination; the message starts with the flag."""


def flag(field: str) -> str:
    """The command-line flag of a config field: 'rollout.group_size' -> '--rollout.group-size'."""
    return "--" + field.replace("_", "-")


def require(cond: bool, field: str, msg: str) -> None:
    """A hand-written check (a rule across fields): ConfigError naming `field`'s flag unless `cond`."""
    if not cond:
        raise ConfigError(f"{flag(field)}: {msg}")


@dataclass(frozen=True)
class Limit:
    """Bounds on one field's value, declared in its type: `Annotated[float, Limit(gt=0, lt=1)]`. None passes (a field
    that may be None has no value to bound); a tuple's every item is bounded."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value) -> bool:
        items = value if isinstance(value, tuple) else (value,)
        return all(v is None or ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                                 and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))
                   for v in items)

    def describe(self) -> str:
        """'>= 1', '> 0', 'in [0, 1)', 'in (0, 1]', ..."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"


def limits(cls: type) -> dict[str, Limit]:
    """The `Limit` declared on each field of a dataclass, by field name."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        for meta in getattr(hints[f.name], "__metadata__", ()):
            if isinstance(meta, Limit):
                out[f.name] = meta
    return out


class Checked:
    """Base of the config dataclasses: validation at construction (unless parsing defers it), declared limits,
    nested configs, then the hand-written rules of `check()`. `FLAG_PREFIX` is where the class's flags live
    ("rollout." for `--rollout.*`)."""

    FLAG_PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.normalize()
        if validating():
            self.validate()

    def normalize(self) -> None:
        """Fills fields that follow from others (before validation); nothing by default."""

    def check(self) -> None:
        """The rules across fields, with `require`; nothing by default."""

    def validate(self) -> None:
        """Raises ConfigError naming the flag of the first bad value or combination."""
        for name, limit in limits(type(self)).items():
            value = getattr(self, name)
            require(limit.allows(value), self.FLAG_PREFIX + name, f"must be {limit.describe()}, got {value!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Checked):
                value.validate()
        self.check()


def validating() -> bool:
    """False while parsing inside `deferred_validation()`."""
    return not _deferred


@contextmanager
def deferred_validation() -> Iterator[None]:
    global _deferred
    before, _deferred = _deferred, True
    try:
        yield
    finally:
        _deferred = before


_FRAME = " │╭╮╰╯┃┏┓┗┛"


def parse_error_line(text: str) -> str:
    """The message of a tyro parse error, as one line: the first block of text after its title, whether tyro drew the
    frame with box characters or with plain dashes (it depends on the terminal)."""
    lines = [line.strip(_FRAME) for line in text.splitlines()]
    groups: list[list[str]] = [[]]
    for line in lines[1:]:  # lines[0] is the title (in the frame's top border, or above a rule)
        if not line or set(line) <= set("-─━"):
            groups.append([])
        else:
            groups[-1].append(line)
    message = next((" ".join(g) for g in groups if g), "")
    return message or " ".join(line for line in lines if line) or "the command line could not be parsed"


def parse_cli(cls: type[T], args: Sequence[str] | None = None, description: str | None = None) -> T:
    """`tyro.cli(cls)` with validation deferred (the caller runs `validate()`), and tyro's framed parse errors as one
    line, `error: ... (--help lists every option)`, with exit status 2. What tyro writes otherwise (`--help` on
    stdout, warnings on stderr) passes through unchanged."""
    import tyro

    captured = io.StringIO()
    with deferred_validation():
        try:
            with contextlib.redirect_stderr(captured):
                cfg = tyro.cli(cls, args=args, description=description)
        except SystemExit as e:
            if e.code in (0, None):
                sys.stderr.write(captured.getvalue())
                raise
            print(f"error: {parse_error_line(captured.getvalue())} (--help lists every option)", file=sys.stderr)
            raise SystemExit(2) from None
    sys.stderr.write(captured.getvalue())
    return cfg
