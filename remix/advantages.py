"""Advantage estimators: GRPO group normalisation and GAE for PPO (ALGORITHM.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor

GRPO_EPS = 1e-6


def grpo_advantages(rewards: Tensor, normalize_std: bool = True, eps: float = GRPO_EPS) -> Tensor:
    """Group-normalised advantages for rewards [num_groups, G]: (R - mean) / (std + eps).

    std is the unbiased (Bessel-corrected) standard deviation over the group, as in verl and TRL.
    `normalize_std=False` skips the division (Dr. GRPO). A group of one response gets advantage 0.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [num_groups, G], got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards)
    if not normalize_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

    rewards, values, mask: [B, T]; tokens where mask is false are ignored (the value after the last
    valid token is 0, i.e. the episode ends there). Returns (advantages, returns), both [B, T] and
    zero where mask is false; returns = advantages + values.
    """
    maskf = mask.to(values.dtype)
    rewards = rewards.to(values.dtype) * maskf
    values = values * maskf
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        m = maskf[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        # Padding positions pass the running values through unchanged.
        advantages[:, t] = adv_t * m
        next_value = values[:, t] * m + next_value * (1 - m)
        next_adv = adv_t * m + next_adv * (1 - m)
    return advantages, (advantages + values) * maskf
