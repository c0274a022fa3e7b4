"""Stochastic flow-matching chains with a tractable log-likelihood, at LeRobot's per-step Euler seam.

pi0, pi05 and SmolVLA decode an action chunk by Euler integration of a learned velocity field
v(x, t) from t = 1 (x = Gaussian noise) to t = 0 (x = actions), in LeRobot's shared
`euler_integrate`: K steps of size delta = 1/K, times t_k = 1 - k delta, x_{k+1} = x_k - delta v_k
(the flow convention x_t = t eps + (1 - t) a, v = eps - a). This module turns each step into a
Gaussian transition

    x_{k+1} ~ N(mu_k, diag(s_k^2)),

so that a chain x_0 .. x_K (x_0 the initial noise, x_K the actions) has the exact log-likelihood

    log pi(x_1..x_K | x_0, o) = sum_k sum_d log N(x_{k+1,d}; mu_{k,d}, s_{k,d}^2),

summed over the steps and over the noised entries d (the initial noise's N(0, I) density does not
depend on the weights and is left out: it cancels in PPO / GRPO ratios). Two chains (pi_RL,
arXiv 2510.25889):

* Flow-Noise (ReinFlow, arXiv 2505.22094): the mean stays the ODE step, a learned head gives the
  standard deviation, bounded:  mu_k = x_k - delta v_k,  s_k = sigma_theta(h_k, t_k) in
  [min_std, max_std], with h_k the action expert's output features at this step.
* Flow-SDE (Flow-GRPO, arXiv 2505.05470): the ODE becomes the reverse-time SDE with the same
  marginals, dx = [v + sigma_t^2 / (2t) (x + (1 - t) v)] dt + sigma_t dw, with the score
  grad log p_t(x) = -(x + (1 - t) v) / t of the linear path and sigma_t = a sqrt(t / (1 - t)).
  Euler-Maruyama with dt = -delta:
      mu_k = x_k - delta [v_k + sigma_k^2 / (2 t_k) (x_k + (1 - t_k) v_k)],   s_k = sigma_k sqrt(delta).
  At t = 1 the schedule is infinite; as Flow-GRPO does, the denominator then uses the next time
  (1 - t_1 = delta), so sigma_0 = a sqrt(K). a -> 0 gives back the ODE.

Noise goes only where it is counted (`mask`: the real action dims of the chosen chunk steps); the
other entries follow the ODE, a deterministic function of the chain so far, so the sum above is the
exact joint density. With a per-entry sigma the SDE still preserves the marginals.

The seam: `StochasticEuler` takes the place of LeRobot's RTC processor in `euler_integrate` (see
`denoisers.velocity_seam`), computes the velocity with LeRobot's own `denoise_step`, and keeps the
chain itself (so rounding inside `euler_integrate` never enters it). The same object re-evaluates a
stored chain ("teacher forcing": the velocity at the stored x_k, the density of the stored x_{k+1}),
which is what PPO needs after a weight update.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
STOCHASTIC_CHAINS = ("flow_noise", "flow_sde")


def sde_sigma(t: float, num_steps: int, noise_level: float) -> float:
    """Flow-SDE's diffusion scale sigma_t = a sqrt(t / (1 - t)), with 1 - t floored at one step (t = 1)."""
    delta = 1.0 / num_steps
    return noise_level * math.sqrt(t / max(1.0 - t, delta))


def flow_noise_moments(x: Tensor, v: Tensor, delta: float, std: Tensor) -> tuple[Tensor, Tensor]:
    """Flow-Noise transition: the Euler (ODE) mean x - delta v and the given standard deviation."""
    return x - delta * v, std


def flow_sde_moments(x: Tensor, v: Tensor, t: float, delta: float, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Flow-SDE transition (Euler-Maruyama of the marginal-preserving reverse SDE, module docstring).

    `sigma` is sigma_t per entry (0 where no noise goes: the mean there is the ODE step).
    """
    drift = v + sigma.square() / (2.0 * t) * (x + (1.0 - t) * v)
    return x - delta * drift, sigma * math.sqrt(delta)


def gaussian_log_density(x: Tensor, mean: Tensor, std: Tensor, mask: Tensor) -> Tensor:
    """sum over the masked entries of log N(x; mean, std^2), per sample: shape (B,)."""
    safe = torch.where(mask, std, torch.ones_like(std))
    log_p = -0.5 * ((x - mean) / safe).square() - safe.log() - LOG_SQRT_2PI
    return (log_p * mask).flatten(1).sum(dim=1)


def gaussian_entropy(std: Tensor, mask: Tensor) -> Tensor:
    """sum over the masked entries of the Gaussian entropy 0.5 log(2 pi e std^2), per sample: (B,)."""
    safe = torch.where(mask, std, torch.ones_like(std))
    return ((safe.log() + LOG_SQRT_2PI + 0.5) * mask).flatten(1).sum(dim=1)


# std_fn(x_k, v_k, t_k) -> the step's standard deviation (Flow-Noise) or sigma_t (Flow-SDE), full shape
# (B, chunk, max_action_dim), before the mask. Called right after the velocity, so a head may read what
# that call computed (the policy's Flow-Noise head reads the action expert's features).
StdFn = Callable[[Tensor, Tensor, float], Tensor]


@dataclass
class ChainRecord:
    """What one decode through `StochasticEuler` produced.

    Attributes:
        chain: (B, K + 1, chunk, max_action_dim): x_0 (the initial noise) .. x_K (the actions).
        means / stds: (B, K, chunk, max_action_dim): each transition's Gaussian (stds 0 off the mask).
        step_log_probs: (B, K): log-density of each transition (0 everywhere when deterministic).
        entropy: (B,): summed Gaussian entropy of the transitions.
    """

    chain: Tensor
    means: Tensor
    stds: Tensor
    step_log_probs: Tensor
    entropy: Tensor

    @property
    def log_prob(self) -> Tensor:
        return self.step_log_probs.sum(dim=1)


class StochasticEuler:
    """Stands in for LeRobot's RTCProcessor in `euler_integrate` for one stochastic decode.

    Args:
        chain_type: "flow_noise" or "flow_sde" (module docstring).
        num_steps: K, the number of Euler steps of the decode.
        std_fn: the step's std (Flow-Noise) or sigma_t (Flow-SDE) before masking (see `StdFn`).
        mask: (chunk, max_action_dim) or broadcastable bool: where noise goes and densities count.
        deterministic: every std 0 (the ODE itself); log-densities are then 0, not defined.
        forced_chain: re-evaluate this stored chain (B, K + 1, chunk, D) instead of sampling.
        generator: for the step noise (None: torch's global generator; else on the chain's device).
        checkpoint: with gradients enabled, recompute each step's velocity and std in the backward pass
            instead of keeping their activations (torch.utils.checkpoint, non-reentrant): an update's
            memory no longer grows with K passes of the action expert per row.
        step_context: entered around each step's velocity and std, in the forward pass and again in
            the recomputation (which runs after the decode, when the caller's hooks are gone): whatever
            `std_fn` reads from the model (a feature hook) must be set up here.
    """

    def __init__(
        self,
        *,
        chain_type: str,
        num_steps: int,
        std_fn: StdFn,
        mask: Tensor,
        deterministic: bool = False,
        forced_chain: Tensor | None = None,
        generator: torch.Generator | None = None,
        checkpoint: bool = False,
        step_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        if chain_type not in STOCHASTIC_CHAINS:
            raise ValueError(f"chain_type must be one of {STOCHASTIC_CHAINS}, got {chain_type!r}")
        if forced_chain is not None and forced_chain.shape[1] != num_steps + 1:
            raise ValueError(
                f"the stored chain has {forced_chain.shape[1]} states, a {num_steps}-step decode needs "
                f"{num_steps + 1} (x_0 .. x_K): was it sampled with another num_inference_steps / num_steps?"
            )
        self._type = chain_type
        self._num_steps = num_steps
        self._std_fn = std_fn
        self._mask = mask
        self._deterministic = deterministic
        self._forced = forced_chain
        self._generator = generator
        self._checkpoint = checkpoint
        self._step_context = step_context
        self._states: list[Tensor] = [] if forced_chain is None else [forced_chain[:, 0]]
        self._means: list[Tensor] = []
        self._stds: list[Tensor] = []
        self._log_probs: list[Tensor] = []
        self._entropies: list[Tensor] = []

    # ---- the RTCProcessor interface euler_integrate uses

    def is_debug_enabled(self) -> bool:
        return False

    def denoise_step(self, x_t: Tensor, time: float, original_denoise_step_partial, **_rtc_kwargs) -> Tensor:
        k = len(self._means)
        if k >= self._num_steps:
            raise RuntimeError(f"the decode ran more than the {self._num_steps} Euler steps this chain was set up for")
        if not self._states:
            self._states.append(x_t)  # the initial noise, as the sampler received it
        x = self._states[k] if self._forced is None else self._forced[:, k]
        delta = 1.0 / self._num_steps
        mask = self._mask.expand_as(x)

        def velocity_and_std(x_k: Tensor) -> tuple[Tensor, Tensor]:
            with self._step_context():
                v_k = original_denoise_step_partial(x_k)
                return v_k, torch.zeros_like(x_k) if self._deterministic else self._std_fn(x_k, v_k, time) * mask

        if self._checkpoint and torch.is_grad_enabled():
            v, std = torch.utils.checkpoint.checkpoint(velocity_and_std, x, use_reentrant=False)
        else:
            v, std = velocity_and_std(x)
        if self._type == "flow_noise":
            mean, std = flow_noise_moments(x, v, delta, std)
        else:
            mean, std = flow_sde_moments(x, v, time, delta, std)
        if self._forced is not None:
            x_next = self._forced[:, k + 1]
        elif self._deterministic:
            x_next = mean
        else:
            eps = torch.randn(x.shape, generator=self._generator, dtype=x.dtype, device=x.device)
            x_next = mean + std * eps
        noised = torch.zeros_like(mask) if self._deterministic else mask & (std > 0)
        self._log_probs.append(gaussian_log_density(x_next, mean, std, noised))
        self._entropies.append(gaussian_entropy(std, noised))
        self._means.append(mean)
        self._stds.append(std)
        if self._forced is None:
            self._states.append(x_next)
        # euler_integrate adds -delta * (returned velocity); its running x is not used (we keep the chain).
        return v.detach()

    # ---- results

    def record(self) -> ChainRecord:
        if len(self._means) != self._num_steps:
            raise RuntimeError(
                f"the decode ran {len(self._means)} of the {self._num_steps} Euler steps: the per-step seam "
                "was not called as expected (did LeRobot's euler_integrate change?)"
            )
        chain = self._forced if self._forced is not None else torch.stack(self._states, dim=1)
        return ChainRecord(
            chain=chain,
            means=torch.stack(self._means, dim=1),
            stds=torch.stack(self._stds, dim=1),
            step_log_probs=torch.stack(self._log_probs, dim=1),
            entropy=torch.stack(self._entropies, dim=1).sum(dim=1),
        )
