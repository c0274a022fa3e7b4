"""Small networks the steering methods share: MLPs, a batched critic ensemble, a tanh-Gaussian actor.

They take flat feature tensors (see `encoders.py` for turning a LeRobot batch into one) and know
nothing of LeRobot policies or base models, so the same modules serve DSRL (noise actor, Q^A, Q^W),
VGD (Q on action chunks) and Dynamic VGD (4-head ensemble, sigma_Q).

Conventions from the reference code (SB3 fork used by DSRL/VGD): every hidden layer is
Linear -> LayerNorm -> Tanh, a critic takes concat(obs, flat action), Q values are reduced over heads
with `min` (or `mean`, as DSRL-pi0 does with 10 heads).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = str | type[nn.Module]
QReduce = Literal["min", "mean"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "mish": nn.Mish,
}


def make_activation(activation: Activation) -> nn.Module:
    """An activation module from a name ("tanh", "relu", ...) or a module class, so configs stay strings."""
    if isinstance(activation, str):
        try:
            return _ACTIVATIONS[activation.lower()]()
        except KeyError:
            raise ValueError(f"Unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}") from None
    return activation()


def build_mlp(
    in_dim: int,
    hidden_dims: Sequence[int],
    out_dim: int | None = None,
    *,
    activation: Activation = "tanh",
    layer_norm: bool = True,
) -> nn.Sequential:
    """Hidden layers Linear -> [LayerNorm] -> activation, then an optional linear output layer.

    The LayerNorm before the activation is what the DSRL/VGD configs use (`post_linear_modules`);
    with 3 x 2048 Tanh layers it keeps the critics stable at high update-to-data ratios.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for width in hidden_dims:
        layers.append(nn.Linear(dim, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(make_activation(activation))
        dim = width
    if out_dim is not None:
        layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# Ensembles: all members in one batched matmul
# ---------------------------------------------------------------------------------------------


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers evaluated with one batched matmul.

    Weights are stored stacked as (n, in, out). Input (B, in) is shared by all members (broadcast);
    input (n, B, in) gives each member its own rows. Output (n, B, out). Each member is initialised
    like `nn.Linear` (uniform in +-1/sqrt(in)), independently, so the heads start different.
    """

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # shared input: (B, in) @ (n, in, out) broadcasts to (n, B, out)
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"n={self.n}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine (gain, bias) per ensemble member."""

    def __init__(self, n: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(n, 1, dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, dim))
        # Identity affine for F.layer_norm: on CPU its no-affine path is ~2x slower than this.
        self.register_buffer("_one", torch.ones(dim), persistent=False)
        self.register_buffer("_zero", torch.zeros(dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x, (self.dim,), self._one, self._zero, self.eps)
        return torch.addcmul(self.bias, normed, self.weight)


class EnsembleMLP(nn.Module):
    """`n` MLPs of identical shape (as `build_mlp`) evaluated in one pass: (B|n,B, in) -> (n, B, out)."""

    def __init__(
        self,
        n: int,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        *,
        activation: Activation = "tanh",
        layer_norm: bool = True,
    ):
        super().__init__()
        self.n = n
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden_dims:
            layers.append(EnsembleLinear(n, dim, width))
            if layer_norm:
                layers.append(EnsembleLayerNorm(n, width))
            layers.append(make_activation(activation))
            dim = width
        layers.append(EnsembleLinear(n, dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def member(self, j: int) -> nn.Sequential:
        """Member j as a plain `nn.Sequential` of Linear/LayerNorm/activation with copied weights.

        For inspection and tests: it is a copy, training it does not change the ensemble.
        """
        out: list[nn.Module] = []
        for layer in self.layers:
            if isinstance(layer, EnsembleLinear):
                lin = nn.Linear(layer.in_dim, layer.out_dim)
                with torch.no_grad():
                    lin.weight.copy_(layer.weight[j].T)
                    lin.bias.copy_(layer.bias[j, 0])
                out.append(lin)
            elif isinstance(layer, EnsembleLayerNorm):
                ln = nn.LayerNorm(layer.dim, eps=layer.eps)
                with torch.no_grad():
                    ln.weight.copy_(layer.weight[j, 0])
                    ln.bias.copy_(layer.bias[j, 0])
                out.append(ln)
            else:
                out.append(type(layer)())
        return nn.Sequential(*out)


class CriticEnsemble(nn.Module):
    """Q_j(s, a), j = 1..n_critics, all heads in one batched forward; returns (n_critics, B).

    Critics are evaluated many times per update (TD target, critic loss, actor loss, DSRL-NA
    distillation, VGD guidance at every guided denoising step), so the heads share one pass instead
    of a Python loop. `action` may be a flat (B, act_dim) vector or a chunk (B, T, D): it is
    flattened, so `act_dim` is T * D for a chunk. The same class serves as Q^A (actions) and
    Q^W (noise) in DSRL-NA.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_critics: int = 2,
        hidden_dims: Sequence[int] = (256, 256, 256),
        *,
        activation: Activation = "tanh",
        layer_norm: bool = True,
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.n_critics = obs_dim, act_dim, n_critics
        self.net = EnsembleMLP(
            n_critics, obs_dim + act_dim, hidden_dims, 1, activation=activation, layer_norm=layer_norm
        )

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        x = torch.cat([obs.flatten(1), action.flatten(1)], dim=-1)
        return self.net(x).squeeze(-1)

    def head(self, j: int) -> nn.Sequential:
        """Head j alone as a plain MLP taking concat(obs, flat action) (a copy; see `EnsembleMLP.member`)."""
        return self.net.member(j)


def reduce_q(q: Tensor, how: QReduce = "min") -> Tensor:
    """Combine heads (n, B) -> (B): `min` (clipped double-Q, DSRL/VGD) or `mean` (DSRL-pi0 with 10 heads)."""
    if how == "min":
        return q.min(dim=0).values
    if how == "mean":
        return q.mean(dim=0)
    raise ValueError(f"q reduce must be 'min' or 'mean', got {how!r}")


def sigma_q(q: Tensor) -> Tensor:
    """Ensemble disagreement sigma_Q(s, a): unbiased std across heads, (n, B) -> (B).

    Dynamic VGD's local weight w_local = exp(-beta * sigma_Q / C_local) uses it (torch.std default,
    as in the reference). With a single head there is no disagreement: zeros.
    """
    if q.shape[0] < 2:
        return torch.zeros_like(q[0])
    return q.std(dim=0)


@torch.no_grad()
def polyak_update(
    target: nn.Module | Iterable[Tensor], online: nn.Module | Iterable[Tensor], tau: float
) -> None:
    """In place: target <- (1 - tau) * target + tau * online, over parameters (tau = 1 copies).

    One fused `_foreach_lerp_` over all tensors: the update runs after every gradient step.
    Modules must have the same parameter order (e.g. the target is a deepcopy of the online net).
    Buffers are not averaged; the networks here have none.
    """
    t = list(target.parameters()) if isinstance(target, nn.Module) else list(target)
    o = list(online.parameters()) if isinstance(online, nn.Module) else list(online)
    if len(t) != len(o):
        raise ValueError(f"polyak_update: {len(t)} target tensors vs {len(o)} online tensors")
    torch._foreach_lerp_(t, o, tau)


def frozen_call(module: nn.Module, *args, **kwargs):
    """Call `module` with detached parameters: gradients reach the inputs, never the module's weights.

    The SAC/DSRL actor loss differentiates Q(s, pi(s)) w.r.t. the action only; with this the critic
    needs no requires_grad toggling and collects no stale gradients. VGD's grad_a Q uses it too.
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    params.update(dict(module.named_buffers()))
    return torch.func.functional_call(module, params, args, kwargs)


# ---------------------------------------------------------------------------------------------
# Actor
# ---------------------------------------------------------------------------------------------


class ActorOutput(NamedTuple):
    action: Tensor  # (B, act_dim) in [-bound, bound]: a sample, or the mode in deterministic mode
    log_prob: Tensor  # (B,) log density of `action` under the squashed, scaled distribution
    mean_action: Tensor  # (B, act_dim) bound * tanh(mu): the deterministic action


class TanhGaussianActor(nn.Module):
    """pi(w | s): diagonal Gaussian, squashed by tanh and scaled to [-bound, bound] (SAC actor).

    In DSRL the "action" is the base policy's initial noise w; the bound b keeps it where the base
    was trained (b = 1.5 for DSRL-SAC on DPPO MLPs, 1-2.5 for pi0). log_std is clamped to [-20, 2]
    as in SB3 / jaxrl2. `log_prob` includes the tanh Jacobian and the -act_dim * log(bound) of the
    scaling, so the entropy and the temperature target refer to the distribution of w itself.
    """

    LOG_STD_MIN = -20.0
    LOG_STD_MAX = 2.0

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256, 256),
        bound: float = 1.0,
        *,
        activation: Activation = "tanh",
        layer_norm: bool = True,
    ):
        super().__init__()
        if bound <= 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.obs_dim, self.act_dim, self.bound = obs_dim, act_dim, float(bound)
        self.trunk = build_mlp(obs_dim, hidden_dims, activation=activation, layer_norm=layer_norm)
        latent = hidden_dims[-1] if len(hidden_dims) else obs_dim
        self.mu = nn.Linear(latent, act_dim)
        self.log_std = nn.Linear(latent, act_dim)

    def distribution_params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_std) of the Gaussian before squashing, log_std clamped to [-20, 2]."""
        h = self.trunk(obs)
        log_std = self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return self.mu(h), log_std

    def forward(self, obs: Tensor, deterministic: bool = False) -> ActorOutput:
        mu, log_std = self.distribution_params(obs)
        eps = torch.zeros_like(mu) if deterministic else torch.randn_like(mu)
        u = mu + log_std.exp() * eps  # reparameterized pre-squash sample
        gaussian_log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), stable for large |u|
        log_det_tanh = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        log_prob = gaussian_log_prob - log_det_tanh - self.act_dim * math.log(self.bound)
        mean_action = self.bound * torch.tanh(mu)
        action = mean_action if deterministic else self.bound * torch.tanh(u)
        return ActorOutput(action, log_prob, mean_action)
