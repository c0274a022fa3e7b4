"""Value guidance of a frozen base's denoising: VGD (fixed strength) and Dynamic VGD (adaptive).

At a guided denoising step the clean-action estimate x0_hat is moved along the critic's gradient,
x0_g = x0_hat + lambda * grad_a Q(s, a)|_{a = x0_hat}, and the base re-synthesizes its next sample
from x0_g (`BasePolicyAdapter.guided_sample`; DDIM x0-space and flow-matching velocity forms in
denoisers.py). Only the critic is differentiated, never the base.

The strength (as in the VGD reference code, DozenDucc/VGD and jebeom/VGD on GitHub):

    lambda_i = lambda_base * warmup(n_updates) * anneal(i) * weight

* `fixed` (VGD, Ye 2025): weight = 1; warmup = min(1, n_updates / guidance_warmup_steps) over
  critic gradient steps, so an untrained critic does not steer.
* `dynamic` (Dynamic VGD): weight = clamp(w_local * w_global, w_min, w_max) per sample, with
  w_local = exp(-beta * sigma_Q(s, x0_hat) / C_local) from the spread of the critic ensemble and
  w_global = exp(-beta * TD-error / C_global) from the critic's recent stability. When the critic
  is unsure (heads disagree) or unstable (large TD error) the policy falls back towards the base.

One difference from the reference code, on purpose: the reference takes the gradient at a look-ahead
action (the remaining steps run unguided from the current sample); here it is taken at the step's own
one-step estimate x0_hat, which costs no extra denoiser calls (a VLA base would pay a full decode per
guided step). The two coincide at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .denoisers import DenoiseStep
from .networks import QReduce, reduce_q, sigma_q

GUIDANCE_MODES = ("fixed", "dynamic")
ANNEALS = ("off", "linear", "cosine")

# critic over the executed chunk: action (B, n_exec, action_dim) -> Q per head (n_critics, B)
ChunkCritic = Callable[[Tensor], Tensor]


def warmup_factor(n_updates: int, warmup_steps: int) -> float:
    """VGD's lambda ramp: min(1, n_updates / warmup_steps) over critic gradient steps (1 if no warmup)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, n_updates / warmup_steps)


def step_anneal(index: int, num_steps: int, kind: str) -> float:
    """Per-denoising-step factor: `off` 1, `linear` (i+1)/N, `cosine` 1/2 - cos(pi (i+1)/N)/2."""
    if kind == "off":
        return 1.0
    progress = (index + 1) / num_steps
    if kind == "linear":
        return progress
    if kind == "cosine":
        return 0.5 - 0.5 * math.cos(math.pi * progress)
    raise ValueError(f"anneal must be one of {ANNEALS}, got {kind!r}")


def dynamic_weight(
    sigma: Tensor,
    td_error: Tensor | float,
    *,
    beta: float,
    c_local: float,
    c_global: float,
    weight_range: tuple[float, float] = (0.001, 1.0),
) -> tuple[Tensor, Tensor, Tensor]:
    """Dynamic VGD's (weight, w_local, w_global): clamp(exp(-b sigma/C_l) * exp(-b td/C_g), lo, hi).

    `sigma` (B,) is sigma_Q at the guided action, `td_error` the critic's recent mean |Q - y|.
    """
    w_local = torch.exp(-beta * sigma / c_local)
    td = torch.as_tensor(td_error, dtype=sigma.dtype, device=sigma.device)
    w_global = torch.exp(-beta * td / c_global)
    return (w_local * w_global).clamp(*weight_range), w_local, w_global


class ValueGuide:
    """A `Guide` for `BasePolicyAdapter.guided_sample` that shifts x0_hat up the critic's value.

    Args:
        critic: action chunk -> (n_critics, B) Q values (observations already bound; its weights
            should be detached, e.g. with `networks.frozen_call`, so guidance trains nothing). It is
            called outside inference mode: tensors it closes over that were made in inference mode
            must be cloned inside the call (see DynaVGDPolicy.make_guide).
        lambda_base: lambda_base * warmup, the strength before annealing and weighting.
        mode: "fixed" (VGD) or "dynamic" (Dynamic VGD).
        td_error: the critic's recent TD error (dynamic mode).
        q_reduce: how heads combine for the gradient ("min" in both references).
        action_clip: clamp x0_g to [-clip, clip] (Dynamic VGD's final_action_clip_value; only right
            for actions normalized to [-1, 1]), None to leave it.
        normalize_gradient: use grad_a Q / rms(grad_a Q) (per sample, RMS over the chunk's entries)
            instead of the raw gradient, so that lambda is the RMS shift of x0_hat per guided step in
            normalized action units, whatever the scale of Q (the references' raw gradient needs
            lambda retuned whenever the return scale or the critic's width changes).

    After a decode, `stats()` holds the means over guided steps and samples of `lambda` (the
    effective step lambda_i), `w_local`, `w_global`, `guidance_weight`, `sigma_q`, and what the
    shift did: `guidance_action_shift` (mean |x0_g - x0_hat| in normalized action units),
    `guidance_q_gain` (Q(x0_g) - Q(x0_hat), the reference's delta_q) and `guidance_grad_norm`.
    """

    def __init__(
        self,
        critic: ChunkCritic,
        *,
        lambda_base: float,
        mode: str = "dynamic",
        td_error: Tensor | float = 0.0,
        beta: float = 1.0,
        c_local: float = 5.0,
        c_global: float = 100.0,
        weight_range: tuple[float, float] = (0.001, 1.0),
        anneal: str = "off",
        q_reduce: QReduce = "min",
        action_clip: float | None = None,
        normalize_gradient: bool = False,
    ):
        if mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}")
        self.critic = critic
        self.lambda_base, self.mode, self.td_error = lambda_base, mode, td_error
        self.beta, self.c_local, self.c_global, self.weight_range = beta, c_local, c_global, weight_range
        self.anneal, self.q_reduce, self.action_clip = anneal, q_reduce, action_clip
        self.normalize_gradient = normalize_gradient
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    def __call__(self, step: DenoiseStep) -> Tensor:
        # The adapter calls guides with gradients enabled and outside inference mode (denoisers._call_guide).
        with torch.enable_grad():
            action = step.estimate.clone().requires_grad_(True)
            q = self.critic(action)
            (grad,) = torch.autograd.grad(reduce_q(q, self.q_reduce).sum(), action)
        q = q.detach()
        sigma = sigma_q(q)
        if self.mode == "dynamic":
            weight, w_local, w_global = dynamic_weight(
                sigma, self.td_error, beta=self.beta, c_local=self.c_local, c_global=self.c_global,
                weight_range=self.weight_range,
            )
        else:
            weight = w_local = torch.ones_like(sigma)
            w_global = torch.ones((), dtype=sigma.dtype, device=sigma.device)
        lam = self.lambda_base * step_anneal(step.index, step.num_steps, self.anneal) * weight  # (B,)
        action = action.detach()
        step_size = lam / grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12) if self.normalize_gradient else lam
        guided = action + step_size.view(-1, *([1] * (action.dim() - 1))) * grad
        if self.action_clip is not None:
            guided = guided.clamp(-self.action_clip, self.action_clip)
        with torch.no_grad():  # what guidance bought: the critic's value after minus before the shift
            q_gain = reduce_q(self.critic(guided), self.q_reduce) - reduce_q(q, self.q_reduce)
        self._record(
            **{"lambda": lam.mean(), "w_local": w_local.mean(), "w_global": w_global.mean(),
               "guidance_weight": weight.mean(), "sigma_q": sigma.mean(),
               "guidance_q_gain": q_gain.mean(), "guidance_action_shift": (guided - action).abs().mean(),
               "guidance_grad_norm": grad.flatten(1).norm(dim=1).mean()}
        )
        return guided - action

    def _record(self, **values: Tensor) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.detach()
        self._count += 1

    def stats(self) -> dict[str, Tensor]:
        """Means over the guided steps of the last decode(s) (empty if no step was guided)."""
        return {name: total / self._count for name, total in self._sums.items()} if self._count else {}
