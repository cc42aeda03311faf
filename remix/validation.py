"""Config checks that speak in command-line flags, and a way to run them after parsing.

Every config dataclass checks its values in `validate()`, which `__post_init__` calls, so a config
built in Python fails at construction. The command-line entry points parse inside
`deferred_validation()` and call `validate()` themselves, so that a bad value becomes one line
(`error: --batch-size: must be ...`, exit status 2) rather than the parser's framed message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_deferred = False


class ConfigError(ValueError):
    """An invalid flag value or combination; the message starts with the flag."""


def flag(field: str) -> str:
    """The command-line flag of a config field: 'rollout.group_size' -> '--rollout.group-size'."""
    return "--" + field.replace("_", "-")


def require(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{flag(field)}: {msg}")


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
