"""Reward functions: the built-in math reward and the user's own (`--reward PATH.py:FUNCTION`), as one weighted sum.

A reward function scores one response to one dataset row:

    def my_reward(response: str, row: dict) -> float

`row` holds every column of the row as the dataset file has it (the problem under its own column name, the answer
if there is one, and whatever else the file carries: test cases, a difficulty, an id). Why one response rather than
TRL's batch form `f(prompts, completions, **columns) -> list[float]`: like verl's `compute_score(data_source,
solution_str, ground_truth, extra_info)`, a per-response function runs under the grader pool's per-response
deadline, so a reward that hangs or crashes on one response costs that response's score, not the step's; the pool
spreads responses over its worker processes without the function having to; and it cannot return a list of the
wrong length. (A reward *model*, which wants batches on the accelerator, does not belong in CPU grader workers.)

A function is named by a spec: `math` (the built-in: the last box against the row's answer column, under
--grading), `path/to/file.py:function` or `package.module:function`. Specs, not functions, travel to the grader's
worker processes, and each worker imports them once: a function defined in a user's file cannot be pickled by
reference. `RewardSet.score` calls every function on a response and never raises for the user's code: an exception,
or a value that is not a finite number, scores 0 for that function and is reported.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remix.rewards.math_reward import GRADING_RULES, GradingRule, verify_in_process

BUILTIN = "math"
RewardFn = Callable[[str, dict], float]


class RewardSpecError(ValueError):
    """A --reward spec that names no usable function; the message is one line naming the spec."""


def _one_line(text: str, limit: int = 200) -> str:
    """`text` on one line (runs of whitespace, newlines included, as one space), cut at `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def grade_math(response: str, row: dict, answer_key: str = "answer", rule: GradingRule = "boxed") -> float:
    """The built-in reward: 1.0 when the response's final answer equals `row[answer_key]` under `rule`, else 0.0."""
    return verify_in_process(response, row[answer_key], rule=rule)


def _import_file(path: Path, spec: str):
    # One module per file, named after its absolute path, so two reward files called reward.py do not collide and
    # a second load (the same worker grading again) reuses the first.
    name = "remix_user_reward_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardSpecError(f"--reward: '{spec}': {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise RewardSpecError(f"--reward: '{spec}': importing {path} raised {type(e).__name__}: {_one_line(str(e))}"
                              ) from e
    return module


def load_reward(spec: str, answer_key: str = "answer", rule: GradingRule = "boxed") -> RewardFn:
    """The function a spec names, checked to take (response, row). RewardSpecError (one line) otherwise."""
    if spec == BUILTIN:
        return functools.partial(grade_math, answer_key=answer_key, rule=rule)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise RewardSpecError(f"--reward: '{spec}': expected 'math', PATH.py:FUNCTION or module:FUNCTION")
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise RewardSpecError(f"--reward: '{spec}': no such file {path}")
        module = _import_file(path, spec)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or the module's own code failing: either way one line
            raise RewardSpecError(f"--reward: '{spec}': importing {where} raised {type(e).__name__}: "
                                  f"{_one_line(str(e))}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        functions = sorted(n for n, v in vars(module).items()  # its own, not those it imported
                           if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_"))
        raise RewardSpecError(f"--reward: '{spec}': {where} has no {attr!r} (its functions: "
                              f"{', '.join(functions) or 'none'})")
    if not callable(fn):
        raise RewardSpecError(f"--reward: '{spec}': {attr} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind("response", {})
    except TypeError:
        raise RewardSpecError(f"--reward: '{spec}': {attr}{inspect.signature(fn)} cannot be called as "
                              f"{attr}(response, row)") from None
    except ValueError:  # a builtin without a signature: trust it
        pass
    return fn


def reward_name(spec: str) -> str:
    """The metric name of a spec: 'math', or the function's name."""
    return spec if spec == BUILTIN else spec.rpartition(":")[2]


_LOADED: dict[RewardSet, list[RewardFn] | RewardSpecError] = {}


@dataclass(frozen=True)
class Scored:
    """One response's rewards: `total` (the weighted sum), one value per function, and what went wrong (None if
    nothing did)."""

    total: float
    parts: tuple[float, ...]
    error: str | None = None


@dataclass(frozen=True)
class RewardSet:
    """The --reward functions with their --reward-weights; picklable (it holds specs, and loads them where it
    scores)."""

    specs: tuple[str, ...] = (BUILTIN,)
    weights: tuple[float, ...] = ()  # () = 1.0 each
    answer_key: str = "answer"
    rule: GradingRule = "boxed"

    def __post_init__(self) -> None:
        if not self.specs:
            raise ValueError("a RewardSet needs at least one reward function")
        if self.weights and len(self.weights) != len(self.specs):
            raise ValueError(f"{len(self.weights)} weights for {len(self.specs)} reward functions")
        if self.rule not in GRADING_RULES:
            raise ValueError(f"unknown grading rule {self.rule!r}; choose one of {GRADING_RULES}")

    @property
    def names(self) -> tuple[str, ...]:
        """Metric names, one per function; a name used twice gets the spec's position appended."""
        names = [reward_name(s) for s in self.specs]
        return tuple(n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names))

    @property
    def is_math_only(self) -> bool:
        """Only the built-in math reward with weight 1: the reward is correctness (0 or 1), an accuracy."""
        return self.specs == (BUILTIN,) and self.weights in ((), (1.0,))

    def load(self) -> list[RewardFn]:
        """Imports every function (RewardSpecError on the first that cannot be): run it once before training."""
        return [load_reward(s, self.answer_key, self.rule) for s in self.specs]

    def prepare(self) -> None:
        """Imports the functions in this process ahead of scoring (a grader worker, before it says it is ready)."""
        self._functions()

    def _functions(self) -> list[RewardFn] | RewardSpecError:
        # Cached per process outside the instance, so that the instance stays picklable (a function from a user's
        # file is not) and each worker imports the user's module once. A failure is cached too: a module that
        # imported in the trainer but not in a worker (another environment) fails each response with its message.
        if self not in _LOADED:
            try:
                _LOADED[self] = self.load()
            except RewardSpecError as e:
                _LOADED[self] = e
        return _LOADED[self]

    def score(self, response: str, row: dict[str, Any]) -> Scored:
        """Every function on one response. The user's code cannot break grading: an exception or a value that is not
        a finite number scores 0 for that function, and `error` says which function and what it did."""
        weights = self.weights or (1.0,) * len(self.specs)
        functions = self._functions()
        if isinstance(functions, RewardSpecError):
            return Scored(0.0, (0.0,) * len(self.specs), f"not loaded in the grader worker: {functions}")
        parts, errors = [], []
        for name, fn in zip(self.names, functions):
            try:
                value = fn(response, row)
            except Exception as e:  # noqa: BLE001 -- not swallowed: reported in `error`, counted by the pool
                parts.append(0.0)
                errors.append(f"{name} raised {type(e).__name__}: {_one_line(str(e))}")
                continue
            if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):  # bools count as 0 and 1
                parts.append(0.0)
                errors.append(f"{name} returned {_one_line(repr(value), 60)} ({type(value).__name__}), not a finite "
                              "number")
                continue
            parts.append(float(value))
        total = sum(w * p for w, p in zip(weights, parts))
        return Scored(total, tuple(parts), "; ".join(errors) or None)
