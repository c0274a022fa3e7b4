"""What every steering policy over a LeRobot base shares in its modeling code.

* Binding the base: get it from `config.base_provider` (a frozen checkpoint loaded into a
  `BasePolicyAdapter`, or dyna_vgd's behaviour-cloned diffusion), check the dataset against it.
* The chunk-level MDP: `ChunkTransitions` from a LeRobot dataset batch built with the config's delta
  indices, or from a LeRobot `ReplayBuffer` batch.
* Checkpoints: the trained networks in `model.safetensors`; what the provider keeps apart (a frozen
  base: weights, config, processors once in `base_policy/`), so that `--policy.path` alone rebuilds
  everything; a model card section on the base.

`SteeringPolicyMixin` goes before `PreTrainedPolicy` in a policy's bases (`DSRLPolicy`,
`DynaVGDPolicy`); it is a mixin rather than an intermediate `PreTrainedPolicy` because LeRobot
requires every subclass of that to name a config class and a policy type. The file keeps its name
(`frozen_base`) because other code imports its helpers from here.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lerobot.configs.policies import PreTrainedConfig
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_PREFIX

from lerobot_steer.steering.base_adapter import SAFETENSORS_FILE, BasePolicyAdapter, CheckpointError
from lerobot_steer.steering.encoders import ObservationEncoder
from lerobot_steer.steering.features import FeatureMismatchError
from lerobot_steer.steering.networks import CriticEnsemble

from .base_provider import BASE_POLICY_DIR, BaseProvider  # noqa: F401  (BASE_POLICY_DIR: re-exported)
from .config import SteeringConfig


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
    alias_noise / alias_action: (B, k, noise_dim) prior noises and (B, k, n_exec, action_dim) the
        chunks the base decoded from them at `obs` while acting (DSRL-NA's distillation pairs; NaN
        on rows that have none, e.g. offline data).
    """

    obs: dict[str, Tensor]
    action: Tensor
    reward: Tensor
    next_obs: dict[str, Tensor]
    terminated: Tensor
    n_steps: Tensor
    noise: Tensor | None = None
    alias_noise: Tensor | None = None
    alias_action: Tensor | None = None


def make_observation_encoder(config: SteeringConfig, standardize=None) -> ObservationEncoder:
    """A fresh encoder of the config's input features (each network gets its own); `standardize`:
    see `unnormalized_feature_stats`."""
    features = {k: ft for k, ft in config.input_features.items() if "empty_camera" not in k}
    return ObservationEncoder(
        features, image_channels=tuple(config.image_channels), image_strides=tuple(config.image_strides),
        image_latent_dim=config.image_latent_dim, standardize=standardize,
    )


def unnormalized_feature_stats(config: SteeringConfig, preprocessor) -> dict[str, tuple[Tensor, Tensor]]:
    """(mean, std) of the low-dim inputs that the base's processor passes through unnormalized.

    LeRobot's diffusion maps STATE to MIN_MAX but has no entry for ENV, so block and bowl poses would
    reach the critics in raw metres. The base's normalizer step still holds the dataset statistics
    of every feature; they are read from it here (empty when the base has no such step or stats).
    """
    stats = {}
    for step in getattr(preprocessor, "steps", []) or []:
        stats = getattr(step, "stats", None) or stats
    out = {}
    for key, ft in config.input_features.items():
        mode = config.normalization_mapping.get(ft.type.name, config.normalization_mapping.get(ft.type))
        unnormalized = mode is None or getattr(mode, "name", str(mode)).upper() == "IDENTITY"
        entry = stats.get(key) or {}
        if ft.type.name in ("STATE", "ENV") and unnormalized and "mean" in entry and "std" in entry:
            out[key] = (torch.as_tensor(entry["mean"]).float(), torch.as_tensor(entry["std"]).float())
    return out


class ObservationCritic(nn.Module):
    """Q_j(s, x), j = 1..n_critics, over encoded observations: (obs dict, x) -> (n_critics, B)."""

    def __init__(self, encoder: ObservationEncoder, act_dim: int, config: SteeringConfig):
        super().__init__()
        self.encoder = encoder
        self.ensemble = CriticEnsemble(
            encoder.output_dim, act_dim, config.n_critics, config.hidden_dims,
            activation=config.activation, layer_norm=config.layer_norm,
        )

    def forward(self, obs: dict[str, Tensor], action: Tensor) -> Tensor:
        return self.ensemble(self.encoder(obs), action)


class SteeringPolicyMixin:
    """Base binding, chunk transitions from datasets/replay, and checkpoints that carry the base.

    The host class calls `_init_base(...)` at the start of its `__init__` (after
    `PreTrainedPolicy.__init__`) and `reset()` at its end, and implements `predict_action_chunk`
    (the executed chunk, normalized) and `method_card_text()`; `select_action` plays the chunk out.
    Whatever depends on where the base comes from is asked of `base_provider`.
    """

    config: SteeringConfig
    adapter: BasePolicyAdapter

    @property
    def base_provider(self) -> BaseProvider:
        return self.config.base_provider

    def _init_base(self, base_adapter: BasePolicyAdapter | None, base_policy_dir, dataset_meta) -> None:
        """Get the base (`base_adapter` if given, else loaded or built), bind it to the training data."""
        self.adapter = self.base_provider.make_adapter(self.config, base_adapter, base_policy_dir)
        self.base_provider.bind(self, dataset_meta)
        self.register_buffer("_episode_success", episode_success(dataset_meta), persistent=False)

    # ------------------------------------------------------------------------------ base binding

    def bind_offline_dataset(self, dataset_meta) -> None:
        """A policy built for an env that will also learn from a dataset (lerobot-steer-rl
        --dataset.*): the dataset is checked as lerobot-train checks it, and its per-episode success
        record is read (for `reward_from_success` and `episode_end=success`)."""
        self._check_dataset(dataset_meta)
        self._episode_success = episode_success(dataset_meta)

    def _check_dataset(self, dataset_meta) -> None:
        """Refuse a training dataset the method cannot learn from (subclasses add their checks)."""
        config = self.config
        self.adapter.check_features(dataset_meta)
        names = set(dataset_meta.features)
        if config.reward_key not in names and not config.reward_from_success:
            raise ValueError(
                f"the dataset has no reward column '{config.reward_key}' (it has: {sorted(names)}). "
                f"{config.type} learns from rewards: record them, name the column with "
                "--policy.reward_key=<column>, or pass --policy.reward_from_success=true (reward 1 on the last "
                "frame of each episode recorded as successful, i.e. with next.success true in it; every episode "
                "when there is no next.success column)."
            )

    def _as_history(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Single-step observations of a history base as a fresh episode (the step repeated).

        For stateless decodes of training batches: never pushed into the history that acting keeps.
        """
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
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """One action per env step from a queue refilled with a new chunk every n_exec steps."""
        if not self._queue:
            self.check_inputs(batch)  # before the first action: a missing input names itself, not a KeyError
            chunk = self.predict_action_chunk(batch, noise=noise, **kwargs)
            self._queue.extend(chunk.transpose(0, 1))
        else:
            self.adapter.observe(observations(batch))  # keep a diffusion base's history current
        return self._queue.popleft()

    def check_inputs(self, batch: dict[str, Tensor]) -> None:
        """Raise FeatureMismatchError when `batch` lacks an observation the checkpoint reads.

        `select_action` calls it before each new chunk, so on a robot (`lerobot-rollout`,
        `lerobot-record --policy.path`) the first inference fails with what is missing and why,
        before the arm moves, instead of a KeyError deep in an encoder.
        """
        missing = [key for key in self.config.input_features if "empty_camera" not in key and key not in batch]
        if missing:
            raise FeatureMismatchError(missing_inputs_message(self.config, missing, batch))

    @torch.no_grad()
    def collect_chunk(self, batch: dict[str, Tensor], mode: str) -> tuple[Tensor, dict[str, Tensor]]:
        """One chunk per env for online collection, and what the replay buffer keeps besides it.

        mode "prior": the base on its own N(0, I) noise (prefill); "explore": the policy as it
        trains; "greedy": its deterministic mode. Steering types whose transitions need more than
        the executed chunk (DSRL-SAC: the noise) override this.
        """
        obs = observations(batch)
        if mode == "prior":
            return self.adapter.sample(obs, self.adapter.sample_noise(next(iter(obs.values())).shape[0])), {}
        return self.predict_action_chunk(batch), {}

    #: whether `acting_mode(deterministic=True)` acts differently from the default sampling
    has_deterministic_mode = False

    @contextlib.contextmanager
    def acting_mode(self, deterministic: bool) -> Iterator[None]:
        """Act deterministically (or sampled) inside the block, e.g. for one evaluation; restored after.
        Policies without a deterministic mode act as always."""
        yield

    def acting_stats(self) -> dict[str, float]:
        """Diagnostics of the last `collect_chunk` (e.g. guidance strength), logged by the RL loop."""
        return {}

    # ------------------------------------------------------------------------- chunk transitions

    def transitions_from_dataset(self, batch: dict[str, Tensor]) -> ChunkTransitions:
        """The chunk-level MDP from a LeRobot dataset batch built with this config's delta indices.

        Observations come with the offsets `observation_delta_indices` (current history + chunk-end
        history), rewards with the executed chunk's offsets, actions with offsets that contain the
        executed chunk from `executed_action_start`; `<key>_is_pad` marks frames
        past the episode end. A chunk whose end observation is padded reaches the episode end: its
        reward stops there, it executed fewer steps, and `episode_end` says whether it terminated.
        """
        c = self.config
        cur, nxt = c.current_obs_positions, c.next_obs_positions
        obs, next_obs, end_pad = {}, {}, None
        for key, value in observations(batch).items():
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
        executed = slice(c.executed_action_start, c.executed_action_start + c.n_exec)
        action = batch[ACTION][:, executed]
        b = action.shape[0]
        action_pad = batch.get(f"{ACTION}_is_pad")
        valid = torch.ones(b, c.n_exec, dtype=torch.bool, device=action.device) if action_pad is None else ~action_pad[:, executed]
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
        """Chunk transitions from a LeRobot `ReplayBuffer` batch (online training).

        Layout: `state`/`next_state` (observation dicts, with the base's history for diffusion
        bases), `action` (B, n_exec, action_dim) normalized executed chunk, `reward` (B,) chunk
        reward, `done` (B,) termination (time-limit truncations must be stored with done = 0), and
        `complementary_info` with optionally `noise` (B, noise_dim) and `n_steps` (B,).
        """
        info = batch.get("complementary_info") or {}
        action = batch[ACTION]
        b = action.shape[0]
        n_steps = info.get("n_steps")
        if n_steps is None:
            n_steps = torch.full((b,), float(self.config.n_exec), device=action.device)
        return ChunkTransitions(
            obs=batch["state"], action=action.reshape(b, self.config.n_exec, self.adapter.action_dim),
            reward=batch["reward"].reshape(b).float(), next_obs=batch["next_state"],
            terminated=replay_terminated(batch, b, self.config), n_steps=n_steps.reshape(b).float(),
            noise=info.get("noise"), alias_noise=info.get("alias_noise"), alias_action=info.get("alias_action"),
        )

    def _success_of(self, batch: dict, b: int, device) -> Tensor:
        episodes = batch.get("episode_index")
        if self._episode_success is None:
            return torch.ones(b, dtype=torch.bool, device=device)  # no next.success column: demonstrations
        if not isinstance(episodes, Tensor):
            raise ValueError(
                "the batch has no 'episode_index', so the per-episode next.success record of the dataset cannot "
                "be looked up (it would count every episode as a success): pass batches from the LeRobotDataset "
                "the policy was built with"
            )
        table = self._episode_success.to(device)
        index = episodes.reshape(b).long()
        if bool((index < 0).any() or (index >= table.numel()).any()):
            raise ValueError(
                f"episode_index {index.min().item()}..{index.max().item()} is outside the dataset's episodes "
                f"0..{table.numel() - 1}: the batch does not come from the dataset the policy was built with"
            )
        return table[index]

    # ------------------------------------------------------------------------- what the critics learn

    def learning_reward(self, t: ChunkTransitions) -> Tensor:
        """The chunk reward the critics learn from: the env's sum minus `reward_offset` per executed step."""
        return t.reward - self.config.reward_offset * t.n_steps

    def discount_exponent(self, t: ChunkTransitions) -> Tensor:
        """gamma is per chunk: a full chunk is discounted once, one cut short after k of n steps by gamma^(k/n)."""
        return t.n_steps / self.config.n_exec

    # ------------------------------------------------------------------------------- checkpoints

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """config.json, the trained networks in model.safetensors, and what the provider keeps apart."""
        save_directory = Path(save_directory)
        self.config._save_pretrained(save_directory)
        tensors = state_dict if state_dict is not None else self.state_dict()
        in_model_file = self.base_provider.in_model_file
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items() if in_model_file(k)}
        save_file(tensors, str(save_directory / SAFETENSORS_FILE))
        self.base_provider.save(self.adapter, save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *, config=None, revision=None, **kwargs):
        """Load a checkpoint (folder or Hub repo id); a frozen base comes from its `base_policy/`, a
        trained one from `model.safetensors` with everything else (`config.base_provider` knows)."""
        folder = Path(pretrained_name_or_path)
        if not folder.is_dir():
            from lerobot_steer.steering.base_adapter import _resolve_checkpoint

            folder = _resolve_checkpoint(
                pretrained_name_or_path, revision=revision, cache_dir=kwargs.get("cache_dir"), token=kwargs.get("token")
            )
        if config is None:
            config = PreTrainedConfig.from_pretrained(folder, **{k: kwargs[k] for k in ("cli_overrides",) if k in kwargs})
        for key, value in config.base_provider.load_kwargs(folder, cls.name, cls.__name__).items():
            kwargs.setdefault(key, value)
        return super().from_pretrained(folder, config=config, revision=revision, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        """Load the trained networks; every one of them must be in the file (a frozen base is not)."""
        try:
            tensors = load_file(model_file, device="cpu")
        except Exception as e:
            raise CheckpointError(f"{model_file} is missing or not a readable safetensors file ({e})") from e
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if model.base_provider.in_model_file(k)]
        if missing or unexpected:
            raise CheckpointError(
                f"{model_file} does not match this {cls.name} config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return model

    def method_card_text(self) -> str:
        """One paragraph of model card saying what this policy does with its base."""
        raise NotImplementedError

    def generate_model_card(self, dataset_repo_id, model_type, license, tags, cfg=None, dataset_meta=None):
        """LeRobot's model card, plus which base this checkpoint drives and how it is stored."""
        card = super().generate_model_card(dataset_repo_id, model_type, license, tags, cfg=cfg, dataset_meta=dataset_meta)
        card.text += "\n" + self.base_provider.card_section(self, dataset_repo_id)
        return card


# The name before a base could also be trained inside the policy (dyna_vgd's bc mode); kept for
# code that imports it.
FrozenBasePolicyMixin = SteeringPolicyMixin


# ---------------------------------------------------------------------------------------- helpers


def replay_terminated(batch: dict, b: int, config) -> Tensor:
    """done, and with `bootstrap_time_limit=False` also the time-limit ends (the references' rule)."""
    done = batch["done"].reshape(b).float()
    truncated = batch.get("truncated")
    if getattr(config, "bootstrap_time_limit", True) or truncated is None:
        return done
    return torch.maximum(done, truncated.reshape(b).float())


def missing_inputs_message(config: SteeringConfig, missing: list[str], batch: dict) -> str:
    """What a policy that was given observations without `missing` tells its user."""
    needs = ", ".join(f"'{k}' {tuple(ft.shape)}" for k, ft in config.input_features.items() if "empty_camera" not in k)
    given = sorted(k for k in batch if k.startswith(OBS_PREFIX)) or "none"
    message = (f"the observation lacks {', '.join(repr(k) for k in missing)}: this {config.type} checkpoint reads "
               f"{needs}, and was given {given}.")
    if OBS_ENV_STATE in missing:
        message += (f" '{OBS_ENV_STATE}' is the simulator's privileged state (block and bowl poses), which a real "
                    "robot does not measure: a checkpoint trained on the sim with state observations "
                    "(--env.obs_type=state or pixels_state) cannot run on a real robot. Train the base and the "
                    "steering policy on camera observations instead (--env.obs_type=pixels, features "
                    "observation.images.<camera> and observation.state), which the robot provides.")
    else:
        message += (" Give it these inputs under these names (a robot's cameras are named in its config; "
                    "--rename_map maps other names), or use a checkpoint trained on the observations you have.")
    return message


def observations(batch: dict) -> dict[str, Tensor]:
    """The observation tensors of a batch (the base and the encoders read nothing else)."""
    return {
        k: v for k, v in batch.items()
        if k.startswith(OBS_PREFIX) and not k.endswith("_is_pad") and isinstance(v, Tensor)
    }


def _take(value: Tensor, positions: list[int]) -> Tensor:
    """Frames at `positions` of a delta-indexed tensor: (B, T, ...) -> (B, len, ...), or (B, ...) for one."""
    return value[:, positions] if len(positions) > 1 else value[:, positions[0]]


def episode_success(dataset_meta) -> Tensor | None:
    """Per-episode "recorded as successful" (next.success true on some frame), read from the dataset's
    data files. None when the dataset has no next.success column: every episode is a demonstration.

    Read from the frames, not from per-episode stats: LeRobot 0.6.1's loaded episode metadata does not
    carry the `stats/...` columns, and reading them would silently count every episode as a success.
    """
    frames = _success_columns(dataset_meta, ("episode_index", "next.success"))
    if frames is None:
        return None
    episodes, success = frames["episode_index"], frames["next.success"]
    table = torch.zeros(int(episodes.max()) + 1)
    table.scatter_reduce_(0, episodes, success.float(), "amax")
    return table.bool()


def first_success_frames(dataset_meta) -> Tensor | None:
    """Per episode, the frame index of its first `next.success` (-1: never). None without the column."""
    frames = _success_columns(dataset_meta, ("episode_index", "frame_index", "next.success"))
    if frames is None:
        return None
    episodes, index, success = frames["episode_index"], frames["frame_index"], frames["next.success"]
    never = torch.iinfo(torch.long).max
    first = torch.full((int(episodes.max()) + 1,), never, dtype=torch.long)
    first.scatter_reduce_(0, episodes[success], index[success], "amin")
    return torch.where(first == never, torch.full_like(first, -1), first)


def _success_columns(dataset_meta, columns: tuple[str, ...]) -> dict[str, Tensor] | None:
    """`columns` (next.success as bool, the others as int64) of every frame in the dataset's data files;
    None when the dataset declares no next.success."""
    if dataset_meta is None or "next.success" not in getattr(dataset_meta, "features", {}):
        return None
    import pyarrow.parquet as pq

    files = sorted(Path(dataset_meta.root).glob("data/**/*.parquet"))
    if not files:
        raise ValueError(f"{dataset_meta.root}/data has no parquet files: cannot read next.success per episode")
    parts: dict[str, list[Tensor]] = {name: [] for name in columns}
    for file in files:
        missing = set(columns) - set(pq.read_schema(file).names)
        if missing:
            raise ValueError(
                f"{file} has no {' / '.join(sorted(missing))} column although {dataset_meta.root}/meta/info.json "
                "declares next.success: the dataset is inconsistent, so the episodes recorded as successful "
                "cannot be told (re-record or repair it, or train on a dataset with a reward column)"
            )
        table = pq.read_table(file, columns=list(columns))
        for name in columns:
            values = torch.as_tensor(table.column(name).to_numpy(zero_copy_only=False)).reshape(-1)
            parts[name].append(values.bool() if name == "next.success" else values.long())
    return {name: torch.cat(values) for name, values in parts.items()}
