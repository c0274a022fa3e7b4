"""The on-policy rollout buffer: one row per executed chunk per env, (T, n_envs) rows, kept until the
update that uses them.

A row holds what PPO / GRPO re-evaluate and weigh: the chunk-start observation (the env's own
arrays: images stay uint8, the policy's preprocessor runs again per micro-batch, so language tokens
and normalization are exactly those of acting time), the sampled chain x_0 .. x_K, its log-likelihood
and the value at acting time, the chunk's reward (summed with the per-step discount) and its
discount gamma^n, how the episode ended inside the chunk, the value of the pre-reset last
observation after a time limit (the bootstrap), whether the row counts (GRPO keeps each env's first
episode only) and the weights version (optimizer steps so far) that acted. Every row of one rollout
must come from one version: the buffer refuses to mix them.

`minibatches` serves the update: epochs x shuffled minibatches of valid rows, each split into
micro-batches (gradient accumulation) already turned into policy batches. The buffer round-trips
through safetensors, so a checkpoint taken mid-rollout resumes with the rows collected so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lerobot_steer.rl.checkpoint import _flat_obs, _nested_obs

from .advantages import discounted_episode_returns, gae, group_relative_advantages

# (raw env observation rows, their env indices) -> the policy's input batch
ToBatch = Callable[[dict[str, Any], np.ndarray], dict[str, Any]]

ROW_FIELDS = ("log_prob", "value", "reward", "discount", "terminated", "truncated", "bootstrap_value", "valid",
              "weights_version")
TARGET_FIELDS = ("advantage", "return", "train")


class RolloutBuffer:
    """Rows of one rollout, `capacity` chunk steps of `n_envs` envs (module docstring)."""

    def __init__(self, capacity: int, n_envs: int):
        self.capacity, self.n_envs = capacity, n_envs
        self.pos = 0
        self.obs: dict[str, Tensor] = {}  # flat keys ("pixels/front"), (capacity, n_envs, ...)
        self.chain: Tensor | None = None
        self.fields: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.pos

    @property
    def full(self) -> bool:
        return self.pos >= self.capacity

    def clear(self) -> None:
        self.pos = 0
        self.targets = {}

    def add(self, obs: Mapping[str, Any], chain: Tensor, *, log_prob: Tensor, value: Tensor | None, reward,
            discount, terminated, truncated, bootstrap_value=None, valid=None, weights_version: int) -> None:
        """One chunk step of every env. `obs`: the chunk-start observations (a gym dict of (n_envs, ...)
        arrays); `chain`: (n_envs, K + 1, chunk, D); the rest (n_envs,) (value None: no value head)."""
        if self.full:
            raise RuntimeError(f"the rollout buffer holds {self.capacity} chunk steps already: update, then clear()")
        if self.pos and int(self.fields["weights_version"][0, 0]) != weights_version:
            raise RuntimeError(
                f"rows of weights version {weights_version} added to a rollout of version "
                f"{int(self.fields['weights_version'][0, 0])}: on-policy rows must all come from the weights being updated"
            )
        n = self.n_envs
        flat: dict[str, Tensor] = {}
        _flat_obs("", dict(obs), flat)
        zeros = torch.zeros(n)
        row = {
            "log_prob": log_prob, "value": zeros if value is None else value, "reward": reward, "discount": discount,
            "terminated": terminated, "truncated": truncated,
            "bootstrap_value": zeros if bootstrap_value is None else bootstrap_value,
            "valid": torch.ones(n, dtype=torch.bool) if valid is None else valid,
            "weights_version": torch.full((n,), weights_version, dtype=torch.int64),
        }
        row = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).detach().cpu() for k, v in row.items()}
        for key in ("terminated", "truncated", "valid"):
            row[key] = row[key].bool()
        for key in ("log_prob", "value", "reward", "discount", "bootstrap_value"):
            row[key] = row[key].float()
        chain = chain.detach().cpu().float()
        if self.chain is None:
            self.chain = torch.zeros((self.capacity, *chain.shape), dtype=chain.dtype)
            self.obs = {k: torch.zeros((self.capacity, *v.shape), dtype=v.dtype) for k, v in flat.items()}
            self.fields = {k: torch.zeros((self.capacity, *v.shape), dtype=v.dtype) for k, v in row.items()}
        for key, value in flat.items():
            self.obs[key][self.pos] = value
        self.chain[self.pos] = chain
        for key, value in row.items():
            self.fields[key][self.pos] = value
        self.pos += 1

    # ------------------------------------------------------------------------------------ views

    def __getitem__(self, name: str) -> Tensor:
        """A (T, n_envs) field of the filled rows (ROW_FIELDS, or "advantage" / "return" once set)."""
        source = self.targets if name in TARGET_FIELDS else self.fields
        return source[name][: self.pos]

    @property
    def weights_version(self) -> int | None:
        return int(self.fields["weights_version"][0, 0]) if self.pos else None

    # ------------------------------------------------------------------------------- advantages

    def compute_gae(self, last_value: Tensor, gae_lambda: float) -> None:
        """PPO's targets: GAE advantages and returns (`advantages.gae`); `last_value` (n_envs,) is
        V of the observation after the last row (bootstrap when its episode goes on)."""
        values, terminated, truncated = self["value"], self["terminated"], self["truncated"]
        next_values = torch.cat([values[1:], last_value.detach().cpu().float().reshape(1, -1)])
        next_values = torch.where(truncated, self["bootstrap_value"], next_values)
        next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
        advantage, returns = gae(self["reward"], values, next_values, self["discount"], terminated | truncated,
                                 gae_lambda)
        self.targets = {"advantage": advantage, "return": returns}

    def compute_group_advantages(self, group_size: int, scale: bool = True, skip_flat_groups: bool = True) -> Tensor:
        """GRPO's targets: each env column is one episode; its group-relative return is the advantage of
        all its valid rows. `skip_flat_groups`: the rows of a group whose returns are all equal (no
        signal, advantage 0) are left out of the update. Returns the episode returns (n_envs,)."""
        returns = discounted_episode_returns(self["reward"], self["discount"], self["valid"])
        advantage = group_relative_advantages(returns, group_size, scale=scale)
        self.targets = {"advantage": advantage.expand(self.pos, -1).clone(), "return": returns.expand(self.pos, -1).clone()}
        if skip_flat_groups:
            grouped = returns.reshape(-1, group_size)
            signal = (grouped.max(dim=1).values > grouped.min(dim=1).values).repeat_interleave(group_size)
            self.targets["train"] = self["valid"] & signal
        return returns

    @property
    def train_rows(self) -> Tensor:
        """(T, n_envs) bool: the rows the update learns from (valid ones, less GRPO's flat groups)."""
        return self.targets["train"][: self.pos] if "train" in self.targets else self["valid"]

    def normalize_advantages(self) -> None:
        """Zero mean, unit std over the rows the update learns from."""
        valid = self.train_rows
        advantage = self.targets["advantage"]
        values = advantage[valid]
        if values.numel() > 1:
            self.targets["advantage"] = (advantage - values.mean()) / (values.std() + 1e-8)

    # ------------------------------------------------------------------------------ minibatches

    def minibatches(self, minibatch_size: int, micro_batch_size: int | None, epochs: int, to_batch: ToBatch,
                    device: torch.device | str = "cpu", generator: torch.Generator | None = None
                    ) -> Iterator[list[dict[str, Any]]]:
        """`epochs` passes over the rows to learn from (`train_rows`) in shuffled minibatches of `minibatch_size` (the last of a
        pass may be smaller); each minibatch is a list of micro-batches of at most `micro_batch_size`
        rows, with keys observation (the policy batch), chain, old_log_prob, old_value, advantage,
        return, weight (its share of the minibatch's rows)."""
        if not self.targets:
            raise RuntimeError("compute the advantages (compute_gae / compute_group_advantages) before the update")
        flat_index = torch.nonzero(self.train_rows.reshape(-1)).squeeze(1)
        micro = micro_batch_size or minibatch_size
        for _ in range(epochs):
            order = flat_index[torch.randperm(flat_index.numel(), generator=generator)]
            for start in range(0, order.numel(), minibatch_size):
                rows = order[start : start + minibatch_size]
                yield [self._micro_batch(rows[i : i + micro], rows.numel(), to_batch, device)
                       for i in range(0, rows.numel(), micro)]

    def _micro_batch(self, flat_rows: Tensor, minibatch_rows: int, to_batch: ToBatch, device) -> dict[str, Any]:
        t, e = flat_rows // self.n_envs, flat_rows % self.n_envs
        obs = _nested_obs({k: v[t, e] for k, v in self.obs.items()}, "")
        return {
            "observation": to_batch(obs, e.numpy()),
            "chain": self.chain[t, e].to(device),
            "old_log_prob": self.fields["log_prob"][t, e].to(device),
            "old_value": self.fields["value"][t, e].to(device),
            "advantage": self.targets["advantage"][t, e].to(device),
            "return": self.targets["return"][t, e].to(device),
            "weight": flat_rows.numel() / minibatch_rows,
        }

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Tensor]:
        """The filled rows (advantages are recomputed at the update: they are not state)."""
        state = {"pos": torch.tensor(self.pos), "capacity": torch.tensor(self.capacity),
                 "n_envs": torch.tensor(self.n_envs)}
        if self.pos:
            state["chain"] = self.chain[: self.pos].contiguous()
            state.update({f"obs/{k}": v[: self.pos].contiguous() for k, v in self.obs.items()})
            state.update({f"field/{k}": v[: self.pos].contiguous() for k, v in self.fields.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        capacity, n_envs = int(state["capacity"]), int(state["n_envs"])
        if not int(state["pos"]):  # nothing collected: any run's empty rollout fits (e.g. one saved under Ray)
            self.clear()
            return
        if (capacity, n_envs) != (self.capacity, self.n_envs):
            raise ValueError(f"the saved rollout holds {capacity} chunk steps x {n_envs} envs, this run "
                             f"{self.capacity} x {self.n_envs}: resume with the run's --n_envs and rollout length")
        self.clear()
        self.chain, self.obs, self.fields = None, {}, {}
        pos = int(state["pos"])
        if not pos:
            return
        chain = state["chain"]
        self.chain = torch.zeros((capacity, *chain.shape[1:]), dtype=chain.dtype)
        self.chain[:pos] = chain
        for prefix, target in (("obs/", self.obs), ("field/", self.fields)):
            for key, value in state.items():
                if key.startswith(prefix):
                    target[key[len(prefix):]] = torch.zeros((capacity, *value.shape[1:]), dtype=value.dtype)
                    target[key[len(prefix):]][:pos] = value
        self.pos = pos
