"""Seeded episodes of one policy on a vector of sims, in lock-step batches.

Most LeRobot policies keep per-batch state (observation and action queues) that `reset()` clears
for the whole batch at once, so one env's episode cannot restart while the others run. Like
`lerobot-eval`, we therefore run batches in lock-step: `policy.reset()`, reset `batch_size` envs
with consecutive seeds, step until every env has ended, next batch. An env that ends early is frozen
by LeRobot's `FreezeAfterEpisodeEnd` (its last observation is replayed, no physics or rendering),
and the actions the policy still produces for it are ignored. Episode `i` always uses seed
`seed + i`, so every checkpoint meets the same block and bowl placements (paired comparisons).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from lerobot.envs.utils import NEW_ROLLOUT_OPTION, freeze_after_episode_end, preprocess_observation
from lerobot.utils.constants import ACTION

from lerobot_steer.sim.pick_place_env import SUCCESS, TIMEOUT


def _identity(x):
    return x


@dataclass
class PolicyUnderTest:
    """A policy (anything with `select_action(batch)` and `reset()`) with the processors around it."""

    label: str
    policy: Any
    path: str = ""
    policy_type: str = ""
    preprocessor: Callable | None = None
    postprocessor: Callable | None = None
    env_preprocessor: Callable | None = None
    env_postprocessor: Callable | None = None

    def __post_init__(self):
        for name in ("preprocessor", "postprocessor", "env_preprocessor", "env_postprocessor"):
            if getattr(self, name) is None:
                setattr(self, name, _identity)

    def act(self, raw_obs: dict, tasks: list[str]) -> np.ndarray:
        """One (batch, action_dim) action in env units, through the same steps as lerobot-eval."""
        obs = preprocess_observation(raw_obs)
        obs["task"] = tasks
        obs = self.preprocessor(self.env_preprocessor(obs))
        with torch.inference_mode():
            action = self.policy.select_action(obs)
        if action.ndim != 2:
            raise ValueError(f"select_action must return (batch, action_dim); got shape {tuple(action.shape)}")
        return self.to_env_units(action)

    def to_env_units(self, actions: torch.Tensor) -> np.ndarray:
        """Policy-space actions (..., action_dim) -> env units, through the policy's postprocessor and
        the env's (as `act` does; a chunk (B, T, action_dim) is processed as B x T actions)."""
        shape = tuple(actions.shape)
        flat = actions.reshape(-1, shape[-1])
        with torch.inference_mode():
            flat = self.env_postprocessor({ACTION: self.postprocessor(flat)})[ACTION]
        flat = flat.to("cpu").numpy() if isinstance(flat, torch.Tensor) else np.asarray(flat)
        return flat.reshape(*shape[:-1], flat.shape[-1])


@dataclass
class EpisodeResult:
    """One episode: `outcome` is the env's failure-taxonomy label, `steps_to_success` the first step
    with `is_success` (None if never)."""

    index: int
    seed: int
    success: bool
    outcome: str
    steps: int
    steps_to_success: int | None
    ret: float
    video: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["return"] = d.pop("ret")
        return d


def make_vector_env(env_cfg, n_envs: int, use_async: bool = False) -> gym.vector.VectorEnv:
    """`n_envs` sims from the env config (as its `create_envs` builds them), each frozen at its
    episode's end. Async workers build their GL contexts lazily, so both kinds render."""

    def make_one():
        return gym.make(env_cfg.gym_id, disable_env_checker=env_cfg.disable_env_checker, **env_cfg.gym_kwargs)

    fns = [freeze_after_episode_end(make_one) for _ in range(n_envs)]
    if use_async and n_envs > 1:
        return gym.vector.AsyncVectorEnv(fns, context="forkserver")
    return gym.vector.SyncVectorEnv(fns)


def _info_array(info: dict, key: str, n: int, default) -> list:
    """Per-env values of `key` from a vector env's info dict (masked where an env did not set it)."""
    if key not in info:
        return [default] * n
    values, mask = info[key], info.get(f"_{key}", np.ones(n, dtype=bool))
    return [values[i] if mask[i] else default for i in range(n)]


def render_rows(vec: gym.vector.VectorEnv, rows: Sequence[int]) -> dict[int, np.ndarray]:
    """Frames of the chosen envs only (a sync vector env lets us skip the others)."""
    if not rows:
        return {}
    if hasattr(vec, "envs"):
        return {i: vec.envs[i].render() for i in rows}
    frames = vec.call("render")
    return {i: frames[i] for i in rows}


class EpisodeRecorder:
    """What `run_episodes` calls to record videos (see `video.VideoRecorder`); the default records nothing.

    `trails = True` asks `run_episodes` to draw the predicted chunks' end-effector trails into the
    recorded frames (see `trails.TrailOverlay`)."""

    trails: bool = False

    def wants(self, index: int) -> bool:
        return False

    def start(self, index: int, seed: int) -> None: ...

    def frame(self, index: int, image: np.ndarray, step: int) -> None: ...

    def finish(self, result: EpisodeResult) -> None: ...


def run_episodes(
    put: PolicyUnderTest,
    env_cfg,
    seeds: Sequence[int],
    batch_size: int = 1,
    use_async_envs: bool = False,
    recorder: EpisodeRecorder | None = None,
    progress: bool = True,
) -> list[EpisodeResult]:
    """Run one episode per seed, `batch_size` at a time; results in seed order."""
    recorder = recorder or EpisodeRecorder()
    batch_size = max(1, min(batch_size, len(seeds)))
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(seeds), desc=put.label, unit="ep", disable=not progress, mininterval=1.0)
    vec = trails = None
    if recorder.trails and any(recorder.wants(i) for i in range(len(seeds))):
        from .trails import TrailOverlay

        trails = TrailOverlay(put, env_cfg, seed=int(seeds[0]))
    try:
        for start in range(0, len(seeds), batch_size):
            batch_seeds = list(seeds[start : start + batch_size])
            if vec is None or vec.num_envs != len(batch_seeds):
                if vec is not None:
                    vec.close()
                vec = make_vector_env(env_cfg, len(batch_seeds), use_async_envs)
            results += _run_batch(put, vec, env_cfg, batch_seeds, start, recorder, bar, trails)
            successes = sum(r.success for r in results)
            bar.set_postfix(success=f"{successes}/{len(results)}")
    finally:
        bar.close()
        if trails is not None:
            trails.close()
        if vec is not None:
            vec.close()
    return results


def _run_batch(put, vec, env_cfg, seeds, first_index, recorder, bar, trails=None) -> list[EpisodeResult]:
    n = len(seeds)
    indices = [first_index + i for i in range(n)]
    recorded = [i for i in range(n) if recorder.wants(indices[i])]
    for i in recorded:
        recorder.start(indices[i], seeds[i])
    if trails is not None and recorded:
        trails.start_batch()
        render = trails.render
    else:
        trails, render = None, render_rows

    if hasattr(put.policy, "reset"):
        put.policy.reset()  # a fresh episode for every env of the batch (queues, latent state)
    obs, _ = vec.reset(seed=list(seeds), options={NEW_ROLLOUT_OPTION: True})
    for i, img in render(vec, recorded).items():
        recorder.frame(indices[i], img, 0)
    tasks = list(vec.call("task_description"))

    done = np.zeros(n, dtype=bool)
    steps = np.zeros(n, dtype=int)
    returns = np.zeros(n)
    first_success: list[int | None] = [None] * n
    outcomes: list[str | None] = [None] * n
    max_steps = int(env_cfg.episode_length)
    while not done.all() and int(steps.max(initial=0)) < max_steps + 1:
        action = put.act(obs, tasks)
        live = ~done
        if trails is not None:  # forecast a new chunk from the state it starts in, before stepping
            trails.after_act(vec, [i for i in recorded if live[i]])
        obs, reward, terminated, truncated, info = vec.step(action)
        steps[live] += 1
        returns[live] += np.asarray(reward)[live]
        success = _info_array(info, "is_success", n, False)
        failure = _info_array(info, "failure", n, None)
        ended = live & (np.asarray(terminated) | np.asarray(truncated))
        for i in np.flatnonzero(live):
            if success[i] and first_success[i] is None:
                first_success[i] = int(steps[i])
            if ended[i]:
                outcomes[i] = failure[i] or (SUCCESS if first_success[i] else TIMEOUT)
        for i, img in render(vec, [i for i in recorded if live[i]]).items():
            recorder.frame(indices[i], img, int(steps[i]))
        done |= ended
        bar.update(int(ended.sum()))

    results = []
    for i in range(n):
        result = EpisodeResult(
            index=indices[i], seed=int(seeds[i]), success=first_success[i] is not None,
            outcome=outcomes[i] or TIMEOUT, steps=int(steps[i]), steps_to_success=first_success[i],
            ret=float(returns[i]),
        )
        if i in recorded:
            recorder.finish(result)
        results.append(result)
    return results
