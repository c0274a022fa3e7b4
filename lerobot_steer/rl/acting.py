"""The acting side of online training: env observations -> one action chunk per env.

`SteeringActor` turns a batched gym observation into the policy's input exactly as lerobot-eval
does (`preprocess_observation`, env processors, the policy's preprocessor), decodes one chunk per
env with the frozen base, and returns it in env units for `ChunkCollector`, plus what the learner
stores: the normalized executed chunk (the critics' input) and, for DSRL, the actor-space noise.

Three ways to act (`mode`), each the policy's own `collect_chunk(batch, mode)`:
* "prior": the base's own prior, N(0, I) (prefill; DSRL clips it to its actor's noise bound);
* "explore": the policy as it trains (DSRL: a sample of the noise actor; VGD: guided decode);
* "greedy": its deterministic mode (DSRL's mean noise).

The base's observation history (diffusion `n_obs_steps`) is kept per env: `observe` is called on
the steps between chunks, `episodes_ended` forgets the envs whose episode ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lerobot.envs.utils import preprocess_observation
from lerobot.utils.constants import ACTION

from lerobot_steer.policies.common.frozen_base import observations
from lerobot_steer.rl.chunk_rollout import ActedChunk

MODES = ("prior", "explore", "greedy")


def with_task(batch: dict[str, Any], task: str | Sequence[str] | None) -> dict[str, Any]:
    """`batch` with its task string(s) under "task": one for all rows, or one per row."""
    if task is not None:
        rows = next(iter(observations(batch).values())).shape[0]
        batch["task"] = [task] * rows if isinstance(task, str) else list(task)
    return batch


def policy_batch(raw_obs: dict[str, Any], preprocessor, env_preprocessor=None,
                 task: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Batched gym observation -> the policy's normalized input batch, as lerobot-eval builds it:
    `preprocess_observation`, the task string(s) (a VLA's preprocessor tokenizes them), the env's
    processor, the policy's preprocessor."""
    batch = with_task(preprocess_observation(raw_obs), task)
    return preprocessor(env_preprocessor(batch) if env_preprocessor is not None else batch)


class LearnerPreprocessor:
    """The policy's preprocessor as LeRobot's `RLTrainer` calls it on replayed observations
    (`process_observation`), with the run's task string added.

    `process_observation` hands the pipeline an observation alone, but a VLA's tokenizer step reads
    the task from the transition's complementary data: without this every update of a `dsrl` /
    `dyna_vgd` policy over pi0, pi05 or SmolVLA fails with `KeyError: 'task'`. The replay buffer keeps
    no task per transition because a run acts on one task (the env's or the arm's `--task`)."""

    def __init__(self, preprocessor, task: str | None):
        self.preprocessor, self.task = preprocessor, task

    def process_observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        if self.task is None:
            return self.preprocessor.process_observation(observation)
        # The pipeline's public call (batch in, batch out) carries the task into complementary data.
        batch = self.preprocessor(with_task(dict(observation), self.task))
        return observations(batch)


class SteeringActor:
    """Acts with a `dsrl` / `dyna_vgd` policy on a vector env (see module docstring)."""

    def __init__(self, policy, preprocessor, postprocessor, env_preprocessor=None, env_postprocessor=None,
                 task: str | None = None):
        self.policy = policy
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.env_preprocessor = env_preprocessor or (lambda x: x)
        self.env_postprocessor = env_postprocessor or (lambda x: x)
        self.task = task
        self.mode = "prior"
        self.last_stats: dict[str, float] = {}

    def policy_batch(self, raw_obs: dict[str, Any]) -> dict[str, Any]:
        """Batched gym observation -> the policy's normalized input batch."""
        return policy_batch(raw_obs, self.preprocessor, self.env_preprocessor, self.task)

    def observe(self, raw_obs: dict[str, Any]) -> None:
        """A step between two chunks: keep the base's observation history current."""
        self.policy.adapter.observe(observations(self.policy_batch(raw_obs)))

    def episodes_ended(self, ended: np.ndarray) -> None:
        """The next observation of these envs starts an episode: refill their whole history."""
        if ended.any():
            self.policy.adapter.reset(torch.as_tensor(ended, dtype=torch.bool))

    @torch.no_grad()
    def __call__(self, raw_obs: dict[str, Any]) -> ActedChunk:
        """One chunk per env in env units, the extras the replay buffer keeps, and the executed part of
        the chunk in the policy's normalized space (what the learner trains on)."""
        chunk, extras = self.policy.collect_chunk(self.policy_batch(raw_obs), self.mode)
        self.last_stats = self.policy.acting_stats()
        chunk = chunk[:, : self.policy.config.n_exec]
        env_chunk = self.env_postprocessor({ACTION: self.postprocessor(chunk)})[ACTION]
        return ActedChunk(env_chunk.detach().cpu().numpy(), extras, learner_action=chunk.detach().cpu())
