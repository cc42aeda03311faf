import pytest
import torch

from remix.advantages import gae, grpo_advantages


def test_grpo_normalises_within_each_group():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    a = grpo_advantages(r)
    std0 = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()  # unbiased
    torch.testing.assert_close(a[0], (r[0] - 0.5) / (std0 + 1e-6))
    torch.testing.assert_close(a.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)


def test_grpo_without_std_division_and_degenerate_groups():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(grpo_advantages(r, normalize_std=False)[0], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert torch.all(grpo_advantages(r)[1] == 0)  # all equal: no signal, no NaN
    assert torch.all(grpo_advantages(torch.tensor([[1.0], [0.0]])) == 0)
    with pytest.raises(ValueError):
        grpo_advantages(torch.ones(4))


def hand_gae(rewards, values, gamma, lam):
    """Direct transcription: delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum_l (gamma lam)^l delta_{t+l}."""
    n = len(rewards)
    deltas = [rewards[t] + gamma * (values[t + 1] if t + 1 < n else 0.0) - values[t] for t in range(n)]
    return [sum((gamma * lam) ** (s - t) * deltas[s] for s in range(t, n)) for t in range(n)]


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.95), (0.99, 0.0)])
def test_gae_matches_hand_computation(gamma, lam):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 6, generator=g, dtype=torch.float64)
    rewards = torch.zeros(3, 6, dtype=torch.float64)
    lengths = [6, 4, 1]
    mask = torch.zeros(3, 6, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
        rewards[i, n - 1] = float(i % 2 == 0)  # outcome reward on the last response token
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        expected = hand_gae(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        torch.testing.assert_close(adv[i, :n], torch.tensor(expected, dtype=torch.float64))
        torch.testing.assert_close(ret[i, :n], adv[i, :n] + values[i, :n])
        assert torch.all(adv[i, n:] == 0) and torch.all(ret[i, n:] == 0)


def test_gae_with_gamma_lambda_one_is_reward_minus_value():
    values = torch.tensor([[0.2, 0.5, 0.1]])
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(adv, 1.0 - values)
    torch.testing.assert_close(ret, torch.ones(1, 3))
