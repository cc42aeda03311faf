"""HostBuffer: whole GRPO groups of the last N policies, kept in host memory."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import torch

from remix.interfaces import Buffer, Group


class HostBuffer(Buffer):
    """Stores groups with their policy version; samples whole groups, uniformly over policy versions.

    `sample(h)` picks one group at a time: a version uniformly among those with groups left, then one of
    that version's groups uniformly, without replacement, skipping a group that would take the total past
    h responses, until none is left that fits. After `evict_older_than(k - N + 1)` the versions are the
    last N policies, so each contributes equally in expectation even when they pushed different numbers of
    groups (step 1 pushes a whole batch, later steps only their fresh part); ALGORITHM.md 5.1 decides it.
    """

    def __init__(self) -> None:
        self._groups: list[Group] = []

    def add(self, groups: list[Group]) -> None:
        for g in groups:
            if len(g.responses) != len(g.rewards) or len(g.behav_logp) != len(g.responses):
                raise ValueError(
                    f"group {g.problem_id!r} v{g.version}: responses, rewards and behav_logp differ in length"
                )
        self._groups.extend(groups)

    def sample(self, num_responses: int, generator: torch.Generator) -> list[Group]:
        left: dict[int, list[int]] = {}  # version -> indices of its groups not yet considered
        for i, g in enumerate(self._groups):
            left.setdefault(g.version, []).append(i)
        picked, total = [], 0
        smallest = min((len(g) for g in self._groups), default=0)
        while left and num_responses - total >= smallest:  # stop once no group can fit any more
            versions = sorted(left)
            v = versions[int(torch.randint(len(versions), (1,), generator=generator))]
            i = left[v].pop(int(torch.randint(len(left[v]), (1,), generator=generator)))
            if not left[v]:
                del left[v]
            size = len(self._groups[i])
            if total + size <= num_responses:
                picked.append(self._groups[i])
                total += size
        return picked

    def evict_older_than(self, min_version: int) -> int:
        before = len(self._groups)
        self._groups = [g for g in self._groups if g.version >= min_version]
        return before - len(self._groups)

    def clear(self) -> None:
        self._groups.clear()

    def num_responses(self) -> int:
        return sum(len(g) for g in self._groups)

    def versions(self) -> list[int]:
        return sorted({g.version for g in self._groups})

    def __len__(self) -> int:
        return len(self._groups)

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors only, loadable with torch.load(weights_only=True)."""
        return {"groups": [asdict(g) for g in self._groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(Group)}
        groups = []
        for i, raw in enumerate(state["groups"]):
            unknown = set(raw) - names
            if unknown:
                raise ValueError(f"buffer state: group {i} has unknown fields {sorted(unknown)}")
            groups.append(Group(**raw))
        self._groups = groups
