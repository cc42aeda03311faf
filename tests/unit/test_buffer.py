import io
from collections import Counter

import pytest
import torch

from remix.buffer import HostBuffer
from remix.interfaces import Group


def group(version: int, gid: str, size: int = 4) -> Group:
    return Group(
        prompt_ids=[1, 2, 3],
        responses=[[4 + i, 5] for i in range(size)],
        rewards=[float(i % 2) for i in range(size)],
        version=version,
        problem_id=gid,
        answer="7",
        finish_reasons=["stop"] * size,
        engine_logp=[torch.tensor([-0.5, -0.25]) for _ in range(size)],
        behav_logp=[torch.tensor([-0.5, -0.2]) for _ in range(size)],
        ref_logp=[torch.tensor([-0.6, -0.3]) for _ in range(size)],
        advantages=[1.0, -1.0, 1.0, -1.0][:size],
    )


def test_eviction_keeps_only_recent_versions():
    buf = HostBuffer()
    for v in range(1, 5):
        buf.add([group(v, f"p{v}-{j}") for j in range(2)])
    assert buf.versions() == [1, 2, 3, 4]
    dropped = buf.evict_older_than(3)  # after step 4 with N = 2: keep versions 3 and 4
    assert dropped == 4 and buf.versions() == [3, 4] and buf.num_responses() == 16
    buf.clear()
    assert len(buf) == 0 and buf.num_responses() == 0


def test_sample_returns_whole_groups_within_budget():
    buf = HostBuffer()
    buf.add([group(1, f"a{j}") for j in range(5)])
    picked = buf.sample(10, torch.Generator().manual_seed(0))
    assert len(picked) == 2  # 10 responses = two whole groups of 4, never a partial group
    assert all(len(g) == 4 and len(g.behav_logp) == 4 and len(g.rewards) == 4 for g in picked)
    assert len({g.problem_id for g in picked}) == 2
    assert buf.sample(3, torch.Generator().manual_seed(0)) == []
    assert len(buf.sample(1000, torch.Generator().manual_seed(0))) == 5


def test_sampling_is_uniform_over_groups_and_versions():
    buf = HostBuffer()
    buf.add([group(1, f"old{j}") for j in range(4)] + [group(2, f"new{j}") for j in range(4)])
    gen = torch.Generator().manual_seed(0)
    per_version, per_group = Counter(), Counter()
    trials = 4000
    for _ in range(trials):
        for g in buf.sample(8, gen):
            per_version[g.version] += 1
            per_group[g.problem_id] += 1
    # 2 groups per draw out of 8: each group has probability 1/4, each version half of the draws
    for pid, n in per_group.items():
        assert abs(n / trials - 0.25) < 0.03, (pid, n)
    assert abs(per_version[1] / (2 * trials) - 0.5) < 0.03


def test_sampling_is_uniform_over_versions_when_they_pushed_unequal_numbers_of_groups():
    """As at step 3: step 1 pushed a whole batch (8 groups), step 2 only its fresh part (5 groups). Each
    pick is a version drawn uniformly (then one of its groups), not a group drawn uniformly (which would
    give version 1 8/13 = 62% of the picks)."""
    buf = HostBuffer()
    buf.add([group(1, f"v1-{j}") for j in range(8)] + [group(2, f"v2-{j}") for j in range(5)])
    gen = torch.Generator().manual_seed(0)
    per_version = Counter()
    trials = 3000
    for _ in range(trials):
        picked = buf.sample(12, gen)  # 3 groups of 4
        assert len(picked) == 3 and len({g.problem_id for g in picked}) == 3
        per_version.update(g.version for g in picked)
    assert abs(per_version[1] / (3 * trials) - 0.5) < 0.02, per_version


def test_state_round_trip_through_weights_only_load():
    buf = HostBuffer()
    buf.add([group(3, "x"), group(4, "y", size=2)])
    stream = io.BytesIO()
    torch.save(buf.state_dict(), stream)
    stream.seek(0)
    restored = HostBuffer()
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert restored.versions() == [3, 4] and restored.num_responses() == 6
    a, b = buf.sample(100, torch.Generator().manual_seed(1)), restored.sample(100, torch.Generator().manual_seed(1))
    for ga, gb in zip(a, b):
        assert ga.problem_id == gb.problem_id and ga.responses == gb.responses and ga.rewards == gb.rewards
        for ta, tb in zip(ga.behav_logp + ga.ref_logp, gb.behav_logp + gb.ref_logp):
            torch.testing.assert_close(ta, tb)


def test_add_rejects_inconsistent_groups():
    g = group(1, "bad")
    g.rewards = g.rewards[:-1]
    with pytest.raises(ValueError, match="bad"):
        HostBuffer().add([g])
