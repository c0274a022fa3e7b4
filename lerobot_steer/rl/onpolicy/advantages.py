"""Advantages over chunk steps: GAE for PPO, group-relative returns for GRPO.

One row is one executed chunk of one env (the chunk-level MDP of `chunk_rollout.py`): its reward is
the chunk's rewards summed with the per-step discount, r = sum_j gamma^j r_j over the n executed
steps, and the chunk's own discount is gamma^n, so the chunk-level returns are the per-step
discounted returns of the env.

GAE (Schulman et al., arXiv 1506.02438) with a per-row discount d_t = gamma^(n_t):

    delta_t = r_t + d_t V'_t - V_t,        A_t = delta_t + d_t lambda (1 - end_t) A_(t+1),

where V'_t is the value of the state the chunk ended in: 0 after a terminal, the value of the
pre-reset last observation after a time limit (a time-out is not a terminal), V_(t+1) otherwise,
and the rollout's last row bootstraps from the current observation. `end_t` (terminal or time
limit) cuts the trace: the next row belongs to another episode. Returns are A_t + V_t.

GRPO (Shao et al., arXiv 2402.03300; pi_RL's embodied variant): G rollouts from one initial state
form a group; every chunk of rollout i gets A_i = (R_i - mean(R)) / (std(R) + eps) of its group's
episode returns (no value function). A group whose returns are all equal carries no signal: its
advantages are 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, discounts: Tensor, ends: Tensor,
        lam: float) -> tuple[Tensor, Tensor]:
    """(advantages, returns), each (T, N), from (T, N) rows in time order (module docstring).

    next_values: V'_t, already 0 after a terminal and the time-limit bootstrap after a time-out.
    ends: True where the episode ended inside the chunk (terminal or time limit).
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + discounts[t] * next_values[t] - values[t]
        running = delta + discounts[t] * lam * (~ends[t]).to(rewards.dtype) * running
        advantages[t] = running
    return advantages, advantages + values


def discounted_episode_returns(rewards: Tensor, discounts: Tensor, valid: Tensor) -> Tensor:
    """(N,): sum_t (prod_(s<t) d_s) r_t over each column's valid rows (one episode per column)."""
    mask = valid.to(rewards.dtype)
    scale = torch.cumprod(torch.cat([torch.ones_like(discounts[:1]), discounts[:-1]]), dim=0)
    return (scale * rewards * mask).sum(dim=0)


def group_relative_advantages(returns: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """(N,): each return minus its group's mean, divided by the group's std (population) when
    `scale`. Groups are consecutive blocks of `group_size` columns."""
    if returns.shape[0] % group_size:
        raise ValueError(f"{returns.shape[0]} rollouts do not split into groups of {group_size}")
    grouped = returns.reshape(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.reshape(-1)


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect value function, 0 predicts the
    mean, below 0 is worse than that (NaN when the targets do not vary)."""
    var = target.var(unbiased=False)
    if var == 0:
        return float("nan")
    return float(1 - (target - predicted).var(unbiased=False) / var)
