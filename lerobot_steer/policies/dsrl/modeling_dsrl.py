"""DSRLPolicy: a frozen LeRobot base policy steered through its initial noise.

    observation --actor--> noise w --base (frozen, deterministic)--> executed action chunk

Only the actor, the critics and the temperature train. The base is a `BasePolicyAdapter` (DDIM for
diffusion, Euler for pi0/pi05/smolvla): the same observation and noise always give the same chunk.

Two variants (Wagenmaker et al. 2025, algorithms.md §2):

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

import copy
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_PREFIX

from lerobot_steer.steering.base_adapter import SAFETENSORS_FILE, BasePolicyAdapter, CheckpointError
from lerobot_steer.steering.encoders import ObservationEncoder
from lerobot_steer.steering.losses import (
    actor_loss,
    critic_td_loss,
    metrics_to_floats,
    noise_critic_loss,
    temperature_loss,
)
from lerobot_steer.steering.networks import ActorOutput, CriticEnsemble, TanhGaussianActor, polyak_update

from .configuration_dsrl import DSRLConfig

BASE_POLICY_DIR = "base_policy"  # where a DSRL checkpoint keeps its base (config, weights, processors)
BASE_PREFIX = "adapter."  # state-dict prefix of the frozen base, left out of model.safetensors


@dataclass
class ChunkTransitions:
    """A batch of chunk-level transitions, whatever their source (dataset or replay buffer).

    obs / next_obs: base-ready observations at the chunk start and end (with the base's history,
        (B, n_obs_steps, ...), for diffusion bases), normalized by the base's preprocessor.
    action: (B, n_exec, action_dim) normalized executed chunk.
    reward: (B,) undiscounted sum of the chunk's rewards.
    terminated: (B,) 1 where the episode terminated inside the chunk (no bootstrap).
    n_steps: (B,) env steps the chunk executed (discount gamma^n_steps).
    noise: (B, noise_dim) the actor-space noise that produced the chunk (DSRL-SAC only).
    """

    obs: dict[str, Tensor]
    action: Tensor
    reward: Tensor
    next_obs: dict[str, Tensor]
    terminated: Tensor
    n_steps: Tensor
    noise: Tensor | None = None


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


class ObservationCritic(nn.Module):
    """Q_j(s, x), j = 1..n_critics, over encoded observations: (obs dict, x) -> (n_critics, B)."""

    def __init__(self, encoder: ObservationEncoder, act_dim: int, config: DSRLConfig):
        super().__init__()
        self.encoder = encoder
        self.ensemble = CriticEnsemble(
            encoder.output_dim, act_dim, config.n_critics, config.hidden_dims,
            activation=config.activation, layer_norm=config.layer_norm,
        )

    def forward(self, obs: dict[str, Tensor], action: Tensor) -> Tensor:
        return self.ensemble(self.encoder(obs), action)


class DSRLPolicy(PreTrainedPolicy):
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
        self.adapter = base_adapter if base_adapter is not None else _load_base(config, base_policy_dir)
        self._bind_base(dataset_meta)

        base_noise = self.adapter.noise_shape(1)
        self.chunk_length, self.noise_width = base_noise[1], base_noise[2]
        self.noise_dim = self.chunk_length * self.noise_width if config.noise_layout == "full" else self.noise_width
        self.action_dim = self.adapter.action_dim

        features = {k: ft for k, ft in config.input_features.items() if "empty_camera" not in k}
        make_encoder = lambda: ObservationEncoder(  # noqa: E731
            features, image_channels=tuple(config.image_channels), image_strides=tuple(config.image_strides),
            image_latent_dim=config.image_latent_dim,
        )
        self.actor = NoiseActor(make_encoder(), self.noise_dim, config)
        critic_input = config.n_exec * self.action_dim if config.variant == "na" else self.noise_dim
        self.critic = ObservationCritic(make_encoder(), critic_input, config)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.noise_critic = ObservationCritic(make_encoder(), self.noise_dim, config) if config.variant == "na" else None
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.register_buffer("_episode_success", _episode_success(dataset_meta), persistent=False)
        self.reset()

    # ------------------------------------------------------------------------------ base binding

    def _bind_base(self, dataset_meta) -> None:
        """Check the data against the base, then adopt the base's features and normalization.

        The DSRL config takes the base's input/output features and normalization mapping, so that
        the normalizer LeRobot rebuilds (with `features`/`norm_map` overrides) is the base's.
        """
        config, base_cfg = self.config, self.adapter.policy.config
        if dataset_meta is not None:
            self.adapter.check_features(dataset_meta)
            names = set(dataset_meta.features)
            if config.reward_key not in names and not config.reward_from_success:
                raise ValueError(
                    f"the dataset has no reward column '{config.reward_key}' (it has: {sorted(names)}). DSRL "
                    "learns from rewards: record them, name the column with --policy.reward_key=<column>, or "
                    "pass --policy.reward_from_success=true (reward 1 on the last frame of each episode recorded "
                    "as successful, i.e. with next.success true in it; every episode when there is no "
                    "next.success column)."
                )
            if config.variant == "sac":
                raise ValueError(
                    "--policy.variant=sac learns from the noise of each transition, which a dataset of recorded "
                    "actions does not have: train offline with --policy.variant=na (the action critic learns "
                    "from recorded chunks), or train DSRL-SAC online."
                )
        elif config.input_features or config.output_features:
            self.adapter.check_features({**config.input_features, **config.output_features})
        if config.base_type is None:  # in-memory base: take the facts the config reads from a checkpoint
            config.set_base_facts(self.adapter.policy_type, base_cfg.n_obs_steps, self.adapter.n_action_steps)
        if config.n_exec > self.adapter.n_action_steps:
            raise ValueError(f"n_action_steps={config.n_exec} > the base's {self.adapter.n_action_steps}")
        config.input_features = dict(base_cfg.input_features)
        config.output_features = dict(base_cfg.output_features)
        config.normalization_mapping = dict(base_cfg.normalization_mapping)

    # ------------------------------------------------------------------------------ noise <-> base

    def base_noise(self, w: Tensor) -> Tensor:
        """Actor-space noise (B, noise_dim) -> the base's initial noise (B, chunk_length, noise_width)."""
        b = w.shape[0]
        if self.config.noise_layout == "full":
            return w.reshape(b, self.chunk_length, self.noise_width)
        return w.reshape(b, 1, self.noise_width).expand(b, self.chunk_length, self.noise_width)

    def prior_noise(self, batch_size: int) -> Tensor:
        """Fresh actor-space N(0, I) noise: what the base was trained to denoise (Q^W distillation)."""
        return torch.randn(batch_size, self.noise_dim, device=self.log_alpha.device)

    def decode(self, obs: dict[str, Tensor], w: Tensor) -> Tensor:
        """The executed chunk (B, n_exec, action_dim), normalized, for actor-space noise w.

        Stateless, for training batches: single-step observations of a history base are treated
        as a fresh episode (the step repeated over the history), never pushed into the history
        that `select_action` keeps for acting.
        """
        return self.adapter.sample(self._as_history(obs), self.base_noise(w))[:, : self.config.n_exec]

    def _as_history(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        n = self.adapter.policy.config.n_obs_steps
        if n == 1:
            return obs
        out = dict(obs)
        for key, ft in self.adapter.policy.config.input_features.items():
            value = obs.get(key)
            if isinstance(value, Tensor) and value.ndim == len(ft.shape) + 1:
                out[key] = value.unsqueeze(1).expand(value.shape[0], n, *value.shape[1:])
        return out

    # ----------------------------------------------------------------------------------- acting

    def reset(self) -> None:
        """Clear the action queue and the base's observation history (call at episode start)."""
        self._queue: deque[Tensor] = deque(maxlen=self.config.n_exec)
        self.adapter.reset()

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

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """One action per env step from a queue refilled with a new chunk every n_exec steps."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, noise=noise, **kwargs)
            self._queue.extend(chunk.transpose(0, 1))
        else:
            self.adapter.observe(_observations(batch))  # keep a diffusion base's history current
        return self._queue.popleft()

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
        with torch.no_grad():
            next_pi = self.actor(t.next_obs)
            if c.variant == "na":
                next_action, action = self.decode(t.next_obs, next_pi.action), t.action
            else:
                if t.noise is None:
                    raise ValueError("DSRL-SAC transitions need the noise that produced each chunk (t.noise)")
                next_action, action = next_pi.action, t.noise
        loss_q, m = critic_td_loss(
            self.critic, self.critic_target, t.obs, action, t.reward, t.next_obs, next_action, t.terminated,
            gamma=c.discount, n_steps=t.n_steps, next_log_prob=next_pi.log_prob, alpha=alpha.detach(),
            backup_entropy=c.backup_entropy, q_reduce=c.q_reduce,
        )
        metrics.update(m)
        actor_critic = self.noise_critic if c.variant == "na" else self.critic
        loss_pi, m = actor_loss(actor_critic, t.obs, pi.action, pi.log_prob, alpha, q_reduce=c.q_reduce)
        metrics.update(m)
        loss = loss_q + loss_pi + loss_alpha
        if c.variant == "na":
            w = self.prior_noise(t.action.shape[0])
            loss_w, m = noise_critic_loss(self.noise_critic, self.critic, t.obs, w, lambda w: self.decode(t.obs, w))
            metrics.update(m)
            loss = loss + loss_w
        metrics["chunk_reward_mean"] = t.reward.detach().mean()
        metrics["noise_abs_mean"] = pi.action.detach().abs().mean()
        return loss, metrics

    # ------------------------------------------------------------------------- chunk transitions

    def transitions_from_dataset(self, batch: dict[str, Tensor]) -> ChunkTransitions:
        """The chunk-level MDP from a LeRobot dataset batch built with this config's delta indices.

        Observations come with the offsets `observation_delta_indices` (current history + chunk-end
        history), actions and rewards with the executed chunk's offsets; `<key>_is_pad` marks frames
        past the episode end. A chunk whose end observation is padded reaches the episode end: its
        reward stops there, it executed fewer steps, and `episode_end` says whether it terminated.
        """
        c = self.config
        deltas = c.observation_delta_indices
        cur = [deltas.index(o) for o in c.current_obs_offsets]
        nxt = [deltas.index(o) for o in c.next_obs_offsets]
        obs, next_obs, end_pad = {}, {}, None
        for key, value in _observations(batch).items():
            pad = batch.get(f"{key}_is_pad")
            if pad is None:  # not delta-indexed (e.g. language tokens): the same at both ends
                obs[key] = next_obs[key] = value
                continue
            obs[key], next_obs[key] = _take(value, cur), _take(value, nxt)
            end_pad = pad[:, nxt[-1]] if end_pad is None else end_pad
        if end_pad is None:
            raise ValueError(
                "the batch has no '<observation>_is_pad' masks: build the dataset with this config's "
                "delta indices (lerobot-train does) so that each sample holds a whole chunk"
            )
        action = batch[ACTION][:, : c.n_exec]
        b = action.shape[0]
        action_pad = batch.get(f"{ACTION}_is_pad")
        valid = torch.ones(b, c.n_exec, dtype=torch.bool, device=action.device) if action_pad is None else ~action_pad[:, : c.n_exec]
        ended = end_pad.bool()
        success = self._success_of(batch, b, action.device)
        reward = batch.get(c.reward_key)
        if isinstance(reward, Tensor):
            reward_pad = batch.get(f"{c.reward_key}_is_pad")
            reward_valid = valid if reward_pad is None else ~reward_pad[:, : c.n_exec]
            reward = (reward.reshape(b, -1)[:, : c.n_exec].float() * reward_valid).sum(1)
        elif c.reward_from_success:
            reward = (ended & success).float()
        else:
            raise ValueError(f"the batch has no reward '{c.reward_key}' (see --policy.reward_from_success)")
        if c.episode_end == "terminal":
            terminated = ended
        elif c.episode_end == "truncated":
            terminated = torch.zeros_like(ended)
        else:
            terminated = ended & success
        return ChunkTransitions(
            obs=obs, action=action, reward=reward, next_obs=next_obs,
            terminated=terminated.float(), n_steps=valid.sum(1).float(),
        )

    def transitions_from_replay(self, batch: dict) -> ChunkTransitions:
        """Chunk transitions from a LeRobot `ReplayBuffer` batch (online DSRL).

        Layout: `state`/`next_state` (observation dicts, with the base's history for diffusion
        bases), `action` (B, n_exec, action_dim) normalized executed chunk, `reward` (B,) chunk
        reward, `done` (B,) termination (time-limit truncations must be stored with done = 0), and
        `complementary_info` with `noise` (B, noise_dim) for DSRL-SAC and optionally `n_steps` (B,).
        """
        info = batch.get("complementary_info") or {}
        action = batch[ACTION]
        b = action.shape[0]
        n_steps = info.get("n_steps")
        if n_steps is None:
            n_steps = torch.full((b,), float(self.config.n_exec), device=action.device)
        return ChunkTransitions(
            obs=batch["state"], action=action.reshape(b, self.config.n_exec, self.action_dim),
            reward=batch["reward"].reshape(b).float(), next_obs=batch["next_state"],
            terminated=batch["done"].reshape(b).float(), n_steps=n_steps.reshape(b).float(),
            noise=info.get("noise"),
        )

    def _success_of(self, batch: dict, b: int, device) -> Tensor:
        episodes = batch.get("episode_index")
        if self._episode_success is None or not isinstance(episodes, Tensor):
            return torch.ones(b, dtype=torch.bool, device=device)  # no success record: demonstrations
        table = self._episode_success.to(device)
        index = episodes.reshape(b).long().clamp(0, table.numel() - 1)
        return table[index]

    # ------------------------------------------------------------------------------- checkpoints

    def trained_state_dict(self) -> dict[str, Tensor]:
        """Everything but the frozen base (which is saved once, in `base_policy/`)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(BASE_PREFIX)}

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        save_directory = Path(save_directory)
        self.config._save_pretrained(save_directory)
        tensors = state_dict if state_dict is not None else self.state_dict()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items() if not k.startswith(BASE_PREFIX)}
        save_file(tensors, str(save_directory / SAFETENSORS_FILE))
        base_dir = save_directory / BASE_POLICY_DIR
        self.adapter.policy.save_pretrained(base_dir)
        for pipeline in (self.adapter.preprocessor, self.adapter.postprocessor):
            if pipeline is not None:
                pipeline.save_pretrained(base_dir)

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *, config=None, revision=None, **kwargs):
        """Load a DSRL checkpoint (folder or Hub repo id); the base comes from its `base_policy/`."""
        folder = Path(pretrained_name_or_path)
        if not folder.is_dir():
            from lerobot_steer.steering.base_adapter import _resolve_checkpoint

            folder = _resolve_checkpoint(
                pretrained_name_or_path, revision=revision, cache_dir=kwargs.get("cache_dir"), token=kwargs.get("token")
            )
        if not (folder / BASE_POLICY_DIR).is_dir():
            raise CheckpointError(
                f"{folder} has no {BASE_POLICY_DIR}/ folder: it is not a complete dsrl checkpoint (the frozen base "
                "policy is saved there by DSRLPolicy.save_pretrained)"
            )
        kwargs.setdefault("base_policy_dir", folder / BASE_POLICY_DIR)
        return super().from_pretrained(folder, config=config, revision=revision, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model: DSRLPolicy, model_file: str, map_location: str, strict: bool) -> DSRLPolicy:
        """Load the trained networks; every one of them must be in the file (the base is not)."""
        try:
            tensors = load_file(model_file, device="cpu")
        except Exception as e:
            raise CheckpointError(f"{model_file} is missing or not a readable safetensors file ({e})") from e
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.startswith(BASE_PREFIX)]
        if missing or unexpected:
            raise CheckpointError(
                f"{model_file} does not match this dsrl config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model

    def generate_model_card(self, dataset_repo_id, model_type, license, tags, cfg=None, dataset_meta=None):
        """LeRobot's model card, plus which base policy this checkpoint steers and how it is stored."""
        card = super().generate_model_card(dataset_repo_id, model_type, license, tags, cfg=cfg, dataset_meta=dataset_meta)
        card.text += "\n" + base_policy_card_section(self.config)
        return card


def base_policy_card_section(config: DSRLConfig) -> str:
    """Model-card text naming the steered base (what `push_to_hub` uploads in README.md)."""
    source = config.base_policy_path or "(in-memory policy)"
    revision = f" at revision `{config.base_policy_revision}`" if config.base_policy_revision else ""
    return (
        "## Steered base policy\n\n"
        f"This is a DSRL-{config.variant.upper()} policy: a small actor chooses the initial noise of a frozen "
        f"`{config.base_type}` base policy, trained from `{source}`{revision}, which denoises it into "
        f"{config.n_action_steps}-step action chunks (noise layout `{config.noise_layout}`, bound "
        f"{config.noise_bound}).\n\n"
        f"The base's weights, config and processors are included in `{BASE_POLICY_DIR}/`, so "
        "`--policy.path=<this repo>` rebuilds everything.\n"
    )


# ---------------------------------------------------------------------------------------- helpers


def _load_base(config: DSRLConfig, base_policy_dir) -> BasePolicyAdapter:
    source = base_policy_dir or config.base_policy_path
    if source is None:
        raise ValueError("dsrl needs a base policy: pass --policy.base_policy_path=<diffusion/pi0/pi05/smolvla checkpoint>")
    return BasePolicyAdapter.from_pretrained(
        source,
        device=config.device,
        revision=None if base_policy_dir else config.base_policy_revision,
        num_inference_steps=config.num_inference_steps,
    )


def _observations(batch: dict) -> dict[str, Tensor]:
    """The observation tensors of a batch (the base and the encoders read nothing else)."""
    return {
        k: v for k, v in batch.items()
        if k.startswith(OBS_PREFIX) and not k.endswith("_is_pad") and isinstance(v, Tensor)
    }


def _take(value: Tensor, positions: list[int]) -> Tensor:
    """Frames at `positions` of a delta-indexed tensor: (B, T, ...) -> (B, len, ...), or (B, ...) for one."""
    return value[:, positions] if len(positions) > 1 else value[:, positions[0]]


def _episode_success(dataset_meta) -> Tensor | None:
    """Per-episode "recorded as successful" (next.success true somewhere), from the episode stats."""
    episodes = getattr(dataset_meta, "episodes", None)
    column = "stats/next.success/max"
    if episodes is None or column not in getattr(episodes, "column_names", []):
        return None
    index = [int(i) for i in episodes["episode_index"]]
    table = torch.zeros(max(index) + 1, dtype=torch.bool)
    for i, value in zip(index, episodes[column], strict=True):
        table[i] = bool(torch.as_tensor(value).bool().any())
    return table

