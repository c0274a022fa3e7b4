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
    """

    def __init__(self, policy, preprocessor, postprocessor, env_preprocessor=None, env_postprocessor=None,
                 tasks: Sequence[str | None] | None = None, generator: torch.Generator | None = None):
        self.policy = policy
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
        out = self.policy.sample_actions_with_log_prob(self.batch(raw_obs), generator=self.generator)
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
