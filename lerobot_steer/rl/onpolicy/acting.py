"""The acting side of an on-policy run: env observations -> one sampled chain per env.

`ChainActor` builds the policy's input exactly as lerobot-eval does (`rl.acting.policy_batch`:
`preprocess_observation`, each env's task string, the env's processor, the policy's preprocessor,
whose tokenizer turns the task into the VLA's language tokens), samples the stochastic chain
(`sample_actions_with_log_prob`) and returns the executed part of the chunk in env units for
`ChunkCollector`, with the chain, its log-likelihood and the value as extras for the rollout buffer.
The same batch path serves the update (`batch`), so a stored row is re-evaluated on the very input
it was sampled from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lerobot.utils.constants import ACTION

from lerobot_steer.rl.acting import policy_batch
from lerobot_steer.rl.chunk_rollout import ActedChunk


class ChainActor:
    """Acts with a chain policy (`pi0_rl`, `pi05_rl`, `smolvla_rl`) on a vector env (module docstring).

    tasks: the task string of each env (index = env index), or None for envs without one.
    noise_group_size: G to give each block of G consecutive envs (a GRPO group) one initial noise x_0
        per chunk step (`group_shared_noise`); None: every env draws its own, as the base does.
    """

    def __init__(self, policy, preprocessor, postprocessor, env_preprocessor=None, env_postprocessor=None,
                 tasks: Sequence[str | None] | None = None, generator: torch.Generator | None = None,
                 noise_group_size: int | None = None):
        self.policy = policy
        self.noise_group_size = noise_group_size
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.env_preprocessor = env_preprocessor
        self.env_postprocessor = env_postprocessor or (lambda x: x)
        self.tasks = list(tasks) if tasks is not None else None
        self.generator = generator
        self.last_stats: dict[str, float] = {}

    def batch(self, raw_obs: dict[str, Any], env_index: np.ndarray | None = None) -> dict[str, Any]:
        """Gym observation rows (of envs `env_index`, default all in order) -> the policy's input batch."""
        task = None
        if self.tasks is not None and self.tasks[0] is not None:
            index = range(len(self.tasks)) if env_index is None else env_index
            task = [self.tasks[int(i)] for i in index]
        return policy_batch(raw_obs, self.preprocessor, self.env_preprocessor, task)

    @property
    def n_action_steps(self) -> int:
        return self.policy.config.n_action_steps

    @torch.no_grad()
    def __call__(self, raw_obs: dict[str, Any]) -> ActedChunk:
        batch = self.batch(raw_obs)
        noise = None
        if self.noise_group_size is not None:
            noise = group_shared_noise(self.policy, batch, self.noise_group_size, self.generator)
        out = self.policy.sample_actions_with_log_prob(batch, noise, generator=self.generator)
        chunk = out.actions[:, : self.n_action_steps]
        env_chunk = self.env_postprocessor({ACTION: self.postprocessor(chunk)})[ACTION]
        extras = {"chain": out.chain, "log_prob": out.log_prob}
        if out.value is not None:
            extras["value"] = out.value
        noised = out.stds > 0
        self.last_stats = {"chain_std": float(out.stds[noised].mean()) if noised.any() else 0.0}
        return ActedChunk(env_chunk.detach().cpu().numpy(), extras)

    @torch.no_grad()
    def value(self, raw_obs: dict[str, Any], env_index: np.ndarray | None = None) -> Tensor:
        """V of each observation row (n,), on the CPU (for bootstrapping)."""
        return self.policy.predict_value(self.batch(raw_obs, env_index)).float().cpu()


def group_shared_noise(policy, batch: dict[str, Any], group_size: int,
                       generator: torch.Generator | None = None) -> Tensor:
    """One initial noise x_0 per block of `group_size` consecutive rows of `batch`, repeated over the
    block: common random numbers for a GRPO group.

    Why: x_0 ~ N(0, I) is not a function of the weights, so its share of a return's variance is noise
    the policy gradient cannot credit; with a small trainable chain noise it is most of the variance.
    Within a group that shares x_0 (and its reset seed), the returns differ by the chain's trainable
    noise alone, and the group mean, a function of x_0, is still a baseline that adds no bias.
    """
    rows = next(iter(v for v in batch.values() if isinstance(v, Tensor))).shape[0]
    if rows % group_size:
        raise ValueError(f"{rows} rows do not split into groups of {group_size}")
    per_group = policy.initial_noise(batch, rows=rows // group_size, generator=generator)
    return per_group.repeat_interleave(group_size, dim=0)
