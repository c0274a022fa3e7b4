"""Offline data mixed into online training: `lerobot-steer-rl --dataset.repo_id=... --dataset.root=...`.

RLPD (Ball et al. 2023) samples each update batch half from the online replay and half from the
demonstrations; DSRL-NA's action critic Q^A(s, a) and VGD's critic learn from any (s, a, r, s'), so
expert chunks tell them early what good actions are worth. DSRL-SAC cannot use them: its critic's
input is the noise that produced a chunk, which a recording does not have.

The dataset is read once, at the start of the run, into a second `ChunkReplayBuffer` with the
online buffer's layout (chunk-start and chunk-end observations of one frame, the normalized executed
chunk, the chunk's reward sum, termination, executed steps), and LeRobot's `OnlineOfflineMixer`
joins the two at `--online_ratio`. Why a buffer rather than a DataLoader over the dataset: a LeRobot
dataset read costs ~8 ms per sample on 2 cores (the `datasets` library copies its feature schema on
every column query), 2 s per batch of 256, while a buffer sample is an index gather.

Episodes recorded past their first success (our generator records a retreat after placing) are cut
there when the env ends episodes on success, as the online env does: the chunk that reaches the first
success ends with it (terminated, its reward summed up to it) and later chunks are dropped, so the
offline chunks carry the online MDP's returns.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from lerobot.configs.default import DatasetConfig
from lerobot.utils.constants import ACTION

from lerobot_steer.policies.common.frozen_base import first_success_frames, observations

from .replay_buffer import INFO, NEXT_STATE, STATE, ChunkReplayBuffer

logger = logging.getLogger(__name__)

READ_BATCH = 256


def _one_frame(value: torch.Tensor, feature_ndim: int) -> torch.Tensor:
    """The newest frame of a history (B, T, ...) -> (B, ...): the online buffer stores single frames."""
    return value[:, -1] if value.ndim == feature_ndim + 2 else value


def _stored(key: str, value: torch.Tensor) -> np.ndarray:
    """Images as the online buffer keeps them (uint8, C x H x W); everything else float32."""
    if key.startswith("observation.image"):
        if value.dtype != torch.uint8:
            value = (value.clamp(0, 1) * 255).round().to(torch.uint8)
        return value.numpy()
    return value.float().numpy()


def load_offline_buffer(dataset_cfg: DatasetConfig, policy, preprocessor, *, cut_at_success: bool,
                        seed: int | None = None, progress: bool = True) -> ChunkReplayBuffer:
    """Every chunk of the dataset (one per frame) as chunk transitions in a `ChunkReplayBuffer`.

    `policy` (dsrl NA / dyna_vgd) checks the dataset against its base (features, reward column) and
    turns dataset batches into chunk transitions exactly as lerobot-train does offline;
    `preprocessor` (the policy's) normalizes the actions. Observations stay raw, as online.
    """
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(dataset_cfg.repo_id, root=dataset_cfg.root, revision=dataset_cfg.revision)
    policy.bind_offline_dataset(meta)
    dataset = LeRobotDataset(
        dataset_cfg.repo_id, root=dataset_cfg.root, episodes=dataset_cfg.episodes, revision=dataset_cfg.revision,
        delta_timestamps=resolve_delta_timestamps(policy.config, meta), video_backend=dataset_cfg.video_backend,
        return_uint8=True,
    )
    first_success = first_success_frames(meta) if cut_at_success else None
    c = policy.config
    feature_ndim = {k: len(ft.shape) for k, ft in c.input_features.items()}
    loader = torch.utils.data.DataLoader(dataset, batch_size=READ_BATCH, shuffle=False, num_workers=0)
    parts: list[dict[str, np.ndarray]] = []
    for batch in tqdm(loader, desc=f"offline data {dataset_cfg.repo_id}", unit="batch", disable=not progress):
        parts.append(_chunk_columns(batch, policy, preprocessor, feature_ndim, first_success))
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(columns["reward"])
    if n == 0:
        raise ValueError(f"--dataset.repo_id={dataset_cfg.repo_id}: no chunk transitions (is every episode empty?)")
    buffer = ChunkReplayBuffer(n, device=c.device, seed=seed)
    buffer.add_columns(columns)
    logger.info("offline data: %d chunk transitions from %d episodes of %s", n, meta.total_episodes, dataset_cfg.repo_id)
    return buffer


def _chunk_columns(batch: dict, policy, preprocessor, feature_ndim: dict[str, int],
                   first_success: torch.Tensor | None) -> dict[str, np.ndarray]:
    """One dataset batch -> buffer columns (the chunks that start after their episode's first success
    dropped when `first_success` is given)."""
    c = policy.config
    t = policy.transitions_from_dataset(batch)
    b, n_exec = t.action.shape[0], c.n_exec
    reward, n_steps, terminated = t.reward, t.n_steps, t.terminated.bool()
    keep = torch.ones(b, dtype=torch.bool)
    if first_success is not None:
        episode, frame = batch["episode_index"].reshape(b).long(), batch["frame_index"].reshape(b).long()
        success_at = first_success[episode]
        steps_to_success = torch.where(success_at >= 0, success_at - frame + 1, torch.full_like(frame, n_exec + 1))
        keep = steps_to_success >= 1
        hits = keep & (steps_to_success <= n_steps)
        if hits.any():
            reward = torch.where(hits, _reward_up_to(batch, c, b, steps_to_success), reward)
            n_steps = torch.where(hits, steps_to_success.float(), n_steps)
            terminated = terminated | hits
    frames = {group: {key: _one_frame(value, feature_ndim.get(key, value.ndim - 1))
                      for key, value in observations(obs).items()}
              for group, obs in ((STATE, t.obs), (NEXT_STATE, t.next_obs))}
    # The whole pipeline, as acting normalizes (its observation steps need an observation beside the action).
    action = preprocessor({**frames[STATE], ACTION: t.action})[ACTION].cpu()
    columns = {f"{group}.{key}": _stored(key, value) for group, obs in frames.items() for key, value in obs.items()}
    columns.update({
        ACTION: action.float().numpy(),
        "reward": reward.float().numpy(),
        "done": terminated.numpy(),
        # a chunk that reaches the recording's end without terminating ends like a time limit online
        "truncated": (_reaches_episode_end(batch, c) & ~terminated).numpy(),
        f"{INFO}.n_steps": n_steps.long().numpy(),
    })
    mask = keep.numpy()
    return {k: v[mask] for k, v in columns.items()}


def _reward_up_to(batch: dict, config, b: int, steps: torch.Tensor) -> torch.Tensor:
    """(B,) the chunk's reward summed over its first `steps` frames (0 past the episode end); with
    `reward_from_success` (no reward column) the first success, the last frame summed, pays 1."""
    reward = batch.get(config.reward_key)
    if not isinstance(reward, torch.Tensor):
        return torch.ones(b)
    reward = reward.reshape(b, -1)[:, : config.n_exec].float()
    pad = batch.get(f"{config.reward_key}_is_pad")
    if pad is not None:
        reward = reward * ~pad[:, : config.n_exec]
    return (reward * (torch.arange(config.n_exec).unsqueeze(0) < steps.unsqueeze(1))).sum(1)


def _reaches_episode_end(batch: dict, config) -> torch.Tensor:
    """(B,) whether the chunk-end observation lies past the episode's last frame (its pad mask)."""
    last = config.next_obs_positions[-1]
    for key, value in batch.items():
        if key.startswith("observation.") and key.endswith("_is_pad"):
            return value[:, last].bool()
    raise ValueError("the dataset batch has no '<observation>_is_pad' masks: build it with the policy's delta indices")


def check_offline_observations(offline: ChunkReplayBuffer, env_keys: set[str]) -> None:
    """The dataset's observation keys must be the env's (LeRobot names), or the two halves of a batch
    could not be joined: refused before the prefill, naming the keys on each side."""
    dataset_keys = offline.observation_keys()
    if dataset_keys != env_keys:
        raise ValueError(
            f"--dataset.*: the dataset's observations {sorted(dataset_keys)} are not the env's {sorted(env_keys)} "
            f"(only in the dataset: {sorted(dataset_keys - env_keys)}, only in the env: {sorted(env_keys - dataset_keys)}): "
            "mix a dataset recorded with the env's observations (the same --env.obs_type and cameras)"
        )


def mixed_with_offline(online: ChunkReplayBuffer, offline: ChunkReplayBuffer, online_ratio: float):
    """LeRobot's `OnlineOfflineMixer` over both buffers, once the online one holds data (its columns
    are known then). Refuses offline rows that do not fit the online ones (another observation key or
    shape, e.g. a dataset recorded with cameras for a state-only env), naming the columns."""
    from lerobot.rl.data_sources import OnlineOfflineMixer

    if not online.storage:
        raise RuntimeError("mix offline data only once the online buffer holds transitions")
    check_offline_observations(offline, online.observation_keys())
    offline.add_missing_columns(online)
    for name, stored in offline.storage.items():
        if name not in online.storage:
            raise ValueError(f"offline column '{name}' has no online counterpart")
        if stored.shape[1:] != online.storage[name].shape[1:]:
            raise ValueError(
                f"'{name}': offline rows have shape {tuple(stored.shape[1:])}, online ones "
                f"{tuple(online.storage[name].shape[1:])}: the dataset does not match the env"
            )
    return OnlineOfflineMixer(online, offline, online_ratio=online_ratio)
