"""Observation history for bases that condition on the last `n_obs_steps` observations.

LeRobot's DiffusionPolicy keeps such a history in its internal queues, filled by `select_action`
one environment step at a time. The adapter cannot use those queues: once they are filled,
`predict_action_chunk` reads them and silently ignores the batch it is given (LeRobot 0.6.1,
modeling_diffusion.py:111-113), which would break "same observation and noise -> same chunk".
So the adapter clears the policy's queues before every call and keeps this history instead, one row
per environment, with the same rule as LeRobot's `populate_queues`: the first observation after a
reset fills every slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lerobot.configs.types import PolicyFeature


class ObservationHistory:
    """The last `n_obs_steps` single-step observations of a batch of environments.

    Args:
        n_obs_steps: history length the base conditions on.
        features: the base's input features; their keys are the observations kept (state,
            environment state, cameras), their shapes tell single steps (B, *shape) from
            histories (B, n_obs_steps, *shape).
    """

    def __init__(self, n_obs_steps: int, features: dict[str, PolicyFeature]):
        self.n_obs_steps = n_obs_steps
        self._ndims = {key: len(ft.shape) for key, ft in features.items()}
        self._frames: dict[str, Tensor] = {}  # key -> (B, n_obs_steps, *shape)
        self._fresh: Tensor | None = None  # rows whose next observation refills their whole history

    def has_time_dim(self, batch: dict) -> bool:
        """True for (B, n_obs_steps, ...) observations, False for single steps (B, ...)."""
        verdicts = {}
        for key, ndim in self._ndims.items():
            value = batch.get(key)
            if not isinstance(value, Tensor):
                continue
            if value.ndim == ndim + 2:
                if value.shape[1] != self.n_obs_steps:
                    raise ValueError(
                        f"'{key}' has {value.shape[1]} observation steps, the base conditions on "
                        f"n_obs_steps={self.n_obs_steps}"
                    )
                verdicts[key] = True
            elif value.ndim == ndim + 1:
                verdicts[key] = False
            else:
                raise ValueError(
                    f"'{key}' has shape {tuple(value.shape)}: expected (B, {ndim}-d observation) or "
                    f"(B, n_obs_steps={self.n_obs_steps}, {ndim}-d observation)"
                )
        if len(set(verdicts.values())) > 1:
            raise ValueError(
                "mixed observations: some keys carry a time dimension and some do not "
                f"({ {k: ('history' if v else 'single step') for k, v in verdicts.items()} })"
            )
        return bool(verdicts) and next(iter(verdicts.values()))

    def reset(self, done: Tensor | None = None) -> None:
        """Forget the history of every environment, or of the rows where `done` is True."""
        if done is None or not self._frames:
            self._frames, self._fresh = {}, None
            return
        done = torch.as_tensor(done, dtype=torch.bool).reshape(-1).cpu()
        if self._fresh is None or done.shape != self._fresh.shape:
            raise ValueError(
                f"reset(done) got {done.numel()} flags for a history of {self._batch_size()} environments"
            )
        self._fresh |= done

    def push(self, batch: dict) -> dict:
        """Append one single-step observation per environment; return the batch with histories.

        Keys the base does not condition on (language tokens, task strings, ...) pass unchanged.
        """
        keys = [k for k in self._ndims if isinstance(batch.get(k), Tensor)]
        if self.n_obs_steps == 1:  # nothing to remember: add the time axis and stay stateless
            return {**batch, **{k: batch[k].unsqueeze(1) for k in keys}}
        batch_size = batch[keys[0]].shape[0] if keys else 0
        if self._frames and batch_size != self._batch_size():
            raise ValueError(
                f"the observation history holds {self._batch_size()} environments, got a batch of "
                f"{batch_size} single-step observations: call reset() when the number of environments "
                f"changes, or pass observations with their history, shaped (B, n_obs_steps={self.n_obs_steps}, ...)"
            )
        if not self._frames:
            self._fresh = torch.ones(batch_size, dtype=torch.bool)
        fresh = self._fresh.to(batch[keys[0]].device) if keys else None
        any_fresh = bool(self._fresh.any())  # usually False: skip the full masked copy on the hot path
        out = dict(batch)
        for key in keys:
            new = batch[key]
            filled = new.unsqueeze(1).expand(-1, self.n_obs_steps, *new.shape[1:])
            previous = self._frames.get(key)
            if previous is None:
                frames = filled.clone()
            else:
                # A history restored from a checkpoint or from an evaluation pause is held on the CPU
                # (`state_dict`); it follows the device of the observations it continues.
                frames = torch.cat([previous[:, 1:].to(new.device), new.unsqueeze(1)], dim=1)
                if any_fresh:
                    mask = fresh.view(-1, *([1] * (frames.ndim - 1)))
                    frames = torch.where(mask, filled, frames)
            self._frames[key] = frames
            out[key] = frames
        self._fresh = torch.zeros(batch_size, dtype=torch.bool)
        return out

    @property
    def frames(self) -> dict[str, Tensor]:
        """The remembered histories, key -> (B, n_obs_steps, ...) (empty before the first push)."""
        return dict(self._frames)

    def state_dict(self) -> dict[str, Tensor]:
        """The remembered frames and fresh flags as flat tensors (for checkpoints of online runs)."""
        if not self._frames:
            return {}
        return {**{f"frames.{k}": v.detach().cpu() for k, v in self._frames.items()}, "fresh": self._fresh.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore `state_dict()`; an empty dict forgets everything (as `reset()`)."""
        if not state:
            self.reset()
            return
        self._frames = {k.removeprefix("frames."): v.clone() for k, v in state.items() if k.startswith("frames.")}
        self._fresh = state["fresh"].clone().bool()

    def _batch_size(self) -> int:
        return next(iter(self._frames.values())).shape[0]
