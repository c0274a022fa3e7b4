"""The on-policy losses, on the joint log-likelihood of a stochastic denoising chain.

A chunk's "action" is the whole chain x_0 .. x_K its decode sampled; its log-likelihood under the
policy is the sum of the chain's Gaussian transition densities (`steering/stochastic_flow.py`), so
the PPO ratio is exp(log pi_new(chain) - log pi_old(chain)) over the joint chain, as pi_RL does.

* PPO's clipped surrogate (Schulman et al., arXiv 1707.06347): -min(rho A, clip(rho, 1 -+ eps) A);
* the clipped value loss of the PPO implementations (OpenAI baselines, CleanRL):
  0.5 max((V - R)^2, (V_old + clip(V - V_old, -+ eps_v) - R)^2);
* the approximate KL between the policy that acted and the current one, k3 = (rho - 1) - log rho
  (Schulman's estimator, as CleanRL reports `approx_kl`), which early stopping reads;
* GRPO's KL to a reference policy, the same k3 estimator with the ratio pi_ref / pi.
"""

from __future__ import annotations

import torch
from torch import Tensor


def clipped_surrogate(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip: float) -> tuple[Tensor, dict]:
    """Per-sample PPO policy loss (B,) and its diagnostics (per-sample tensors, detached):
    `ratio`, `clipped` (|rho - 1| > clip), `approx_kl` (k3), `old_approx_kl` (-log rho) and
    `abs_log_ratio` (|log rho|: how far one optimizer step moved each chain's joint log-likelihood,
    which for a long chain at a small noise std can be whole nats while the mean ratio stays near 1)."""
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = -torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    with torch.no_grad():
        stats = {
            "ratio": ratio.detach(),
            "clipped": ((ratio - 1.0).abs() > clip).float(),
            "approx_kl": (ratio - 1.0) - log_ratio,
            "old_approx_kl": -log_ratio,
            "abs_log_ratio": log_ratio.abs(),
        }
    return loss, stats


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """Per-sample value loss (B,): 0.5 (V - R)^2, or with `clip` the larger of that and the loss of
    the value moved at most `clip` away from the one stored at acting time."""
    loss = (values - returns).square()
    if clip:
        moved = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.max(loss, (moved - returns).square())
    return 0.5 * loss


def kl_to_reference(log_prob: Tensor, ref_log_prob: Tensor) -> Tensor:
    """Per-sample k3 estimate of KL(pi || pi_ref) on chains sampled from (nearly) pi: >= 0, unbiased."""
    log_ratio = ref_log_prob - log_prob
    return log_ratio.exp() - log_ratio - 1.0
