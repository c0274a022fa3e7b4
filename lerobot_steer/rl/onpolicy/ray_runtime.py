"""`lerobot-steer-ppo --runtime=ray`: each on-policy rollout collected by Ray actors, learned from here.

    learner (this process)                               rollout worker i (a Ray actor)
    ----------------------                               ------------------------------
    weights of version v -> ray.put once  ---------->    load them, collect one rollout (its own
    merge the workers' rows (env columns side by side)   --n_envs envs, rows tagged with v)
    <- rows, V(last observation), finished episodes ---
    PPO / GRPO update on the merged rollout -> v + 1

On-policy data must come from the weights being updated, so a rollout is one synchronous round: every
worker collects with the same version, the learner waits for all of them, updates, and broadcasts
the next version. The rows keep their version tag (`weights_version`), and the rollout buffer
refuses a mix. What is broadcast is the policy's state dict (the trained expert, LoRA adapters and
heads with the rest; for a VLA this is the large transfer of a round).

Each worker runs the local loop's pieces as they are: `build` (its policy, processors, envs and
actor), `ChunkCollector`, `store`, `rollout_complete`. GRPO groups stay inside one worker (its seeds
are its own), so group-relative advantages compare episodes that started from one state. Episodic
rollouts that end at different chunk steps are padded with rows that do not count.

A worker that dies is restarted by Ray; the round asks it again for the same rollout with the same
weights, and the rows it lost are counted (`ray/lost_rollouts`). Checkpoints are taken between rounds,
so a Ray run saves no partial rollout; resuming a local run's checkpoint with Ray drops its partial
rollout (those env steps are counted, not learned from).
"""

from __future__ import annotations

import logging
import os
import time
from copy import deepcopy
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError
from torch import Tensor

from lerobot_steer.rl.chunk_rollout import ChunkCollector
from lerobot_steer.rl.ray_runtime import (
    RETRY_S,
    WORKER_SEED_STRIDE,
    no_env_state,
    remote_worker_class,
    start_ray,
)

from .config import OnPolicyRunConfig
from .rollout_buffer import RolloutBuffer

logger = logging.getLogger(__name__)


class ChainRolloutWorker:
    """One rollout worker: `--n_envs` envs and its own copy of the policy (the local loop's `build`)."""

    def __init__(self, cfg: OnPolicyRunConfig, index: int, threads: int):
        from lerobot.utils.random_utils import set_seed

        from .train import build

        torch.set_num_threads(threads)
        cfg.seed += WORKER_SEED_STRIDE * (index + 1)  # its own env, GRPO group and sampling seeds
        set_seed(cfg.seed)
        self.cfg = cfg
        _, _, _, _, _, envs, self.algorithm, self.actor, self.buffer = build(cfg)
        self.collector = ChunkCollector(envs, gamma=cfg.algorithm.gamma)
        if not cfg.algorithm.episodic:
            self.collector.reset(seed=cfg.seed)

    def rollout(self, weights: dict[str, Tensor], version: int, index: int) -> dict[str, Any]:
        """One rollout with the learner's weights of `version` (rollout `index` picks GRPO's seeds)."""
        from .train import group_seeds, rollout_complete, store

        self.algorithm.load_weights(weights)
        self.algorithm.optimization_step = version
        episodic = self.cfg.algorithm.episodic
        self.buffer.clear()
        env_steps, episodes = 0, []
        while True:
            if episodic and not len(self.buffer):
                self.collector.reset(seed=group_seeds(self.cfg, index))
            batch, ended = self.collector.collect(self.actor)
            valid = store(batch, self.buffer, self.actor, self.algorithm, episodic)
            env_steps += batch.action.shape[1] * len(batch)
            episodes += [(e.success, e.episode_return, e.length) for e in ended if valid[e.env_index]]
            if rollout_complete(self.buffer, episodic):
                break
        last_value = self.actor.value(self.collector.obs) if self.cfg.algorithm.needs_value else None
        return {"rows": self.buffer.state_dict(), "last_value": last_value, "env_steps": env_steps,
                "episodes": episodes, "stats": dict(self.actor.last_stats), "pid": os.getpid()}


class RayRollouts:
    """The learner's side: one synchronous rollout round over the workers (module docstring). Stands
    in for the collector in checkpoints (no env state: the workers' episodes restart on resume)."""

    def __init__(self, cfg: OnPolicyRunConfig, algorithm):
        self.cfg, self.algorithm = cfg, algorithm
        self.started_ray = start_ray(cfg.ray)
        worker_cfg = deepcopy(cfg)
        worker_cfg.runtime, worker_cfg.algorithm.policy_config = "local", None
        worker_cfg.policy.device = cfg.ray.worker_device
        worker_class = remote_worker_class(ChainRolloutWorker, cfg.ray)
        threads = max(1, int(cfg.ray.num_cpus_per_worker))
        self.workers = [worker_class.remote(worker_cfg, i, threads) for i in range(cfg.ray.num_workers)]
        self.counts = {"lost_rollouts": 0, "worker_restarts": 0}
        self.broadcast_bytes = 0
        logger.info("Ray: %d rollout workers x %d envs", len(self.workers), cfg.n_envs)

    def collect(self, buffer: RolloutBuffer, index: int) -> tuple[int, list[tuple], Tensor | None, dict]:
        """Rollout `index` from every worker, merged into `buffer` (env columns worker by worker). Returns
        the env steps taken, the finished episodes (success, return, length), V(last observation) per env
        column (PPO) and the acting stats."""
        version = self.algorithm.optimization_step
        weights = self.algorithm.get_weights()
        self.broadcast_bytes += sum(v.numel() * v.element_size() for v in weights.values())
        weights_ref = ray.put(weights)
        pending = {self.workers[i].rollout.remote(weights_ref, version, index): i for i in range(len(self.workers))}
        results: dict[int, dict] = {}
        retry_at: dict[int, float] = {}
        while pending or retry_at:
            for i in [i for i, t in retry_at.items() if t <= time.monotonic()]:
                del retry_at[i]
                pending[self.workers[i].rollout.remote(weights_ref, version, index)] = i
            if not pending:
                time.sleep(RETRY_S)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=RETRY_S if retry_at else None)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ActorUnavailableError:  # died, Ray restarts it: the same rollout again, once it is back
                    if i not in retry_at:
                        self.counts["lost_rollouts"] += 1
                        self.counts["worker_restarts"] += 1
                        logger.warning("Ray rollout worker %d died mid-rollout; Ray restarts it and it runs again", i)
                    retry_at[i] = time.monotonic() + RETRY_S
                except ActorDiedError as error:
                    raise RuntimeError(f"Ray rollout worker {i} is dead (past --ray.max_restarts="
                                       f"{self.cfg.ray.max_restarts}): {error}") from error
        ordered = [results[i] for i in range(len(self.workers))]
        buffer.load_state_dict(merge_rollouts([r["rows"] for r in ordered], buffer.capacity))
        values = [r["last_value"] for r in ordered]
        last_value = torch.cat(values) if values[0] is not None else None
        episodes = [e for r in ordered for e in r["episodes"]]
        return sum(r["env_steps"] for r in ordered), episodes, last_value, ordered[-1]["stats"]

    def metrics(self) -> dict[str, float]:
        return {"ray/workers": len(self.workers), **{f"ray/{k}": v for k, v in self.counts.items()},
                "ray/broadcast_mb": self.broadcast_bytes / 2**20}

    # --------------------------------------------------------------------- the collector's place in checkpoints

    def reset(self, seed=None) -> None:
        """The workers reset their own envs."""

    def state_dict(self) -> dict[str, Any]:
        return no_env_state()

    def load_state_dict(self, state) -> None:
        """Env states are not restored under Ray: the workers' episodes restart."""

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if self.started_ray:
            ray.shutdown()


def merge_rollouts(states: list[dict[str, Tensor]], capacity: int) -> dict[str, Tensor]:
    """The workers' `RolloutBuffer.state_dict()`s as one rollout with their env columns side by side.
    Episodic rollouts that stopped at different chunk steps are padded to the longest with rows that
    do not count (`valid` False, zeros elsewhere)."""
    length = max(int(s["pos"]) for s in states)
    merged: dict[str, Tensor] = {"pos": torch.tensor(length), "capacity": torch.tensor(capacity),
                                 "n_envs": torch.tensor(sum(int(s["n_envs"]) for s in states))}
    for key in states[0]:
        if key in merged:
            continue
        parts = []
        for s in states:
            value = s[key]
            if value.shape[0] < length:
                pad = torch.zeros((length - value.shape[0], *value.shape[1:]), dtype=value.dtype)
                value = torch.cat([value, pad])
            parts.append(value)
        merged[key] = torch.cat(parts, dim=1)
    return merged
