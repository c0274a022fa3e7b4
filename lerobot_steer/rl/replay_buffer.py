"""Replay storage for chunk-level transitions, with uint8 images and safetensors checkpoints.

What is reused from LeRobot 0.6.1 and what is replaced, and why:

* Reused: the batch layout of `lerobot.rl.buffer.BatchTransition` (`state`, `action`, `reward`,
  `next_state`, `done`, `truncated`, `complementary_info`), so our algorithms' `update()` reads the
  same keys as with LeRobot's buffer (`transitions_from_replay`), and `OnlineOfflineMixer` /
  `concatenate_batch_transitions` (`lerobot.rl.data_sources`) mix an online and an offline
  `ChunkReplayBuffer` unchanged: the mixer only calls `sample(n)` and
  `get_iterator(batch_size, async_prefetch, queue_size)`, which this class provides.
* Replaced: `lerobot.rl.buffer.ReplayBuffer` itself, because
  - it stores every tensor as float32, images included (~4x the memory of uint8; 2 cameras at
    128x128 are ~390 KB per transition), here camera images stay uint8 and become float [0, 1]
    only in the sampled batch;
  - the learner uses it with `optimize_memory=True`, i.e. `next_state = states[idx + 1]`: wrong for
    chunk transitions (chunk ends of different envs are not consecutive rows) and wrong at
    time-limit ends (it bootstraps from the next episode's first observation). Here `next_state` is
    stored explicitly;
  - it has no notion of chunks: `n_steps` (the discount exponent of a chunk cut short by an
    episode end) travels in `complementary_info`, next to the policy's extras (e.g. `noise`);
  - it persists only through `to_lerobot_dataset` (which drops `truncated`) and keeps no sampling
    RNG state; here `state_dict()` is a flat dict of tensors saved with safetensors (no pickles),
    RNG included, so a resumed run samples exactly what the uninterrupted one would have.

Mixing with a LeRobot `ReplayBuffer` (single steps) as the offline side is possible through the same
mixer only if both sides have the same state and `complementary_info` keys; fill an offline
`ChunkReplayBuffer` from chunked demonstrations instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from lerobot.utils.constants import OBS_ENV_STATE, OBS_IMAGE, OBS_IMAGES, OBS_STATE

from .chunk_rollout import ChunkBatch, to_numpy

# Storage groups; a tensor is stored under "<group>.<key>" (flat names, as safetensors wants).
STATE, NEXT_STATE, INFO = "state", "next_state", "complementary_info"
_COLUMNS = ("action", "reward", "done", "truncated")
_META = "_meta."


def lerobot_observation(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A batched gym observation under LeRobot's feature names, images kept uint8 (B, C, H, W).

    Same names and layout as `lerobot.envs.utils.preprocess_observation` (so a sampled batch, after
    the uint8 -> float / 255 conversion, equals what that function gives the policy), but without
    turning images into float32. Keys that are not gym conventions pass through unchanged.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in obs.items():
        if key == "pixels":
            images = {f"{OBS_IMAGES}.{cam}": img for cam, img in value.items()} if isinstance(value, Mapping) else {OBS_IMAGE: value}
            for name, img in images.items():
                img = np.asarray(img)
                if img.dtype != np.uint8 or img.ndim != 4:
                    raise ValueError(f"{name}: expected batched uint8 images (B, H, W, C), got {img.dtype} {img.shape}")
                out[name] = np.ascontiguousarray(img.transpose(0, 3, 1, 2))
        elif key == "agent_pos":
            out[OBS_STATE] = np.asarray(value)
        elif key == "environment_state":
            out[OBS_ENV_STATE] = np.asarray(value)
        else:
            out[key] = np.asarray(value)
    return out


def _storage_dtype(value: np.ndarray) -> torch.dtype:
    """uint8 (images) and bool stay as they are; other floats become float32, integers int64."""
    if value.dtype == np.uint8:
        return torch.uint8
    if value.dtype == np.bool_:
        return torch.bool
    if np.issubdtype(value.dtype, np.integer):
        return torch.int64
    return torch.float32


class ChunkReplayBuffer:
    """Ring buffer of chunk transitions, uniform sampling to LeRobot's `BatchTransition` layout.

    Sampled batch: `state` / `next_state` {LeRobot key: float32 tensor, images in [0, 1]},
    `action` (B, k, action_dim), `reward` (B,), `done` (B,) = terminated (never set by a
    time-out), `truncated` (B,), `complementary_info` {`n_steps`: (B,), extras...}, all float32.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int | None = None):
        if capacity <= 0:
            raise ValueError(f"capacity={capacity} must be positive")
        self.capacity = capacity
        self.device = torch.device(device)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.position = 0  # next row to write
        self.size = 0
        self.storage: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------------------------ writing

    def add(self, batch: ChunkBatch) -> None:
        """Append one transition per env (rows of `batch`), overwriting the oldest when full.

        The stored action is `batch.learner_action` when the policy gave one, else `batch.action`."""
        action = batch.action if batch.learner_action is None else batch.learner_action
        columns = {
            **{f"{STATE}.{k}": v for k, v in lerobot_observation(batch.obs).items()},
            **{f"{NEXT_STATE}.{k}": v for k, v in lerobot_observation(batch.next_obs).items()},
            "action": to_numpy(action).astype(np.float32),
            "reward": to_numpy(batch.reward).astype(np.float32),
            "done": to_numpy(batch.terminated).astype(bool),
            "truncated": to_numpy(batch.truncated).astype(bool),
            f"{INFO}.n_steps": to_numpy(batch.n_steps).astype(np.int64),
            **{f"{INFO}.{k}": to_numpy(v) for k, v in batch.extras.items()},
        }
        self.add_columns(columns)

    def add_columns(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append rows given as flat storage columns ("state.<key>", "action", "complementary_info.<key>",
        ...): what `add` writes for collected chunks, and what offline data is loaded as."""
        n = len(next(iter(columns.values())))
        if not self.storage:
            self.storage = {
                name: torch.zeros((self.capacity, *v.shape[1:]), dtype=_storage_dtype(v)) for name, v in columns.items()
            }
        if set(columns) != set(self.storage):
            raise KeyError(f"transition keys changed: {sorted(set(columns) ^ set(self.storage))}")
        keep = min(n, self.capacity)  # a batch larger than the buffer: only its last rows survive
        rows = (self.position + torch.arange(keep)) % self.capacity
        for name, value in columns.items():
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows; expected {n}")
            target = self.storage[name]
            value = np.asarray(value[n - keep :])
            if isinstance(value, np.ndarray) and not value.flags.writeable:  # a Ray worker's zero-copy array
                value = value.copy()
            target[rows] = torch.as_tensor(value, dtype=target.dtype)
        self.position = (self.position + keep) % self.capacity
        self.size = min(self.size + keep, self.capacity)

    def observation_keys(self) -> set[str]:
        """The LeRobot observation keys the stored transitions carry (e.g. `observation.state`)."""
        return {name.split(".", 1)[1] for name in self.storage if name.startswith(f"{STATE}.")}

    def add_missing_columns(self, like: ChunkReplayBuffer, fill: float = float("nan")) -> list[str]:
        """Give this buffer every column of `like` that it lacks, filled with `fill` (returns their names).

        LeRobot's `concatenate_batch_transitions` (the mixer's join) expects both sides to carry the same
        `complementary_info` keys; offline rows have no record of what the policy's acting side adds
        (e.g. DSRL's noise), so those columns are NaN there: a learner that read them would fail loudly."""
        added = [name for name in like.storage if name not in self.storage]
        for name in added:
            source = like.storage[name]
            dtype = source.dtype if source.is_floating_point() else torch.float32
            self.storage[name] = torch.full((self.capacity, *source.shape[1:]), fill, dtype=dtype)
        return added

    # ----------------------------------------------------------------------------------- sampling

    def sample(self, batch_size: int) -> dict[str, Any]:
        """`batch_size` transitions drawn uniformly with replacement, on `self.device`."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty ChunkReplayBuffer: add transitions first")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        batch: dict[str, Any] = {STATE: {}, NEXT_STATE: {}, INFO: {}}
        for name, stored in self.storage.items():
            group, _, key = name.partition(".")
            value = _as_float(stored[idx].to(self.device))
            if group in batch:
                batch[group][key] = value
            else:
                batch[name] = value
        return batch

    def get_iterator(self, batch_size: int, async_prefetch: bool = False, queue_size: int = 2) -> Iterator[dict[str, Any]]:
        """Endless batches (the `DataMixer` / LeRobot buffer interface). Sampling is a cheap index
        gather, so there is no prefetch thread; the arguments are accepted for compatibility."""
        while True:
            yield self.sample(batch_size)

    # -------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors: the filled rows of every column, write position, sampling RNG state."""
        tensors = {name: t[: self.size] for name, t in self.storage.items()}
        tensors[f"{_META}capacity"] = torch.tensor(self.capacity)
        tensors[f"{_META}position"] = torch.tensor(self.position)
        tensors[f"{_META}size"] = torch.tensor(self.size)
        tensors[f"{_META}rng_state"] = self.generator.get_state()
        return tensors

    def load_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        capacity = int(state_dict[f"{_META}capacity"])
        if capacity != self.capacity:
            raise ValueError(f"saved buffer has capacity {capacity}, this one {self.capacity}: create it with capacity={capacity}")
        self.position = int(state_dict[f"{_META}position"])
        self.size = int(state_dict[f"{_META}size"])
        self.generator.set_state(state_dict[f"{_META}rng_state"].clone())
        self.storage = {}
        for name, rows in state_dict.items():
            if not name.startswith(_META):
                self.storage[name] = torch.zeros((self.capacity, *rows.shape[1:]), dtype=rows.dtype)
                self.storage[name][: self.size] = rows

    def save(self, path: str | Path) -> None:
        """Write `state_dict()` to a safetensors file."""
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ChunkReplayBuffer:
        """A buffer restored from `save(path)`: same rows, write position and sampling RNG."""
        state = load_file(str(path))
        buffer = cls(int(state[f"{_META}capacity"]), device=device)
        buffer.load_state_dict(state)
        return buffer


def _as_float(x: Tensor) -> Tensor:
    """Sampled column -> what the learner consumes: uint8 images -> [0, 1], bools/int64 -> float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if x.dtype in (torch.bool, torch.int64):
        return x.float()
    return x
