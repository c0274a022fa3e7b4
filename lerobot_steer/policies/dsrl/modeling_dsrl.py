"""DSRLPolicy: a frozen LeRobot base policy steered through its initial noise.

    observation --actor--> noise w --base (frozen, deterministic)--> executed action chunk

Only the actor, the critics and the temperature train. The base is a `BasePolicyAdapter` (DDIM for
diffusion, Euler for pi0/pi05/smolvla): the same observation and noise always give the same chunk.

Two variants (Wagenmaker et al. 2025, "Steering Your Diffusion Policy with Latent Space RL"):

* DSRL-NA: Q^A(s, a) on the executed chunk a (normalized, n_exec x action_dim) learns by TD from
  recorded or collected chunks; Q^W(s, w) regresses head-wise onto Q^A(s, base(s, w)) for fresh
  w ~ N(0, I); the actor maximizes Q^W. Needs only (s, a, r, s'), so it trains offline.
* DSRL-SAC: plain SAC with the noise as the action, Q(s, w). Needs the noise of each transition.

The losses are those of `lerobot_steer.steering.losses`; `forward()` (lerobot-train) and the online
`DSRLAlgorithm.update()` both go through `compute_loss()`.

Checkpoints: `save_pretrained` writes config.json and model.safetensors for the trained networks
only, and the base (weights, config, processors) once, into a `base_policy/` subfolder;
`from_pretrained` rebuilds the base from there, so `--policy.path` alone works in lerobot-eval,
lerobot-rollout and `--resume`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from lerobot.policies.pretrained import PreTrainedPolicy

from lerobot_steer.policies.common.frozen_base import (
    BASE_POLICY_DIR,  # noqa: F401  (re-exported: the folder name of the base in a checkpoint)
    ChunkTransitions,
    ObservationCritic,
    SteeringPolicyMixin,
    make_observation_encoder,
    observations as _observations,
    unnormalized_feature_stats,
)
from lerobot_steer.steering.base_adapter import BasePolicyAdapter
from lerobot_steer.steering.encoders import ObservationEncoder
from lerobot_steer.steering.losses import (
    actor_loss,
    critic_td_loss,
    metrics_to_floats,
    noise_critic_loss,
    temperature_loss,
)
from lerobot_steer.steering.networks import ActorOutput, TanhGaussianActor, polyak_update

from .configuration_dsrl import DSRLConfig


class NoiseActor(nn.Module):
    """pi(w | s): an observation encoder and a tanh-Gaussian head bounded to [-bound, bound]."""

    def __init__(self, encoder: ObservationEncoder, noise_dim: int, config: DSRLConfig):
        super().__init__()
        self.encoder = encoder
        self.head = TanhGaussianActor(
            encoder.output_dim, noise_dim, config.hidden_dims, config.noise_bound,
            activation=config.activation, layer_norm=config.layer_norm,
        )

    def forward(self, obs: dict[str, Tensor], deterministic: bool = False) -> ActorOutput:
        return self.head(self.encoder(obs), deterministic=deterministic)


class DSRLPolicy(SteeringPolicyMixin, PreTrainedPolicy):
    """Diffusion Steering via RL over any LeRobot base whose `predict_action_chunk` takes `noise=`.

    Args:
        config: the DSRL config (its `base_policy_path` names the base of a fresh run).
        base_adapter: an in-memory base instead of loading one (tests, notebooks).
        base_policy_dir: set by `from_pretrained`: the checkpoint's own `base_policy/` copy.
        dataset_meta: passed by LeRobot's `make_policy` when training on a dataset: its features are
            checked against the base, its reward column and per-episode success are read.
    """

    config_class = DSRLConfig
    name = "dsrl"

    def __init__(
        self,
        config: DSRLConfig,
        *,
        base_adapter: BasePolicyAdapter | None = None,
        base_policy_dir: str | Path | None = None,
        dataset_meta=None,
        **kwargs,
    ):
        super().__init__(config)
        config.resolve_variant("na" if dataset_meta is not None else "sac")
        config.resolve_na_learning(online=False)  # lerobot-steer-rl resolved its online choices already
        self._init_base(base_adapter, base_policy_dir, dataset_meta)

        base_noise = self.adapter.noise_shape(1)
        self.chunk_length, self.noise_width = base_noise[1], base_noise[2]
        steps = {"full": self.chunk_length, "executed": config.n_exec}.get(config.noise_layout, 1)
        self.noise_dim = steps * self.noise_width
        self.action_dim = self.adapter.action_dim

        scales = unnormalized_feature_stats(config, self.adapter.preprocessor)
        self.actor = NoiseActor(make_observation_encoder(config, scales), self.noise_dim, config)
        critic_input = config.n_exec * self.action_dim if config.variant == "na" else self.noise_dim
        self.critic = ObservationCritic(make_observation_encoder(config, scales), critic_input, config)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.noise_critic = (
            ObservationCritic(make_observation_encoder(config, scales), self.noise_dim, config) if config.variant == "na" else None
        )
        # DSRL-NA bootstrapping from the noise critic (na_bootstrap="noise_critic") needs its target.
        self.noise_critic_target = (
            copy.deepcopy(self.noise_critic).requires_grad_(False)
            if self.noise_critic is not None and config.na_bootstrap == "noise_critic" else None
        )
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.reset()

    # ------------------------------------------------------------------------------ base binding

    def _check_dataset(self, dataset_meta) -> None:
        super()._check_dataset(dataset_meta)
        if self.config.variant == "sac":
            raise ValueError(
                "--policy.variant=sac learns from the noise of each transition, which a dataset of recorded "
                "actions does not have: train offline with --policy.variant=na (the action critic learns "
                "from recorded chunks), or train DSRL-SAC online."
            )

    # ------------------------------------------------------------------------------ noise <-> base

    def base_noise(self, w: Tensor) -> Tensor:
        """Actor-space noise (B, noise_dim) -> the base's initial noise (B, chunk_length, noise_width)."""
        b, layout = w.shape[0], self.config.noise_layout
        if layout == "full":
            return w.reshape(b, self.chunk_length, self.noise_width)
        if layout in ("executed", "repeat_executed"):
            start, n_exec = self.adapter.executed_start, self.config.n_exec
            noise = w.new_zeros(b, self.chunk_length, self.noise_width)
            executed = w.reshape(b, -1, self.noise_width).expand(b, n_exec, self.noise_width)
            noise[:, start : start + n_exec] = executed
            return noise
        return w.reshape(b, 1, self.noise_width).expand(b, self.chunk_length, self.noise_width)

    def prior_noise(self, batch_size: int) -> Tensor:
        """Fresh actor-space N(0, I) noise: what the base was trained to denoise (Q^W distillation)."""
        return torch.randn(batch_size, self.noise_dim, device=self.log_alpha.device)

    def prefill_noise(self, batch_size: int) -> Tensor:
        """Noise to act with before the first update: N(0, I) clipped to the actor's bound, as the
        reference prefills. Unclipped draws (|w| up to ~4) would teach the critic about noise the
        actor can never produce, and a repeated layout would shift whole chunks by up to 4 sigma."""
        bound = self.config.noise_bound
        return self.prior_noise(batch_size).clamp(-bound, bound)

    def decode(self, obs: dict[str, Tensor], w: Tensor) -> Tensor:
        """The executed chunk (B, n_exec, action_dim), normalized, for actor-space noise w.

        Stateless, for training batches: single-step observations of a history base are treated
        as a fresh episode (the step repeated over the history), never pushed into the history
        that `select_action` keeps for acting.
        """
        return self.adapter.sample(self._as_history(obs), self.base_noise(w))[:, : self.config.n_exec]

    # ----------------------------------------------------------------------------------- acting

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """Actor -> noise -> base: the executed chunk (B, n_exec, action_dim), normalized.

        `noise` (the base's shape, see `adapter.noise_shape`) bypasses the actor. `deterministic=`
        (default `config.deterministic_actions`) uses the actor's mean noise instead of a sample.
        """
        obs = _observations(batch)
        if noise is None:
            deterministic = kwargs.get("deterministic")
            deterministic = self.config.deterministic_actions if deterministic is None else deterministic
            noise = self.base_noise(self.actor(obs, deterministic=deterministic).action)
        return self.adapter.sample(obs, noise)[:, : self.config.n_exec]

    # What `reference_chunk` shows beside the steered chunk (videos' trails legend).
    reference_labels = ("steered", "base, N(0,I) noise")

    def reference_noise(self, batch_size: int) -> None:
        """None: the steered chunk comes from the actor's noise, not from a shared draw."""
        return None

    def reference_chunk(self, obs: dict[str, Tensor], noise: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """What the base does unsteered for the same observations (with their history): its own
        N(0, I) prior, drawn from `generator` so the run's random stream is left as it was."""
        return self.adapter.sample(obs, self.adapter.sample_noise(next(iter(obs.values())).shape[0], generator=generator))

    has_deterministic_mode = True

    @contextlib.contextmanager
    def acting_mode(self, deterministic: bool) -> Iterator[None]:
        """Act on the actor's mean noise (True) or on samples (False) inside the block."""
        saved, self.config.deterministic_actions = self.config.deterministic_actions, deterministic
        try:
            yield
        finally:
            self.config.deterministic_actions = saved

    @torch.no_grad()
    def collect_chunk(self, batch: dict[str, Tensor], mode: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The chunk and the actor-space noise that made it (DSRL-SAC's critic input): the clipped
        prior in the prefill, an actor sample when exploring, its mean when greedy."""
        obs = _observations(batch)
        if mode == "prior":
            w = self.prefill_noise(next(iter(obs.values())).shape[0])
        else:
            w = self.actor(obs, deterministic=mode == "greedy").action
        chunk = self.adapter.sample(obs, self.base_noise(w))
        extras = {"noise": w.cpu()}
        if self.config.variant == "na" and self.config.na_aliases:
            extras.update(self.acting_aliases(obs, self.config.na_aliases))
        return chunk, extras

    @torch.no_grad()
    def acting_aliases(self, obs: dict[str, Tensor], k: int) -> dict[str, Tensor]:
        """k prior noises per env and the executed chunks the base decodes from them at these
        observations (with the history the acting decode just used): DSRL-NA's distillation pairs,
        `alias_noise` (B, k, noise_dim) and `alias_action` (B, k, n_exec, action_dim)."""
        b = next(iter(obs.values())).shape[0]
        with_history = {**obs, **self.adapter.history_frames()}  # after the acting decode pushed this frame
        repeated = {key: v.repeat_interleave(k, dim=0) if isinstance(v, Tensor) else [x for x in v for _ in range(k)]
                    for key, v in with_history.items()}
        w = self.prior_noise(b * k)
        a = self.adapter.sample(repeated, self.base_noise(w))[:, : self.config.n_exec]
        return {"alias_noise": w.reshape(b, k, -1).cpu(), "alias_action": a.reshape(b, k, *a.shape[1:]).cpu()}

    # ---------------------------------------------------------------------------------- training

    def get_optim_params(self) -> list[dict]:
        """One param group per trained network, each with its own lr (the base is not included)."""
        c = self.config
        groups = [
            {"params": list(self.actor.parameters()), "lr": c.actor_lr},
            {"params": list(self.critic.parameters()), "lr": c.critic_lr},
            {"params": [self.log_alpha], "lr": c.temperature_lr},
        ]
        if self.noise_critic is not None:
            groups.append({"params": list(self.noise_critic.parameters()), "lr": c.noise_critic_lr})
        return groups

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        """lerobot-train: chunk transitions from the dataset batch -> summed DSRL losses, metrics."""
        loss, metrics = self.compute_loss(self.transitions_from_dataset(batch))
        return loss, metrics_to_floats(metrics)

    def update(self) -> None:
        """Polyak-average the target critic; lerobot-train calls it after every optimizer step."""
        polyak_update(self.critic_target, self.critic, self.config.tau)
        if self.noise_critic_target is not None:
            polyak_update(self.noise_critic_target, self.noise_critic, self.config.tau)

    def compute_loss(self, t: ChunkTransitions) -> tuple[Tensor, dict[str, Tensor]]:
        """critic + actor + temperature (+ noise-critic for NA) losses of one gradient step.

        Each term only reaches its own parameters (targets under no_grad, the critic frozen in the
        actor loss, log alpha only in the temperature loss), so one backward of the sum gives every
        network exactly its own loss's gradient; the terms are logged separately.
        """
        c = self.config
        alpha = self.log_alpha.exp()
        pi = self.actor(t.obs)
        loss_alpha, metrics = temperature_loss(self.log_alpha, pi.log_prob, c.target_entropy)
        bootstrap = self.critic_target
        with torch.no_grad():
            next_pi = self.actor(t.next_obs)
            if c.variant == "na" and self.noise_critic_target is not None:
                next_action, action, bootstrap = next_pi.action, t.action, self.noise_critic_target
            elif c.variant == "na":
                next_action, action = self.decode(t.next_obs, next_pi.action), t.action
            else:
                if t.noise is None:
                    raise ValueError("DSRL-SAC transitions need the noise that produced each chunk (t.noise)")
                next_action, action = next_pi.action, t.noise
        loss_q, m = critic_td_loss(
            self.critic, bootstrap, t.obs, action, self.learning_reward(t), t.next_obs, next_action, t.terminated,
            gamma=c.discount, n_steps=self.discount_exponent(t), next_log_prob=next_pi.log_prob, alpha=alpha.detach(),
            backup_entropy=c.backup_entropy, q_reduce=c.q_reduce,
        )
        metrics.update(m)
        actor_critic = self.noise_critic if c.variant == "na" else self.critic
        loss_pi, m = actor_loss(actor_critic, t.obs, pi.action, pi.log_prob, alpha, q_reduce=c.q_reduce)
        metrics.update(m)
        loss = loss_q + loss_pi + loss_alpha
        if c.variant == "na":
            loss_w, m = self.distillation_loss(t)
            metrics.update(m)
            loss = loss + loss_w
        metrics["chunk_reward_mean"] = t.reward.detach().mean()
        metrics["noise_abs_mean"] = pi.action.detach().abs().mean()
        return loss, metrics

    def distillation_loss(self, t: ChunkTransitions) -> tuple[Tensor, dict[str, Tensor]]:
        """Q^W onto Q^A: on the acting aliases the rows carry (those with finite ones: offline rows
        have none), else on fresh N(0, I) noises decoded here, one per sample (the reference)."""
        if t.alias_noise is not None:
            rows = torch.isfinite(t.alias_noise).flatten(1).all(1)
            if bool(rows.any()):
                k = t.alias_noise.shape[1]
                obs = {key: v[rows].repeat_interleave(k, dim=0) for key, v in t.obs.items()}
                w = t.alias_noise[rows].reshape(-1, self.noise_dim)
                a = t.alias_action[rows].reshape(w.shape[0], self.config.n_exec, self.action_dim)
                return noise_critic_loss(self.noise_critic, self.critic, obs, w, a)
        w = self.prior_noise(t.action.shape[0])
        return noise_critic_loss(self.noise_critic, self.critic, t.obs, w, lambda w: self.decode(t.obs, w))

    # ------------------------------------------------------------------------------- model card

    def method_card_text(self) -> str:
        c = self.config
        return (
            f"This is a DSRL-{c.variant.upper()} policy: a small actor chooses the initial noise of the base "
            f"(noise layout `{c.noise_layout}`, bound {c.noise_bound}), which denoises it into the executed actions."
        )
