"""`lerobot-steer-rl-robot --runtime=ray`: the arm on the machine it is wired to, the learner elsewhere.

    learner (this process, e.g. a GPU machine)           arm worker (a Ray actor on the robot's machine)
    ------------------------------------------           -----------------------------------------------
    run_episode(index, mode, weights v) ---------------->  `ArmSide`: robot, keys, leader arm, recording;
                                                           an acting copy of the policy (base loaded once),
    store, updates, checkpoint  <-- Episode (chunk          given the newest weights with every episode
                                    transitions, label) --

The worker is placed by `--ray.node_label` (the robot's machine joins the cluster with
`ray start --address=<head>:6379 --labels='{"robot": "so101"}'`). The operator's keys are read there,
and a `--dataset.*` recording is written there.

Updates: the learner's thread is free while the arm plays, so `--updates=background` trains during
the episode (no acting copy or lock: the worker acts with its own copy, refreshed at the next
episode) and `between_episodes` trains after each stored episode, before the next one starts. The
episode's weights version against the learner's step when it is stored is `ray/staleness`.

Failures: a worker that dies (its process, or its machine) is restarted by Ray up to
`--ray.max_restarts`; the restarted worker reconnects the arm, the episode it was playing is lost
(`ray/lost_episodes`) and the run goes on with the next one. Ctrl-C here asks the worker to hold the
arm and stop; the run is saved up to the last stored episode, as in the local loop.

Checkpoints, metrics and `--resume` are the local loop's (`LearnerSide`): either runtime resumes the
other's run. Paths the worker loads (the base, `--policy.path`, a resumed run's checkpoint) must be
reachable from the robot's machine: a Hub id, or storage both machines mount.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from lerobot_steer.record.keys import KeySource

from .acting import SteeringActor
from .checkpoint import TRAIN_CONFIG_NAME, save_config
from .metrics_log import MetricsLog
from .ray_runtime import RETRY_S, remote_worker_class, start_ray
from .robot_config import RobotRLConfig
from .robot_loop import ArmSide, Episode, LearnerSide, build_policy, interrupted_message, print_episode
from .run_guard import RunInterrupted, StopSignals
from .train import checkpoint_to_resume

logger = logging.getLogger(__name__)

WAIT_S = 0.05  # how often the learner looks at a playing episode when it has no update to make
CLOSE_TIMEOUT_S = 120.0  # the worker's close (arm to its start pose, disconnect, dataset finalized)


class StopRequest:
    """The learner's Ctrl-C, as the worker's episode loop sees it (`StopSignals.requested`)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None


class ArmWorker:
    """The arm's side of a Ray run (module docstring).

    Ray runs a threaded actor's calls on several threads (`max_concurrency=2`, so `request_stop`
    reaches an episode that is playing), but a serial port, a camera or a renderer's GL context
    belongs to the thread that opened it: every robot call runs on one thread of the worker's own.
    The arm connects on the first call, also after Ray restarted the worker.
    """

    def __init__(self, cfg: RobotRLConfig, key_source: KeySource | None, threads: int):
        torch.set_num_threads(threads)
        self.cfg, self.key_source = cfg, key_source
        self.stop = StopRequest()
        self.arm_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arm")
        self.arm: ArmSide | None = None
        self.version: int | None = None

    def setup(self, start_pose: dict[str, float] | None) -> tuple[dict[str, float], Any, int]:
        """Build the acting policy, check it against the robot, open the recording, connect and move to
        the start pose. Returns the start pose, the joint cap in force and this process's id."""
        pose = self.arm_thread.submit(self._connect, start_pose).result()
        return pose, self.arm.cap, os.getpid()

    def run_episode(self, attempt: int, index: int, last: bool, mode: str, weights: dict[str, Any], version: int,
                    start_pose: dict[str, float] | None) -> tuple[Episode | None, bool, int, int]:
        """One episode acting with `weights` (the learner's step `version`) in `mode`. Returns the episode
        (None: dropped, or stopped by `request_stop`), whether the operator asked to stop the run, the
        weights' version and this process's id."""
        return self.arm_thread.submit(self._episode, attempt, index, last, mode, weights, version, start_pose).result()

    def request_stop(self) -> None:
        """From the learner's Ctrl-C: the playing episode ends at its next frame, the arm holds."""
        self.stop.requested, self.stop.signum = True, signal.SIGINT

    def close(self) -> None:
        if self.arm is not None:
            self.arm_thread.submit(self._close).result()

    # --------------------------------------------------------------------------- on the arm's thread

    def _connect(self, start_pose: dict[str, float] | None) -> dict[str, float]:
        if self.arm is not None:
            return self.arm.session.start_pose()
        from lerobot.rl.algorithms.factory import make_algorithm

        cfg = self.cfg
        arm = ArmSide(cfg, self.key_source)
        policy, preprocessor, postprocessor = build_policy(cfg)
        arm.check_policy(policy.config)
        policy.train()  # as the learner's policy acts in the local loop once updates started
        cfg.algorithm.policy_config = policy.config
        self.algorithm = make_algorithm(cfg.algorithm, policy)  # only for its load_weights()
        self.actor = SteeringActor(policy, preprocessor, postprocessor, task=cfg.task)
        arm.open()
        self.arm = arm
        return arm.connect(start_pose, self.actor, threading.Lock(), self.stop)

    def _episode(self, attempt, index, last, mode, weights, version, start_pose):
        self._connect(start_pose)
        if version != self.version:
            self.algorithm.load_weights(weights)
            self.version = version
        self.actor.mode = mode
        episode = self.arm.session.run_episode(attempt, index, last)
        return episode, self.arm.stop_recording, version, os.getpid()

    def _close(self) -> None:
        try:
            self.arm.close()
        finally:
            self.arm.push()


def run_on_ray(cfg: RobotRLConfig, key_source: KeySource | None, stop: StopSignals) -> dict[str, Any]:
    """The learner's loop of a Ray run (module docstring); returns what `train_on_robot` returns."""
    resume_from = checkpoint_to_resume(cfg)
    side = LearnerSide(cfg, resume_from)
    counters, learner, algorithm = side.counters, side.learner, side.algorithm
    save_config(cfg, cfg.output_dir / TRAIN_CONFIG_NAME)
    log = MetricsLog(cfg.output_dir, resume_env_steps=counters["env_steps"] if resume_from else None)
    started_ray = start_ray(cfg.ray)
    worker_cfg = deepcopy(cfg)
    worker_cfg.algorithm.policy_config = None  # the worker sets its own policy's
    worker_cfg.device = worker_cfg.policy.device = cfg.ray.worker_device
    worker_class = remote_worker_class(ArmWorker, cfg.ray, max_concurrency=2)
    worker = worker_class.remote(worker_cfg, key_source, max(1, int(cfg.ray.num_cpus_per_worker)))
    logger.info("Ray: the arm's worker%s, the learner here on %s", f" on a node labelled {cfg.ray.node_label}"
                if cfg.ray.node_label else "", cfg.policy.device)
    ray_counts = {"ray/lost_episodes": 0, "ray/worker_restarts": 0}
    row: dict[str, Any] = {}
    weights: tuple[int, ray.ObjectRef] | None = None
    try:
        try:
            counters["start_pose"], cap, pid = ray.get(worker.setup.remote(counters["start_pose"]))
        except RayTaskError as error:  # e.g. the policy does not fit the robot: the worker's own error
            raise error.cause from None
        print(f"max_relative_target: {cap}")
        stop_after = False
        while counters["episodes"] < cfg.episodes and not stop_after:
            index, attempt = counters["episodes"], counters["attempts"]
            counters["attempts"] += 1
            version = algorithm.optimization_step
            if weights is None or weights[0] != version:
                weights = (version, ray.put(algorithm.get_weights()))
            ref = worker.run_episode.remote(attempt, index, index == cfg.episodes - 1, side.episode_mode(index),
                                            weights[1], version, counters["start_pose"])
            _wait_training(ref, cfg, learner, worker, stop)
            try:
                episode, stop_after, acted_version, episode_pid = ray.get(ref)
            except ActorUnavailableError:  # died, Ray restarts it: the episode is lost, the next one is asked for
                if pid is not None:  # counted once per death, not again while it restarts
                    ray_counts["ray/lost_episodes"] += 1
                    ray_counts["ray/worker_restarts"] += 1
                    logger.warning("the arm's Ray worker died during episode %d; Ray restarts it (the episode is "
                                   "lost)", index)
                pid = None
                time.sleep(RETRY_S)
                continue
            except ActorDiedError as error:
                raise RuntimeError(f"the arm's Ray worker is dead and Ray gave up restarting it (--ray.max_restarts="
                                   f"{cfg.ray.max_restarts}): {error}") from error
            except RayTaskError as error:
                raise error.cause from None
            if pid is not None and episode_pid != pid:  # restarted between two episodes: nothing was lost
                ray_counts["ray/worker_restarts"] += 1
            pid = episode_pid
            if stop.requested:
                raise RunInterrupted(interrupted_message(cfg, stop.signum, index), stop.signum)
            if episode is None:
                continue
            row = side.take(episode, index)
            row.update(ray_counts)
            row["ray/weights_version"] = acted_version
            row["ray/staleness"] = algorithm.optimization_step - acted_version
            path = side.save()
            log.log(row)
            print_episode(episode, index, counters, row, path)
        side.finish()
    finally:
        try:
            ray.get(worker.close.remote(), timeout=CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001  (a dead worker has nothing left to close)
            logger.warning("the arm's Ray worker could not close cleanly", exc_info=True)
        finally:
            ray.kill(worker, no_restart=True)
            log.close()
            if started_ray:
                ray.shutdown()
    return {**counters, "last_row": row, "update_seconds": learner.update_seconds, **ray_counts}


def _wait_training(ref: ray.ObjectRef, cfg: RobotRLConfig, learner, worker, stop: StopSignals) -> None:
    """Until the episode `ref` comes back (or fails): with `--updates=background` the owed updates, one
    at a time; a Ctrl-C here is passed on to the worker (the arm holds)."""
    stop_sent = False
    while True:
        busy = cfg.updates == "background" and learner.owed()
        ready, _ = ray.wait([ref], num_returns=1, timeout=0 if busy else WAIT_S)
        if ready:
            return
        if stop.requested and not stop_sent:
            worker.request_stop.remote()
            stop_sent = True
        if busy:
            with learner.lock:
                learner.step()
