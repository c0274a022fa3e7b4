"""`lerobot-steer-rl --runtime=ray`: rollout workers as Ray actors, the learner in this process.

    learner (this process)                         rollout worker i (a Ray actor)
    -----------------------                        ------------------------------
    RayCollector.collect()  <-- ChunkBatch --------  ChunkCollector.collect(SteeringActor)
    buffer.add, updates                              (its own --n_envs vector envs, its own copy
    new weights -> ray.put once -- version v ---->   of the policy: the frozen base loaded once)

The training loop (`train._run`) is the local one: `RayCollector` stands where `ChunkCollector`
stands and hands it one worker's chunk batch per call, while every other worker keeps collecting.
So acting, physics and gradient steps overlap, which the one-process loop cannot do.

Weights. After updates the learner puts what acting needs (`algorithm.get_weights()`: DSRL's noise
actor, VGD's critic and guidance state; never the base) into Ray's object store once, tagged with
the learner's optimization step, and each worker gets that reference with its next request (Ray runs
one caller's calls to an actor in order, so the weights land before the chunk is decoded).

Staleness. A worker always holds one request; it gets the newest weights when its previous batch
comes back. A batch is therefore at most one round of the other workers' batches old: with W
workers and utd u over n_envs envs, about (W - 1) * u * n_envs gradient steps. `ray/staleness_*`
logs it, measured as the learner's optimization step minus the batch's weights version.

Failures. A worker that dies (its process killed, its node gone) is restarted by Ray
(`max_restarts`); the chunk it was collecting is lost and counted (`ray/lost_chunks`), it is asked
again once it is back, gets the weights with its first request, and the run goes on. A worker Ray
gave up on is dropped; with none left the run stops with the reason.

Checkpoints are the local loop's (policy, algorithm, optimizers, buffer, counters); the workers' env
states are not saved, so a resumed Ray run, or a resume across runtimes, restarts the episodes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError

from .chunk_rollout import ChunkBatch, ChunkCollector, EpisodeStats
from .config import SteerRLConfig

logger = logging.getLogger(__name__)

# Environment variables the workers need as the learner has them (a cluster's nodes may not).
FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "HF_HUB_OFFLINE", "HF_HOME", "HF_LEROBOT_HOME", "WANDB_MODE",
                 "TOKENIZERS_PARALLELISM")
RETRY_S = 0.5  # how soon a restarting worker is asked again
# A worker's env seeds: far apart, so no two workers (or the eval seeds) share an episode.
WORKER_SEED_STRIDE = 1_000_003


class RolloutWorker:
    """One rollout worker: `--n_envs` vector envs, an acting copy of the policy, a `ChunkCollector`.

    Built from the run's config exactly as the local loop builds its acting side (`build_acting`),
    so a worker acts as the one-process loop would; `index` picks its env seeds and torch seed.
    """

    def __init__(self, cfg: SteerRLConfig, index: int, threads: int):
        from lerobot.rl.algorithms.factory import make_algorithm
        from lerobot.utils.random_utils import set_seed

        from .train import build_acting

        torch.set_num_threads(threads)
        set_seed(cfg.seed + 1 + index)
        self.index = index
        policy, _, _, _, _, envs, self.actor = build_acting(cfg, cfg.n_envs)
        policy.train()  # as the learner's copy acts in the local loop, once updates started
        cfg.algorithm.policy_config = policy.config
        self.algorithm = make_algorithm(cfg.algorithm, policy)  # only for its load_weights()
        self.collector = ChunkCollector(envs)
        self.collector.reset(seed=cfg.seed + WORKER_SEED_STRIDE * (index + 1))
        self.version = -1  # the learner's optimization step of the weights acting now; -1: the initial ones

    def set_weights(self, weights: Mapping[str, Any], version: int) -> None:
        self.algorithm.load_weights(weights)
        self.version = version

    def collect(self, mode: str) -> tuple[ChunkBatch, list[EpisodeStats], int, dict[str, float], int]:
        """One chunk step of every env in `mode` (prior / explore / greedy): the transitions, the
        episodes that ended, the weights' version that acted, the policy's acting stats and this
        process's id (a new one means Ray restarted the worker)."""
        self.actor.mode = mode
        batch, episodes = self.collector.collect(self.actor, observe=self.actor.observe)
        self.actor.episodes_ended(self.collector.episode_start)
        return batch, episodes, self.version, dict(self.actor.last_stats), os.getpid()

    def observation(self) -> dict[str, Any]:
        """The envs' current (batched) observation: what the learner checks offline data against."""
        return self.collector.obs

    def pid(self) -> int:
        return os.getpid()


class RayCollector:
    """The learner's side: `ChunkCollector`'s interface over Ray rollout workers (module docstring).

    `actor` is the learner's `SteeringActor` (its `mode` says how the workers act; its `last_stats`
    get the workers' acting stats), `algorithm` gives the weights and their version.
    """

    def __init__(self, cfg: SteerRLConfig, actor, algorithm):
        self.cfg, self.actor, self.algorithm = cfg, actor, algorithm
        self.started_ray = start_ray(cfg.ray)
        threads = max(1, int(cfg.ray.num_cpus_per_worker))
        worker_class = remote_worker_class(RolloutWorker, cfg.ray)
        worker_cfg = deepcopy(cfg)
        worker_cfg.algorithm.policy_config = None  # each worker sets its own policy's
        worker_cfg.policy.device = cfg.ray.worker_device
        self.workers = {i: worker_class.remote(worker_cfg, i, threads) for i in range(cfg.ray.num_workers)}
        self.sent_version = dict.fromkeys(self.workers, -1)
        self.pending: dict[ray.ObjectRef, int] = {}
        self._weights: tuple[int, ray.ObjectRef] | None = None
        self.episode_start = np.zeros(0, dtype=bool)  # the workers keep their base's history themselves
        self.counts = {"lost_chunks": 0, "worker_restarts": 0, "broadcasts": 0}
        self.broadcast_bytes = 0
        self.staleness: list[int] = []
        self.batches_by_worker = dict.fromkeys(self.workers, 0)
        self.pids: dict[int, int | None] = {}
        self.retry_at: dict[int, float] = {}  # restarting workers: when to ask them again
        self.restarting: set[int] = set()  # workers whose death is counted and whose restart has not served yet
        logger.info("Ray: %d rollout workers x %d envs (%s CPU each)%s", len(self.workers), cfg.n_envs,
                    cfg.ray.num_cpus_per_worker, f" on nodes labelled {cfg.ray.node_label}" if cfg.ray.node_label else "")

    # ------------------------------------------------------------------------- ChunkCollector's interface

    def reset(self, seed: int | None = None) -> None:
        """The workers reset their envs when they start (each with its own seeds)."""

    @property
    def obs(self) -> dict[str, Any]:
        """A worker's current observation (the learner checks offline data's features against it)."""
        return ray.get(next(iter(self.workers.values())).observation.remote())

    def collect(self, policy=None, observe=None) -> tuple[ChunkBatch, list[EpisodeStats]]:
        """The next batch any worker finishes (`policy` / `observe` act in the workers, not here);
        that worker is sent the newest weights and its next request at once."""
        for i in self.workers.keys() - set(self.pending.values()) - set(self.retry_at):
            self._request(i)
        while True:
            now = time.monotonic()
            for i in [i for i, t in self.retry_at.items() if t <= now]:
                del self.retry_at[i]
                self._request(i)
            if not self.pending and not self.retry_at:
                raise RuntimeError("every Ray rollout worker is dead (Ray gave up restarting them after "
                                   f"--ray.max_restarts={self.cfg.ray.max_restarts}); see the worker logs above")
            if not self.pending:
                time.sleep(max(0.0, min(self.retry_at.values()) - now))
                continue
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=RETRY_S if self.retry_at else None)
            if not ready:
                continue
            i = self.pending.pop(ready[0])
            try:
                batch, episodes, version, stats, pid = ray.get(ready[0])
            except ActorUnavailableError:  # died and restarting: its request is lost, ask again shortly
                if i not in self.restarting:  # counted once per death, also before its first batch
                    self.restarting.add(i)
                    self._restarted(i, lost=True)
                self.retry_at[i] = time.monotonic() + RETRY_S
                continue
            except ActorDiedError as error:  # past its restarts: Ray gave up on it
                logger.error("Ray rollout worker %d is dead and dropped: %s", i, error)
                del self.workers[i]
                continue
            if i not in self.restarting and self.pids.get(i) not in (None, pid):  # restarted between requests
                self._restarted(i, lost=False)
            self.restarting.discard(i)
            self.pids[i] = pid
            self.staleness.append(self.algorithm.optimization_step - version if version >= 0 else 0)
            self.actor.last_stats = stats
            self.batches_by_worker[i] += 1
            self._request(i)
            return batch, episodes

    def metrics(self) -> dict[str, float]:
        """`ray/...` entries of the log row since the last call (staleness in gradient steps)."""
        row = {"ray/workers": len(self.workers), "ray/weights_version": self.algorithm.optimization_step,
               **{f"ray/{k}": v for k, v in self.counts.items()},
               "ray/broadcast_mb": self.broadcast_bytes / 2**20}
        if self.staleness:
            row["ray/staleness_mean"] = float(np.mean(self.staleness))
            row["ray/staleness_max"] = int(max(self.staleness))
            self.staleness = []
        return row

    def state_dict(self) -> dict[str, Any]:
        """No env state: the workers' episodes restart on resume (see the module docstring)."""
        return no_env_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("sim_states") is not None:
            logger.info("resuming with Ray: the checkpoint's env states are not restored, the workers' episodes restart")

    def close(self) -> None:
        for worker in self.workers.values():
            ray.kill(worker, no_restart=True)
        self.workers, self.pending = {}, {}
        if self.started_ray:
            ray.shutdown()

    # ------------------------------------------------------------------------------------- internals

    def _request(self, i: int) -> None:
        """Send worker i the newest weights (if it has older ones), then its next chunk request."""
        version = self.algorithm.optimization_step
        if version > 0 and self.sent_version[i] != version:
            if self._weights is None or self._weights[0] != version:
                weights = self.algorithm.get_weights()
                self._weights = (version, ray.put(weights))
                self.counts["broadcasts"] += 1
                self.broadcast_bytes += _nbytes(weights)
            self.workers[i].set_weights.remote(self._weights[1], version)
            self.sent_version[i] = version
        self.pending[self.workers[i].collect.remote(self.actor.mode)] = i

    def _restarted(self, i: int, lost: bool) -> None:
        """Ray restarted worker i (`lost`: with a request in flight, whose chunk is gone). It starts
        from its initial weights: the newest go with its next request."""
        self.counts["worker_restarts"] += 1
        self.counts["lost_chunks"] += int(lost)
        self.pids[i] = None  # the restarted process's first batch is not counted again
        self.sent_version[i] = -1
        logger.warning("Ray rollout worker %d died%s; Ray restarts it", i, " with a chunk in flight" if lost else "")


def start_ray(options) -> bool:
    """`ray.init` on `--ray.address` with the environment the workers need, unless Ray is already up
    (a caller's cluster connection, tests). Returns whether this call started it (then the caller shuts it down)."""
    if ray.is_initialized():
        return False
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(address=options.address, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": env_vars} if env_vars else None)
    return True


def remote_worker_class(worker_class: type, options, **extra):
    """`worker_class` as a Ray actor with the `--ray.*` resources, restarts and node label (`extra`:
    more of Ray's actor options, e.g. `max_concurrency`)."""
    return ray.remote(worker_class).options(
        num_cpus=options.num_cpus_per_worker, num_gpus=options.num_gpus_per_worker,
        max_restarts=options.max_restarts, max_task_retries=0, label_selector=options.label_selector(), **extra,
    )


def no_env_state() -> dict[str, Any]:
    """A collector state with no envs in it: what a Ray learner checkpoints (its workers' episodes restart)."""
    empty = np.zeros(0)
    return {"obs": {}, "episode_start": empty.astype(bool), "episode_return": empty,
            "episode_length": empty.astype(np.int64), "sim_states": None}


def _nbytes(tree: Any) -> int:
    """Bytes of the tensors in a nested dict of weights (what one broadcast puts in the object store)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, Mapping):
        return sum(_nbytes(v) for v in tree.values())
    return 0
