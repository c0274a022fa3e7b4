"""The shared steering networks and losses (DSRL-NA, DSRL-SAC, VGD, Dynamic VGD), on tensors only.

Each test names the behaviour a method relies on: TD bootstrapping over chunk transitions, the
batched critic ensemble being the same function as separate heads, soft target updates, the
squashed actor's density, and — end to end on a toy bandit whose best noise is known — that
DSRL-SAC and DSRL-NA learn to pick it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import distributions as D

from lerobot.configs import FeatureType, PolicyFeature

from lerobot_steer.steering.encoders import ObservationEncoder, SpatialSoftmax, StateEncoder
from lerobot_steer.steering.losses import (
    actor_loss,
    critic_loss,
    critic_td_loss,
    metrics_to_floats,
    noise_critic_loss,
    soft_td_target,
    temperature_loss,
)
from lerobot_steer.steering.networks import (
    CriticEnsemble,
    TanhGaussianActor,
    build_mlp,
    polyak_update,
    reduce_q,
    sigma_q,
)


@pytest.fixture(autouse=True)
def _one_thread_seeded():
    """Tiny networks run fastest on one thread (and the CI box is shared); fixed seed per test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# TD target and critic loss
# --------------------------------------------------------------------------------------------


def test_td_target_bootstraps_through_truncation_but_not_termination():
    reward = torch.tensor([1.0, 1.0, 1.0])
    next_q = torch.tensor([[5.0, 5.0, 5.0], [4.0, 6.0, 3.0]])  # min over heads: [4, 5, 3]
    terminated = torch.tensor([0.0, 1.0, 0.0])  # the third transition was truncated: still bootstraps
    y = soft_td_target(reward, next_q, terminated, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1 + 0.9 * 4, 1.0, 1 + 0.9 * 3]))


def test_td_target_discounts_each_transition_by_gamma_to_its_chunk_length():
    reward = torch.tensor([0.0, -2.0, -1.0])
    next_q = torch.full((2, 3), -10.0)
    k = torch.tensor([4, 2, 1])  # env steps each chunk executed (the second ended early)
    y = soft_td_target(reward, next_q, torch.zeros(3, dtype=torch.bool), gamma=0.99, n_steps=k)
    torch.testing.assert_close(y, torch.tensor([-10 * 0.99**4, -2 - 10 * 0.99**2, -1 - 10 * 0.99]))


def test_td_target_entropy_term_mean_reduction_and_clamp():
    reward = torch.tensor([[0.5], [0.5]])  # (B, 1) from a buffer must not broadcast to (B, B)
    next_q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    log_prob = torch.tensor([-1.0, 2.0])
    y = soft_td_target(reward, next_q, torch.zeros(2), gamma=0.5, next_log_prob=log_prob, alpha=0.25, q_reduce="mean")
    torch.testing.assert_close(y, torch.tensor([0.5 + 0.5 * (2.0 + 0.25), 0.5 + 0.5 * (3.0 - 0.5)]))
    y_clamped = soft_td_target(reward, next_q * 1000, torch.zeros(2), gamma=1.0, target_clamp=(-400.0, 400.0))
    assert y_clamped.max() == 400.0


def test_critic_loss_is_half_sum_of_headwise_mse_and_reports_mean_abs_td_error():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]], requires_grad=True)
    y = torch.tensor([2.0, 2.0])
    loss, m = critic_loss(q, y)
    # head 0: errors (-1, 0) -> MSE 0.5; head 1: (1, -2) -> MSE 2.5
    assert loss.item() == pytest.approx(0.5 * (0.5 + 2.5))
    assert m["td_error"].item() == pytest.approx((1 + 0 + 1 + 2) / 4)
    assert m["q_mean"].item() == pytest.approx(1.5)
    loss.backward()
    assert not m["critic_loss"].requires_grad
    assert set(metrics_to_floats(m)) >= {"critic_loss", "q_mean", "q_std", "td_error"}


def test_critic_td_loss_uses_the_target_network_and_no_entropy_when_disabled():
    critic = CriticEnsemble(3, 2, n_critics=2, hidden_dims=(16,))
    target = copy.deepcopy(critic)
    polyak_update(target, CriticEnsemble(3, 2, n_critics=2, hidden_dims=(16,)), tau=1.0)  # differ from online
    s, a, s2, a2 = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 3), torch.randn(5, 2)
    r, term = torch.randn(5), torch.zeros(5)
    loss, _ = critic_td_loss(critic, target, s, a, r, s2, a2, term, gamma=0.9, next_log_prob=torch.ones(5),
                             alpha=7.0, backup_entropy=False)
    y = r + 0.9 * target(s2, a2).min(0).values
    expected = 0.5 * ((critic(s, a) - y) ** 2).mean(1).sum()
    torch.testing.assert_close(loss, expected)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def test_build_mlp_hidden_layers_are_linear_layernorm_tanh():
    mlp = build_mlp(4, (8, 8), 2)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "LayerNorm", "Tanh", "Linear", "LayerNorm", "Tanh", "Linear"]


def test_ensemble_batched_forward_equals_each_head_run_alone():
    critic = CriticEnsemble(obs_dim=5, act_dim=4 * 3, n_critics=4, hidden_dims=(32, 32))
    obs, chunk = torch.randn(7, 5), torch.randn(7, 4, 3)  # chunks are flattened
    q = critic(obs, chunk)
    assert q.shape == (4, 7)
    x = torch.cat([obs, chunk.flatten(1)], -1)
    for j in range(4):
        torch.testing.assert_close(q[j], critic.head(j)(x).squeeze(-1), rtol=1e-5, atol=1e-5)
    assert sigma_q(q).min() > 0  # heads are initialised independently
    torch.testing.assert_close(reduce_q(q, "min"), q.min(0).values)
    torch.testing.assert_close(sigma_q(q), q.std(0))


def test_ensemble_heads_learn_independently():
    critic = CriticEnsemble(3, 2, n_critics=3, hidden_dims=(8,))
    critic(torch.randn(4, 3), torch.randn(4, 2))[1].sum().backward()
    w = critic.net.layers[0].weight.grad  # (n, in, out)
    assert w[1].abs().sum() > 0 and w[0].abs().sum() == 0 and w[2].abs().sum() == 0


def test_polyak_moves_target_a_fraction_tau_toward_online():
    online, target = build_mlp(3, (4,), 1), build_mlp(3, (4,), 1)
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, online, tau=0.1)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    polyak_update(target, online, tau=1.0)
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, o)


def test_actor_log_prob_matches_torch_transformed_distribution_and_stays_in_bound():
    bound = 1.5
    actor = TanhGaussianActor(obs_dim=4, act_dim=3, hidden_dims=(16,), bound=bound)
    with torch.no_grad():
        actor.log_std.bias.fill_(0.7)  # wide enough that many samples sit near the bound
    obs = torch.randn(512, 4)
    out = actor(obs)
    mu, log_std = actor.distribution_params(obs)
    reference = D.TransformedDistribution(
        D.Normal(mu, log_std.exp()), [D.TanhTransform(), D.AffineTransform(0.0, bound)]
    )
    # Compare away from the edge, where float32 atanh in the reference itself loses precision.
    inner = (out.action.abs() < 0.999 * bound).all(-1)
    torch.testing.assert_close(out.log_prob[inner], reference.log_prob(out.action).sum(-1)[inner],
                               rtol=1e-4, atol=1e-4)
    assert out.action.abs().max() <= bound
    assert out.action.abs().max() > 1.0  # the bound scales the squashed sample
    det = actor(obs, deterministic=True)
    torch.testing.assert_close(det.action, bound * torch.tanh(mu))
    torch.testing.assert_close(det.action, out.mean_action)


def test_actor_is_reparameterized_and_log_std_clamped():
    actor = TanhGaussianActor(2, 2, (8,), bound=1.0)
    with torch.no_grad():
        actor.log_std.bias.fill_(50.0)
    _, log_std = actor.distribution_params(torch.randn(3, 2))
    assert log_std.max() == TanhGaussianActor.LOG_STD_MAX
    out = actor(torch.randn(3, 2))
    out.action.sum().backward()
    assert actor.mu.weight.grad.abs().sum() > 0


def test_actor_loss_trains_the_actor_only_and_temperature_follows_entropy():
    actor, critic = TanhGaussianActor(3, 2, (8,)), CriticEnsemble(3, 2, 2, (8,))
    obs = torch.randn(6, 3)
    out = actor(obs)
    loss, m = actor_loss(critic, obs, out.action, out.log_prob, alpha=torch.tensor(0.2))
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert actor.mu.weight.grad.abs().sum() > 0
    q = critic(obs, out.action).min(0).values
    assert m["actor_loss"].item() == pytest.approx((0.2 * out.log_prob - q).mean().item(), abs=1e-6)

    log_alpha = torch.zeros((), requires_grad=True)
    low_entropy_log_prob = torch.full((6,), 5.0)  # entropy -5 below a target of 0 -> alpha must grow
    a_loss, am = temperature_loss(log_alpha, low_entropy_log_prob, target_entropy=0.0)
    a_loss.backward()
    assert log_alpha.grad < 0 and am["alpha"].item() == pytest.approx(1.0)


def test_noise_critic_regresses_each_head_onto_the_action_critic_of_the_decoded_noise():
    q_a, q_w = CriticEnsemble(3, 2, 2, (8,)), CriticEnsemble(3, 2, 2, (8,))
    A = torch.tensor([[2.0, 0.0], [1.0, -1.0]])  # noqa: N806  (a matrix)
    s, w = torch.randn(5, 3), torch.randn(5, 2)
    loss_fn, _ = noise_critic_loss(q_w, q_a, s, w, lambda noise: noise @ A.T)
    loss_t, m = noise_critic_loss(q_w, q_a, s, w, w @ A.T)
    expected = 0.5 * ((q_w(s, w) - q_a(s, w @ A.T)) ** 2).mean(1).sum()  # head j onto head j
    torch.testing.assert_close(loss_fn, expected)
    torch.testing.assert_close(loss_t, expected)
    loss_t.backward()
    assert all(p.grad is None for p in q_a.parameters())
    assert m["noise_critic_loss"].item() == pytest.approx(expected.item())


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


def test_state_encoder_concatenates_state_then_env_state_at_the_last_time_step():
    feats = {
        "observation.environment_state": PolicyFeature(FeatureType.ENV, (2,)),
        "observation.state": PolicyFeature(FeatureType.STATE, (3,)),
    }
    enc = StateEncoder(feats)
    state = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)  # (B, T=2, 3): history
    env = torch.tensor([[7.0, 8.0], [9.0, 10.0]])
    out = enc({"observation.state": state, "observation.environment_state": env})
    torch.testing.assert_close(out, torch.cat([state[:, -1], env], -1))
    assert enc.output_dim == 5


def test_spatial_softmax_returns_the_position_of_a_peak():
    ss = SpatialSoftmax(5, 9)
    x = torch.full((1, 1, 5, 9), -1e4)
    x[0, 0, 4, 0] = 0.0  # bottom-left
    torch.testing.assert_close(ss(x), torch.tensor([[-1.0, 1.0]]))


@pytest.mark.parametrize("shared,pooling", [(True, "spatial_softmax"), (False, "avg")])
def test_observation_encoder_combines_state_and_cameras(shared, pooling):
    feats = {
        "observation.state": PolicyFeature(FeatureType.STATE, (6,)),
        "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 24, 32)),
        "observation.images.wrist": PolicyFeature(FeatureType.VISUAL, (3, 24, 32)),
        "observation.language.tokens": PolicyFeature(FeatureType.LANGUAGE, (8,)),
    }
    enc = ObservationEncoder(feats, image_channels=(8, 8), image_strides=(2, 1), image_latent_dim=10,
                             image_pooling=pooling, shared_image_encoder=shared)
    batch = {
        "observation.state": torch.randn(4, 6),
        "observation.images.front": torch.rand(4, 3, 24, 32),
        "observation.images.wrist": torch.rand(4, 1, 3, 24, 32),  # with a history dim
    }
    z = enc(batch)
    assert z.shape == (4, enc.output_dim) and enc.output_dim == 6 + 2 * 10
    torch.testing.assert_close(z[:, :6], batch["observation.state"])
    # cameras are encoded separately: changing the wrist image leaves the front latent unchanged
    batch2 = dict(batch, **{"observation.images.wrist": torch.rand(4, 1, 3, 24, 32)})
    z2 = enc(batch2)
    torch.testing.assert_close(z2[:, 6:16], z[:, 6:16])
    assert (z2[:, 16:] - z[:, 16:]).abs().max() > 0
    z.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


# --------------------------------------------------------------------------------------------
# Toy steering problem: a fixed linear "base policy" a = A w + b, one-step bandit (gamma = 0)
# reward -||a - a*||^2, so the best noise is w* = A^-1 (a* - b).
# --------------------------------------------------------------------------------------------

OBS_DIM, NOISE_DIM = 3, 2
A_BASE = torch.tensor([[1.0, 0.5], [-0.3, 0.8]])
B_BASE = torch.tensor([0.2, -0.1])
W_STAR = torch.tensor([0.6, -0.5])
A_STAR = A_BASE @ W_STAR + B_BASE


def base_decode(w: torch.Tensor) -> torch.Tensor:
    return w @ A_BASE.T + B_BASE


def bandit_reward(a: torch.Tensor) -> torch.Tensor:
    return -(a - A_STAR).pow(2).sum(-1)


def train_toy_dsrl(variant: str, updates: int = 300, batch: int = 128, lr: float = 3e-3, bound: float = 1.5,
                   distill_steps: int = 2) -> tuple[list[dict[str, float]], torch.Tensor, CriticEnsemble]:
    """DSRL on the toy base: 'sac' = critic on noise; 'na' = Q^A on actions, Q^W distilled, actor on Q^W.

    Prefill 512 transitions with w ~ N(0, I) (clipped to the bound for SAC, as its buffer holds noise),
    then per update: act 8 times with the stochastic actor, one alpha / critic / [distillation] /
    actor step, Polyak tau = 0.005. Returns the per-update metrics, the deterministic mean noise and
    the critic the actor climbs (Q(s, w) for SAC, Q^W(s, w) for NA).
    """
    hidden = (64, 64)
    actor = TanhGaussianActor(OBS_DIM, NOISE_DIM, hidden, bound)
    critic = CriticEnsemble(OBS_DIM, NOISE_DIM, 2, hidden)  # Q(s, w) for SAC, Q^A(s, a) for NA
    critic_target = copy.deepcopy(critic)
    noise_critic = CriticEnsemble(OBS_DIM, NOISE_DIM, 2, hidden) if variant == "na" else None
    log_alpha = torch.zeros((), requires_grad=True)
    opt_actor = torch.optim.Adam(actor.parameters(), lr)
    opt_critic = torch.optim.Adam(critic.parameters(), lr)
    opt_alpha = torch.optim.Adam([log_alpha], lr)
    opt_noise = torch.optim.Adam(noise_critic.parameters(), lr) if noise_critic else None

    def stored(w: torch.Tensor) -> torch.Tensor:  # what the buffer keeps as the "action"
        return w if variant == "sac" else base_decode(w)

    w0 = torch.randn(512, NOISE_DIM)
    if variant == "sac":
        w0 = w0.clamp(-bound, bound)
    states, actions, rewards = [torch.randn(512, OBS_DIM)], [stored(w0)], [bandit_reward(base_decode(w0))]
    history = []
    for _ in range(updates):
        with torch.no_grad():
            s_new = torch.randn(8, OBS_DIM)
            w_new = actor(s_new).action
        states.append(s_new), actions.append(stored(w_new)), rewards.append(bandit_reward(base_decode(w_new)))
        S, X, R = torch.cat(states), torch.cat(actions), torch.cat(rewards)  # noqa: N806  (whole data sets)
        idx = torch.randint(len(S), (batch,))
        s, x, r = S[idx], X[idx], R[idx]

        pi = actor(s)
        loss, m_alpha = temperature_loss(log_alpha, pi.log_prob, target_entropy=-float(NOISE_DIM))
        opt_alpha.zero_grad(), loss.backward(), opt_alpha.step()
        alpha = log_alpha.detach().exp()

        with torch.no_grad():  # next state = s (unused: gamma = 0 and every transition terminates)
            nxt = actor(s)
        loss, m_critic = critic_td_loss(critic, critic_target, s, x, r, s, stored(nxt.action), torch.ones(batch),
                                        gamma=0.0, next_log_prob=nxt.log_prob, alpha=alpha)
        opt_critic.zero_grad(), loss.backward(), opt_critic.step()

        m_noise: dict[str, torch.Tensor] = {}
        if variant == "na":
            for _ in range(distill_steps):
                s_d = S[torch.randint(len(S), (batch,))]
                loss, m_noise = noise_critic_loss(noise_critic, critic, s_d, torch.randn(batch, NOISE_DIM), base_decode)
                opt_noise.zero_grad(), loss.backward(), opt_noise.step()

        loss, m_actor = actor_loss(noise_critic if variant == "na" else critic, s, pi.action, pi.log_prob, alpha)
        opt_actor.zero_grad(), loss.backward(), opt_actor.step()
        polyak_update(critic_target, critic, tau=0.005)
        history.append(metrics_to_floats({**m_alpha, **m_critic, **m_noise, **m_actor}))
    with torch.no_grad():
        mean_noise = actor(torch.randn(256, OBS_DIM), deterministic=True).action.mean(0)
    return history, mean_noise, (noise_critic if variant == "na" else critic)


def _avg(history: list[dict[str, float]], key: str, part: slice) -> float:
    rows = history[part]
    return sum(h[key] for h in rows) / len(rows)


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_toy_dsrl_learns_the_noise_that_makes_the_base_hit_the_target(variant):
    # Tolerances hold with margin over 8 seeds (worst seen: critic ratio 0.023, distillation loss
    # 0.027, R^2 0.96, distance 0.18); the test itself runs seed 0.
    history, mean_noise, climbed_critic = train_toy_dsrl(variant)
    first, last = slice(0, 20), slice(-20, None)
    # the critic fits the reward (gamma = 0: the TD target is the reward itself)
    assert _avg(history, "critic_loss", last) < 0.05 * _avg(history, "critic_loss", first)
    # the critic the actor climbs ranks noises by their true reward (for NA: through distillation)
    with torch.no_grad():
        s, w = torch.randn(2000, OBS_DIM), torch.randn(2000, NOISE_DIM).clamp(-1.5, 1.5)
        true_q = bandit_reward(base_decode(w))
        r2 = 1 - (reduce_q(climbed_critic(s, w), "mean") - true_q).pow(2).mean() / true_q.var()
    assert r2 > 0.9
    if variant == "na":
        assert _avg(history, "noise_critic_loss", last) < 0.1
    # the actor's Q term improves (max Q = 0 at w*) ...
    q_first, q_last = _avg(history, "q_pi_mean", first), _avg(history, "q_pi_mean", last)
    assert q_last > 0.5 * q_first and q_last > -0.8
    # ... and its mean noise ends near w*, from ||w*|| = 0.78 away at initialisation
    assert torch.linalg.vector_norm(mean_noise - W_STAR) < 0.25, mean_noise
    assert math.isfinite(history[-1]["alpha"]) and history[-1]["alpha"] < 1.0
