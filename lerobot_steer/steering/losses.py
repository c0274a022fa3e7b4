"""The losses of DSRL (NA and SAC), VGD and Dynamic VGD, written once.

Pure functions of networks and tensors: a policy's `forward()` (offline, lerobot-train) and an
`RLAlgorithm.update()` (online) call the same code. Each returns `(loss, metrics)`; metrics are
detached 0-d tensors named as in the papers (`critic_loss`, `q_mean`, `td_error`, `actor_loss`,
`alpha`, `alpha_loss`, `entropy`, `noise_critic_loss`, ...). They stay tensors so that a loop of
`utd` gradient steps does not synchronize the device once per metric; call `metrics_to_floats`
when logging.

Shapes: B = batch size. Critic outputs are (n_critics, B) (see `networks.CriticEnsemble`).
Rewards, terminations, step counts and log-probs are per transition, (B,) (a trailing (B, 1) is
accepted and flattened: a (B,) - (B, 1) broadcast to (B, B) is the classic silent SAC bug).

Transitions are chunk-level: one transition = one executed action chunk of k env steps, reward =
the (undiscounted) sum of the chunk's rewards, discount gamma^k with gamma per env step. The
DSRL/DPPO Robomimic convention (gamma once per chunk) is k = 1 with the chunk-level gamma.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .networks import QReduce, frozen_call, reduce_q, sigma_q

Metrics = dict[str, Tensor]


def metrics_to_floats(metrics: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Metrics as Python floats for `TrainingStats` / loggers (one sync per call)."""
    return {k: float(v) for k, v in metrics.items()}


def _per_sample(x: Tensor | float, batch_size: int, like: Tensor, name: str) -> Tensor:
    """A per-transition quantity as a (B,) float tensor; scalars broadcast, (B, 1) is flattened."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(batch_size)
    if t.numel() != batch_size or t.dim() > 2 or (t.dim() == 2 and t.shape[1] != 1):
        raise ValueError(f"{name}: expected shape ({batch_size},) or ({batch_size}, 1), got {tuple(t.shape)}")
    return t.reshape(-1)


@torch.no_grad()
def soft_td_target(
    reward: Tensor,
    next_q: Tensor,
    terminated: Tensor,
    *,
    gamma: float,
    n_steps: Tensor | int = 1,
    next_log_prob: Tensor | None = None,
    alpha: Tensor | float = 0.0,
    q_reduce: QReduce = "min",
    target_clamp: tuple[float, float] | None = None,
) -> Tensor:
    """y = R + gamma^k * (1 - terminated) * (reduce_j Qbar_j(s', a') - alpha * log pi(w'|s')).

    - `next_q` (n_critics, B): the target critics at (s', a'), a' from the current policy.
    - `terminated` cuts the bootstrap; a truncated (time-limit) transition must be passed with
      terminated = 0 so it still bootstraps from s'.
    - `n_steps` k: env steps the chunk executed, per transition (shorter when an episode ended
      mid-chunk), or one int for all.
    - `next_log_prob` None drops the entropy term (VGD, DSRL-pi0's `backup_entropy=False`); in
      DSRL-NA it is the *noise* actor's log pi(w'|s'), backed up into the *action* critic.
    - `target_clamp` (lo, hi): Dynamic VGD clamps y to +-(max |return|) (+-400 in the reference).
    Returns (B,) with no gradient.
    """
    b = next_q.shape[-1]
    v_next = reduce_q(next_q, q_reduce)
    if next_log_prob is not None:
        v_next = v_next - torch.as_tensor(alpha, dtype=v_next.dtype, device=v_next.device) * _per_sample(
            next_log_prob, b, v_next, "next_log_prob"
        )
    discount = gamma ** _per_sample(n_steps, b, v_next, "n_steps")
    not_done = 1.0 - _per_sample(terminated, b, v_next, "terminated")
    y = _per_sample(reward, b, v_next, "reward") + discount * not_done * v_next
    if target_clamp is not None:
        y = y.clamp(*target_clamp)
    return y


def critic_loss(q: Tensor, target: Tensor) -> tuple[Tensor, Metrics]:
    """Head-wise regression onto one target: 0.5 * sum_j MSE(Q_j(s, a), y) (SB3 SAC/DSRL/VGD).

    `q` (n_critics, B), `target` (B,), no gradient. Metrics: `critic_loss`; `q_mean`; `q_std`, the
    batch mean of sigma_Q; `td_error`, mean |Q_j(s, a) - y| over heads and samples, which Dynamic
    VGD averages over the update's gradient steps for w_global = exp(-beta * td_error / C_global);
    `td_target_mean`.
    """
    target = target.detach().reshape(1, -1)
    diff = q - target
    loss = 0.5 * diff.pow(2).mean(dim=1).sum()
    with torch.no_grad():
        metrics = {
            "critic_loss": loss.detach(),
            "q_mean": q.mean(),
            "q_std": sigma_q(q).mean(),
            "td_error": diff.abs().mean(),
            "td_target_mean": target.mean(),
        }
    return loss, metrics


def critic_td_loss(
    critic: nn.Module,
    critic_target: nn.Module,
    obs: Tensor,
    action: Tensor,
    reward: Tensor,
    next_obs: Tensor,
    next_action: Tensor,
    terminated: Tensor,
    *,
    gamma: float,
    n_steps: Tensor | int = 1,
    next_log_prob: Tensor | None = None,
    alpha: Tensor | float = 0.0,
    backup_entropy: bool = True,
    q_reduce: QReduce = "min",
    target_clamp: tuple[float, float] | None = None,
) -> tuple[Tensor, Metrics]:
    """The TD step of every method: critic_loss(Q(s, a), soft_td_target(..., Qbar(s', a'))).

    What "action" means is the caller's: DSRL-SAC passes noise (w, w' ~ pi(s')); DSRL-NA passes
    the executed chunk a and a' = base(s', w'), w' ~ pi(s'); VGD passes a' = guided decode at s'
    (no log-prob). `next_action`/`next_log_prob` should be computed under no_grad. With
    `backup_entropy=False` or `next_log_prob=None` the backup has no entropy term.
    """
    with torch.no_grad():
        next_q = critic_target(next_obs, next_action)
        y = soft_td_target(
            reward,
            next_q,
            terminated,
            gamma=gamma,
            n_steps=n_steps,
            next_log_prob=next_log_prob if backup_entropy else None,
            alpha=alpha,
            q_reduce=q_reduce,
            target_clamp=target_clamp,
        )
    return critic_loss(critic(obs, action), y)


def actor_loss(
    critic: nn.Module,
    obs: Tensor,
    action: Tensor,
    log_prob: Tensor,
    alpha: Tensor | float,
    *,
    q_reduce: QReduce = "min",
) -> tuple[Tensor, Metrics]:
    """SAC actor loss mean(alpha * log pi(w|s) - reduce_j Q_j(s, w)), w reparameterized.

    The critic's weights are used detached (`frozen_call`): gradients reach only the actor, through
    `action` and `log_prob`. In DSRL-NA the critic here is Q^W (the actor never sees Q^A or the base
    policy); in DSRL-SAC it is the noise critic itself. alpha is treated as a constant.
    """
    alpha = alpha.detach() if isinstance(alpha, Tensor) else alpha
    q = reduce_q(frozen_call(critic, obs, action), q_reduce)
    log_prob = log_prob.reshape(-1)
    loss = (alpha * log_prob - q).mean()
    with torch.no_grad():
        metrics = {"actor_loss": loss.detach(), "entropy": -log_prob.mean(), "q_pi_mean": q.mean()}
    return loss, metrics


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> tuple[Tensor, Metrics]:
    """SAC temperature loss -mean(log alpha * stopgrad(log pi + H_target)) (SB3 form).

    alpha rises when the entropy -log pi falls below `target_entropy` and falls above it. DSRL uses
    H_target = 0 for its noise actor; SB3/DSRL-pi0 "auto" is -act_dim (or -act_dim / 2).
    """
    loss = -(log_alpha * (log_prob.detach().reshape(-1) + target_entropy)).mean()
    with torch.no_grad():
        metrics = {"alpha_loss": loss.detach(), "alpha": log_alpha.detach().exp().reshape(())}
    return loss, metrics


def noise_critic_loss(
    noise_critic: nn.Module,
    action_critic: nn.Module,
    obs: Tensor,
    noise: Tensor,
    action: Tensor | Callable[[Tensor], Tensor],
    *,
    action_critic_obs: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """DSRL-NA distillation: 0.5 * sum_j MSE(Q^W_j(s, w), stopgrad Q^A_j(s, a(w))), head-wise.

    w ~ N(0, I) (unclipped: the prior the base policy was trained with, so Q^W is accurate wherever
    the base's own noise lands). `action` is the decoded chunk a(w) = base(s, w), or a callable
    noise -> chunk (a closure over the raw batch) that is called under no_grad. Head j of Q^W
    regresses onto head j of the *online* Q^A (not the target). `action_critic_obs` is for a Q^A
    with its own observation features (defaults to `obs`).
    """
    with torch.no_grad():
        a = action(noise) if callable(action) else action
        q_a = action_critic(obs if action_critic_obs is None else action_critic_obs, a)
    return _headwise_distillation(noise_critic(obs, noise), q_a, "Q^W", "noise_critic", "q_noise_mean")


def value_loss(value: nn.Module, action_critic: nn.Module, obs: Tensor, action: Tensor) -> tuple[Tensor, Metrics]:
    """(Dynamic) VGD's decode-free bootstrap: 0.5 * sum_j MSE(V_j(s), stopgrad Q_j(s, a)), head-wise,
    on the replay's own chunks a (what the acting policy, the guided base, chose at s).

    V is then the value of the policy that filled the buffer, so r + gamma^k V(s') is the TD target
    of that policy without decoding at s' (the reference decodes a guided chunk there in every
    update, 5 s per gradient step at batch 256 on this project's CPU). It is IQL's value regression
    at expectile 1/2. `value` is a critic over an empty action, called as value(obs, (B, 0)).
    """
    with torch.no_grad():
        q_a = action_critic(obs, action)
    v = value(obs, action.new_zeros(action.shape[0], 0))
    return _headwise_distillation(v, q_a, "V", "value", "value_mean")


def _headwise_distillation(student: Tensor, teacher: Tensor, what: str, name: str, mean_name: str) -> tuple[Tensor, Metrics]:
    """0.5 * sum_j MSE(student_j, teacher_j) with `<name>_loss`, `<mean_name>`, `<name>_error` metrics."""
    if student.shape != teacher.shape:
        raise ValueError(f"{what} {tuple(student.shape)} and its target {tuple(teacher.shape)} need the same heads and batch")
    diff = student - teacher
    loss = 0.5 * diff.pow(2).mean(dim=1).sum()
    with torch.no_grad():
        metrics = {f"{name}_loss": loss.detach(), mean_name: student.mean(), f"{name}_error": diff.abs().mean()}
    return loss, metrics
