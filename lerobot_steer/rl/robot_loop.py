"""`lerobot-steer-rl-robot`: online steering (DSRL-SAC, dyna_vgd) on one LeRobot robot.

The DSRL real-world recipe: a frozen base, a small noise actor trained online from sparse rewards that a
person gives with a key at each episode's end.

    connect -> per episode: [reset period] -> chunk loop at --fps (the policy decodes a chunk, the arm
    plays its n_exec actions, one per frame) -> label (key, or the sim with --label_source=sim) ->
    store the episode's chunk transitions (reward 1 on the last one on success, else 0) -> updates
    (`--utd_ratio` per stored transition) -> checkpoint

What is reused, unchanged: the learner of `lerobot-steer-rl` (LeRobot's `make_algorithm` and `RLTrainer`
over our `ChunkReplayBuffer`, `SteeringActor` for acting, `check_finite_losses`), its checkpoints
(`save_checkpoint` / `load_training_state` / `resume_checkpoint`: same layout, same exact resume),
`MetricsLog`, `RunLock` / `StopSignals`; from `lerobot-steer-eval-real`: the robot's recording features,
the feature check before anything moves (`check_policy_matches_robot`), the `max_relative_target` default
on real arms, the reset modes, the label keys (`OutcomeKeys` plus an intervention key here) and the
sim's paired scenes (`robot.reset_scene(seed + episode)`); from LeRobot: `build_dataset_frame`,
`precise_sleep`, `follower_smooth_move_to`, `record_loop` (teleop resets), the default processors.

Updates never run inside the control loop: `--updates=between_episodes` runs them after an episode is
stored, `--updates=background` in a thread while the arm moves; the arm then acts with a copy of the
trained networks, refreshed after every update under a lock held only for the copy (the frozen base is
shared, not copied).

What a checkpoint does not hold is the episode in progress: after a crash or kill -9, `--resume=true`
starts a new episode; every stored transition, the optimizers, RNG and counters continue exactly.
With `--dataset.repo_id=...` every episode is also recorded into a labelled LeRobot dataset (the
writer and outcome columns of `lerobot-steer-record`); a dropped episode is not, one cut short by
Ctrl-C or an error is saved as `interrupted`. After a kill -9 the dataset can hold one episode more
than the run's checkpoint (recorded, then killed before the checkpoint): it happened on the arm, and
the resumed run appends after it.

The run is two sides: `ArmSide` (robot, keys, leader arm, recording, the episode loop) and
`LearnerSide` (policy, algorithm, buffer, updates, checkpoints). Locally both live in this process;
with `--runtime=ray` the arm's side runs in a Ray actor on the robot's machine (`robot_ray.py`).
"""


import contextlib
import copy
import itertools
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lerobot.configs import parser
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.processor import make_default_processors
from lerobot.rl.algorithms.factory import make_algorithm
from lerobot.rl.data_sources import OnlineOfflineMixer
from lerobot.rl.trainer import RLTrainer
from lerobot.robots import make_robot_from_config
from lerobot.scripts.lerobot_record import record_loop
from lerobot.teleoperators import make_teleoperator_from_config
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE, OBS_STR
from lerobot.utils.feature_utils import build_dataset_frame
from lerobot.utils.robot_utils import precise_sleep
from lerobot.utils.utils import log_say

from lerobot_steer.cli_errors import run_command, user_input
from lerobot_steer.evaluation.checks import check_policy_matches_robot
from lerobot_steer.record.dataset import open_dataset, recording_features
from lerobot_steer.record.devices import check_devices
from lerobot_steer.record.eval_config import EvalRealConfig
from lerobot_steer.record.evaluate import EvalSession, move_to_pose, slide_to_teleop
from lerobot_steer.record.frames import OutcomeFrames, keep_complete_frames, label_episode, pending_frames
from lerobot_steer.record.keys import KeyboardKeys, KeySource, OutcomeKeys, describe
from lerobot_steer.record.outcome_log import OutcomeLog
from lerobot_steer.record.outcomes import Outcome
from lerobot_steer.record.recorder import default_outcome, push_and_exit
from lerobot_steer.sim.robot import SO101Sim

from .acting import LearnerPreprocessor, SteeringActor
from .checkpoint import (
    TRAIN_CONFIG_NAME,
    load_training_state,
    save_checkpoint,
    save_config,
)
from .chunk_rollout import ChunkBatch
from .metrics_log import MetricsLog
from .replay_buffer import ChunkReplayBuffer
from .robot_config import INTERVENTION_KEYS, RobotRLConfig
from .run_guard import RunInterrupted, StopSignals
from .train import _resume_config, check_finite_losses, checkpoint_to_resume, guarded_run

logger = logging.getLogger("lerobot_steer.rl.robot")

COMMAND = "lerobot-steer-rl-robot"
INTERVENED = "intervened"
UPDATER_NICENESS = 10  # the background updater's thread niceness (Linux), above the control loop's
SWITCH_INTERVAL_S = 0.001  # the interpreter's thread switch interval while the updater runs


# ---------------------------------------------------------------------------------------- keys


class EpisodeKeys(OutcomeKeys):
    """`OutcomeKeys` (s, f, 1-9, n, r, q, d) plus the intervention key (space / i): the loop holds the
    arm at its present position on the next frame and ends the episode, marked `intervened`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.intervened = False

    def start_episode(self) -> None:
        super().start_episode()
        self.intervened = False

    def press(self, name: str) -> None:
        if name.lower() in INTERVENTION_KEYS:
            if self.phase == "episode":
                self.intervened = True
                self.events["exit_early"] = True
                print(f"{name} pressed: intervention, the arm holds its position.")
            return
        super().press(name)


# ---------------------------------------------------------------------------------------- data


def gym_observation(frame: dict[str, Any]) -> dict[str, Any]:
    """A robot's observation frame (LeRobot names, HWC uint8 images) as a batch-of-one gym observation
    (`agent_pos`, `pixels/<camera>`): what `SteeringActor` and `ChunkReplayBuffer` take from sim envs."""
    obs: dict[str, Any] = {"agent_pos": np.asarray(frame[OBS_STATE], dtype=np.float32)[None]}
    pixels = {key.removeprefix(f"{OBS_IMAGES}."): np.asarray(value, dtype=np.uint8)[None]
              for key, value in frame.items() if key.startswith(f"{OBS_IMAGES}.")}
    if pixels:
        obs["pixels"] = pixels
    return obs


@dataclass
class PendingChunk:
    """One chunk transition while its chunk plays on the arm."""

    obs: dict[str, Any]
    action: np.ndarray  # (1, n_exec, action_dim), the learner's (normalized) chunk
    extras: dict[str, np.ndarray]
    n_steps: int = 0
    next_obs: dict[str, Any] | None = None


@dataclass
class Episode:
    """What one episode on the arm gave."""

    chunks: list[PendingChunk]
    outcome: Outcome
    intervened: bool
    frames: int
    periods: list[float] = field(default_factory=list)  # seconds between consecutive frame starts
    sim_outcome: str | None = None

    @property
    def reward(self) -> float:
        return 1.0 if self.outcome.success and not self.intervened else 0.0

    def batch(self) -> ChunkBatch:
        """The episode's chunk transitions, sparse reward on the last one: terminal on success, else a
        time-limit end (the critic bootstraps from it)."""
        n = len(self.chunks)
        reward = np.zeros(n, dtype=np.float32)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        reward[-1] = self.reward
        terminated[-1] = self.reward > 0
        truncated[-1] = not terminated[-1]

        return ChunkBatch(
            obs=_stack([c.obs for c in self.chunks]), next_obs=_stack([c.next_obs for c in self.chunks]),
            action=np.concatenate([c.action for c in self.chunks]), reward=reward,
            n_steps=np.array([c.n_steps for c in self.chunks], dtype=np.int64),
            terminated=terminated, truncated=truncated,
            extras={k: np.concatenate([c.extras[k] for c in self.chunks]) for k in self.chunks[0].extras},
        )


def _stack(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch-of-one (nested) observations -> one batch."""
    first = observations[0]
    return {k: _stack([o[k] for o in observations]) if isinstance(v, dict) else np.concatenate([o[k] for o in observations])
            for k, v in first.items()}


def frame_stats(periods: list[float], fps: int) -> dict[str, float]:
    """p50 / p99 / max of the frame period (ms) and the share of frames over 1.1 x the 1/fps budget."""
    if not periods:
        return {}
    ms = np.asarray(periods) * 1000.0
    budget = 1000.0 / fps
    return {"frame_ms_p50": float(np.percentile(ms, 50)), "frame_ms_p99": float(np.percentile(ms, 99)),
            "frame_ms_max": float(ms.max()), "frame_over_budget": float(np.mean(ms > 1.1 * budget))}


class EpisodeRecording:
    """`--dataset.*`: the arm's episodes written into a labelled LeRobot dataset, as
    `lerobot-steer-record` writes them (LeRobot's writer, the outcome columns on every frame and the
    label on the last, meta/outcomes.jsonl). One episode at a time: frames while it plays, then
    `save(outcome)` or `drop()`; an episode cut short by Ctrl-C or an error is saved as interrupted."""

    def __init__(self, dataset, task: str):
        self.dataset, self.task = dataset, task
        self.log = OutcomeLog(dataset.root, dataset.num_episodes)
        self.frames = OutcomeFrames(dataset, lambda _i: None)

    def add(self, observation_frame: dict, action_frame: dict) -> None:
        self.frames.add_frame({**observation_frame, **action_frame, "task": self.task})

    def save(self, outcome: Outcome) -> None:
        length = pending_frames(self.dataset)
        if length == 0 or not keep_complete_frames(self.dataset):
            self.drop()
            return
        label_episode(self.dataset, outcome)
        index = self.dataset.num_episodes
        self.dataset.save_episode()
        self.log.add(index, outcome, length, self.task)
        print("  recorded: " + self.log.status(index, outcome, length))

    def drop(self) -> None:
        if self.dataset.has_pending_frames():
            self.dataset.clear_episode_buffer()


# ------------------------------------------------------------------------------------- learner


class CollectorStandIn:
    """Takes the sim collector's place in `save_checkpoint` / `load_training_state`: a robot episode is
    never resumed mid-way (the arm and the scene cannot be put back), so nothing is restored."""

    def state_dict(self) -> dict[str, Any]:
        return {"obs": {}, "episode_start": np.ones(1, dtype=bool), "episode_return": np.zeros(1),
                "episode_length": np.zeros(1, dtype=np.int64), "sim_states": []}

    def load_state_dict(self, state) -> None:
        pass


def acting_copy(policy):
    """A copy of `policy` to act with while `policy` trains in another thread; the frozen base's
    tensors are shared, not copied. Returns (copy, [(acting tensor, trained tensor), ...])."""
    base = policy.adapter.policy
    memo = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
    acting = copy.deepcopy(policy, memo)
    pairs = [(a, p) for a, p in zip(acting.state_dict(keep_vars=True).values(),
                                    policy.state_dict(keep_vars=True).values(), strict=True) if a is not p]
    return acting, pairs


class Learner:
    """Gradient steps owed per stored transition, paid between episodes or by a background thread.

    `lock` guards the buffer, the optimizers and the counters (the control loop never takes it during an
    episode); `acting_lock` guards the acting copy, held by the loop for one decode and by the updater
    for one weight copy."""

    def __init__(self, cfg: RobotRLConfig, trainer: RLTrainer, policy, counters: dict[str, Any]):
        self.cfg, self.trainer, self.policy, self.counters = cfg, trainer, policy, counters
        self.steps_per_update = getattr(cfg.algorithm, "grad_steps_per_update", 1)
        self.lock, self.acting_lock = threading.Lock(), threading.Lock()
        self.last_stats: dict[str, float] = {}
        self.pairs: list = []
        self.acting_policy = policy
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.update_seconds = 0.0

    def use_acting_copy(self) -> None:
        self.acting_policy, self.pairs = acting_copy(self.policy)

    def owed(self) -> bool:
        return self.counters["update_debt"] >= self.steps_per_update

    def step(self) -> None:
        """One `update()` of the algorithm (caller holds `lock`), then the acting copy refreshed."""
        t0 = time.perf_counter()
        stats = self.trainer.training_step()
        check_finite_losses(stats.losses, self.cfg, self.counters)
        self.last_stats = {**stats.losses, **stats.extra, **{f"{k}_grad_norm": v for k, v in stats.grad_norms.items()}}
        self.counters["updates"] += self.steps_per_update
        self.counters["update_debt"] -= self.steps_per_update
        if self.pairs:
            with self.acting_lock, torch.no_grad():
                for acting, trained in self.pairs:
                    acting.copy_(trained)
        self.update_seconds += time.perf_counter() - t0

    def pay(self) -> None:
        """Every owed update, now (between episodes, and before the run ends)."""
        with self.lock:
            while self.owed():
                self.step()

    # background mode
    def start(self) -> None:
        # The updater hands the interpreter back to the control thread sooner (default: every 5 ms).
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._work, name="steer-updates", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _work(self) -> None:
        try:
            with contextlib.suppress(OSError, AttributeError):  # Linux: the OS prefers the control thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPDATER_NICENESS)
            while not self._stop.is_set():
                with self.lock:
                    owed = self.owed()
                    if owed:
                        self.step()
                if owed:
                    time.sleep(0)  # let the control thread take the interpreter between updates
                else:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except BaseException as error:  # noqa: BLE001  (re-raised in the control thread, see check())
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
            sys.setswitchinterval(self._switch_interval)


# -------------------------------------------------------------------------------------- session


class RobotSteering:
    """The connected robot, the keys and the acting side: one episode at a time."""

    def __init__(self, cfg: RobotRLConfig, robot, teleop, keys: EpisodeKeys, source: KeySource, processors: tuple,
                 features: dict, actor: SteeringActor, acting_lock: threading.Lock, stop, start_pose: dict,
                 recording: EpisodeRecording | None = None):
        self.cfg, self.robot, self.teleop, self.keys, self.source = cfg, robot, teleop, keys, source
        self.recording = recording
        self.teleop_action_processor, self.robot_action_processor, self.robot_observation_processor = processors
        self.features, self.actor, self.acting_lock, self.stop = features, actor, acting_lock, stop
        self.action_names = list(features[ACTION]["names"])
        self.is_sim = isinstance(robot, SO101Sim)
        self._start_pose = start_pose

    def observe(self) -> tuple[dict, dict, dict]:
        """The robot's raw observation, the policy's gym observation and the dataset's observation frame."""
        obs = self.robot.get_observation()
        frame = build_dataset_frame(self.features, self.robot_observation_processor(obs), prefix=OBS_STR)
        return obs, gym_observation(frame), frame

    def hold(self) -> None:
        """Stop the arm where it is: its present joint positions as the targets."""
        obs = self.robot.get_observation()
        self.robot.send_action({k: float(obs[k]) for k in self.robot.action_features if k in obs})

    def run_episode(self, attempt: int, index: int, last: bool) -> Episode | None:
        """One episode, its reset period and its label; None when it is dropped (r / left, d). With
        `--dataset.*` the episode is recorded too; one cut short by an error is saved as interrupted."""
        try:
            return self._run_episode(attempt, index, last)
        except BaseException as error:
            if self.recording is not None and self._dropping():
                self.recording.drop()
            elif self.recording is not None:
                self.recording.save(Outcome.interrupted(error))
            raise

    def _run_episode(self, attempt: int, index: int, last: bool) -> Episode | None:
        cfg, keys, events = self.cfg, self.keys, self.keys.events
        keys.start_episode()
        log_say(f"Recording episode {index}", cfg.play_sounds)
        print(f"episode {index} ({self.actor.mode}){f', scene seed {cfg.seed + index}' if self.is_sim else ''}")
        if self.is_sim:
            self.robot.reset_scene(seed=cfg.seed + index)
        self.actor.episodes_ended(np.ones(1, dtype=bool))  # a fresh observation history
        chunks, queue, periods = [], [], []
        pending: PendingChunk | None = None
        sim_success = None
        max_frames = round(cfg.episode_time_s * cfg.fps)
        budget = 1.0 / cfg.fps
        frames, start, previous = 0, time.perf_counter(), None
        while frames < max_frames:
            loop_start = time.perf_counter()
            if cfg.is_realtime and loop_start - start >= cfg.episode_time_s:
                break
            if previous is not None:
                periods.append(loop_start - previous)
            previous = loop_start
            self.source.on_frame(attempt, frames)
            if events["exit_early"] or self.stop.requested:
                break
            obs, gym_obs, frame = self.observe()
            if not queue:
                if pending is not None:
                    pending.next_obs = gym_obs
                    chunks.append(pending)
                with self.acting_lock, torch.no_grad():
                    acted = self.actor(gym_obs)
                queue = list(np.asarray(acted.action)[0])
                pending = PendingChunk(gym_obs, np.asarray(acted.learner_action, dtype=np.float32),
                                       {k: np.asarray(v) for k, v in acted.extras.items()})
            else:
                with self.acting_lock:
                    self.actor.observe(gym_obs)
            values = dict(zip(self.action_names, (float(v) for v in queue.pop(0)), strict=True))
            self.robot.send_action(self.robot_action_processor((values, obs)))
            if self.recording is not None:
                self.recording.add(frame, build_dataset_frame(self.features, values, prefix=ACTION))
            pending.n_steps += 1
            frames += 1
            if self.is_sim and sim_success is None and self.robot.last_info.get("is_success"):
                sim_success = frames
                if cfg.label_source == "sim":
                    break
            if cfg.is_realtime:
                precise_sleep(max(budget - (time.perf_counter() - loop_start), 0.0))
        if keys.intervened or self.stop.requested:
            self.hold()
        if pending is not None:
            pending.next_obs = self.observe()[1]
            chunks.append(pending)
        events["exit_early"] = False
        if self.stop.requested:  # Ctrl-C: the run stops; this episode is not stored (but recorded)
            if self.recording is not None:
                self.recording.save(Outcome.interrupted(KeyboardInterrupt("stopped by a signal")))
            return None
        keys.phase = "reset"
        if not events["stop_recording"] and (not last or events["rerecord_episode"]):
            self.reset_period()
        self.source.after_episode(attempt)
        if (cfg.label_source == "keys" and keys.outcome is None and not keys.intervened and not self._dropping()
                and self.source.interactive):
            self.wait_for_label(index)
        if self._dropping():
            print(f"episode {index}: discarded{'' if keys.discard else ', running it again'}")
            events["rerecord_episode"] = False
            if self.recording is not None:
                self.recording.drop()
            return None
        if not chunks:
            return None
        sim_outcome = self.robot.env.outcome(sim_success is not None) if self.is_sim else None
        outcome = self.outcome(sim_success)
        if self.recording is not None:
            self.recording.save(outcome)
        return Episode(chunks, outcome, keys.intervened, frames, periods, sim_outcome)

    def _dropping(self) -> bool:
        return self.keys.discard or self.keys.events["rerecord_episode"]

    def outcome(self, sim_success: int | None) -> Outcome:
        if self.keys.intervened:
            return Outcome.of_failure(INTERVENED)
        if self.cfg.label_source == "sim":
            return Outcome.of_success() if sim_success is not None else Outcome.of_failure(self.robot.env.outcome(False))
        return self.keys.outcome or default_outcome(self.cfg.outcome.default_label)

    def wait_for_label(self, index: int) -> None:
        wait_s, events = self.cfg.outcome.label_wait_s, self.keys.events
        if wait_s <= 0:
            return
        print(f"episode {index}: label it (s success, f / 1-9 failure; r re-runs it) or press n to count it as "
              f"{self.cfg.outcome.default_label}; waiting {wait_s:g} s.")
        deadline = time.perf_counter() + wait_s
        while (self.keys.outcome is None and not self._dropping() and not events["exit_early"]
               and time.perf_counter() < deadline and not self.stop.requested):
            time.sleep(0.05)
        events["exit_early"] = False

    # resets: lerobot-steer-eval-real's modes
    def reset_period(self) -> None:
        cfg = self.cfg
        log_say("Reset the environment", cfg.play_sounds)
        if cfg.reset.mode == "teleop":
            self.hand_over_to_teleop()
            record_loop(robot=self.robot, events=self.keys.events, fps=cfg.fps,
                        teleop_action_processor=self.teleop_action_processor,
                        robot_action_processor=self.robot_action_processor,
                        robot_observation_processor=self.robot_observation_processor,
                        dataset=None, teleop=self.teleop, control_time_s=cfg.reset.time_s, single_task=cfg.task,
                        display_data=False)
            self.keys.events["exit_early"] = False
            return
        if cfg.reset.mode == "start_pose":
            self.move_to_start()
        EvalSession.countdown(self, cfg.reset.time_s)

    def start_pose(self) -> dict[str, float]:
        return self._start_pose

    def move_to_start(self) -> None:
        move_to_pose(self.robot, self.start_pose(), self.cfg.reset.move_time_s, self.cfg.fps)

    def hand_over_to_teleop(self) -> None:
        slide_to_teleop(self.robot, self.teleop, self.teleop_action_processor, self.robot_action_processor,
                        self.cfg.fps)


# ------------------------------------------------------------------------------------------ run


def build_policy(cfg: RobotRLConfig):
    """The steering policy (fresh on --policy.base_policy_path, or from --policy.path / the resumed
    checkpoint) and its processors; on the run's device."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg.policy.device = device
    policy_cls = get_policy_class(cfg.policy.type)
    pretrained = cfg.policy.pretrained_path
    if pretrained is not None:
        policy = policy_cls.from_pretrained(str(pretrained), config=cfg.policy)
    else:
        policy = policy_cls(cfg.policy)
    policy.to(device)
    preprocessor, postprocessor = make_pre_post_processors(
        policy_cfg=policy.config, pretrained_path=str(pretrained) if pretrained is not None else None,
        preprocessor_overrides={"device_processor": {"device": device}},
    )
    return policy, preprocessor, postprocessor


def train_on_robot(cfg: RobotRLConfig, key_source: KeySource | None = None) -> dict[str, Any]:
    """Run (or resume) online steering on the robot; returns the run's counters and last episode row.
    With `--runtime=ray` the arm's side runs in a Ray actor on the robot's machine (`robot_ray.py`)."""
    with user_input():
        cfg.validate()
    with guarded_run(cfg) as stop:
        if cfg.runtime == "ray":
            from .robot_ray import run_on_ray  # Ray is an optional extra

            return run_on_ray(cfg, key_source, stop)
        return _run(cfg, key_source, stop)


class ArmSide:
    """The robot's side of a run: the robot (with eval-real's joint cap on real arms), its recording
    features, the keys, the leader arm and the optional recording. Built (nothing connected), then
    `check_policy`, `open`, `connect`, `run_episode` per episode, `close`. In this process for a local
    run; in a Ray actor on the robot's machine with `--runtime=ray`."""

    def __init__(self, cfg: RobotRLConfig, key_source: KeySource | None = None):
        self.cfg = cfg
        self.cap = EvalRealConfig.apply_safety_defaults(cfg)  # the same cap as eval-real on a real arm
        self.robot = make_robot_from_config(cfg.robot)
        check_devices(self.robot)
        self.processors = make_default_processors()
        self.features = recording_features(self.robot, self.processors[0], self.processors[2], use_videos=False)
        self.key_source = key_source
        self.recording: EpisodeRecording | None = None
        self.keys = EpisodeKeys(cfg.outcome.failure_reasons, cfg.outcome.digits, cfg.outcome.label_ends_episode)
        self.source: KeySource | None = None
        self.teleop = None
        self.session: RobotSteering | None = None

    def check_policy(self, policy_config) -> None:
        """A policy that does not fit the robot is refused before anything connects or moves."""
        with user_input():
            check_policy_matches_robot(policy_config, self.features, self.robot.name, self.cfg.policy.type)

    def open(self) -> None:
        """The dataset (one that cannot take these episodes is refused now), the keys, the leader arm."""
        cfg = self.cfg
        if cfg.dataset is not None:
            with user_input(ValueError, FileNotFoundError, FileExistsError):
                dataset = open_dataset(cfg, self.robot, recording_features(
                    self.robot, self.processors[0], self.processors[2], use_videos=cfg.dataset.video))
            self.recording = EpisodeRecording(dataset, cfg.dataset.single_task)
        self.source = self.key_source if self.key_source is not None else KeyboardKeys()
        self.teleop = make_teleoperator_from_config(cfg.teleop) if cfg.teleop is not None else None
        check_devices(None, self.teleop)

    def connect(self, start_pose: dict[str, float] | None, actor: SteeringActor, acting_lock: threading.Lock,
                stop) -> dict[str, float]:
        """Connect the arms, take the start pose (the run's first one is kept across resumes), start the
        keys, move to the start pose. Returns the start pose."""
        cfg = self.cfg
        if self.teleop is not None:
            self.teleop.connect()
        self.robot.connect()
        if start_pose is None:
            obs = self.robot.get_observation()
            start_pose = {k: float(obs[k]) for k in self.robot.action_features if k in obs}
        if cfg.reset.start_pose is not None:
            start_pose.update({(k if k.endswith(".pos") else f"{k}.pos"): float(v)
                               for k, v in cfg.reset.start_pose.items()})
        self.source.start(self.keys.press)
        self.session = RobotSteering(cfg, self.robot, self.teleop, self.keys, self.source, self.processors,
                                     self.features, actor, acting_lock, stop, start_pose, self.recording)
        if cfg.reset.mode == "start_pose":
            self.session.move_to_start()
        return start_pose

    @property
    def stop_recording(self) -> bool:
        """q / esc / d was pressed: the run stops after this episode."""
        return bool(self.keys.events["stop_recording"])

    def close(self) -> None:
        """Back to the start pose (real arms), disconnect, stop the keys, finalize the recording."""
        try:
            if self.robot.is_connected:
                try:
                    if self.session is not None and self.cfg.reset.mode == "start_pose" and not self.cfg.is_sim:
                        self.session.move_to_start()  # before the motors go limp
                except BaseException:  # noqa: BLE001
                    logger.warning("Could not return the arm to the start pose", exc_info=True)
                self.robot.disconnect()
            if self.teleop is not None and self.teleop.is_connected:
                self.teleop.disconnect()
        finally:
            if self.source is not None:
                self.source.stop()
            if self.recording is not None:
                self.recording.dataset.finalize()
                print(f"{self.recording.dataset.num_episodes} episodes recorded in {self.recording.dataset.root}")

    def push(self) -> None:
        """`--dataset.push_to_hub`: the recorded dataset to the Hub (after `close`)."""
        if self.recording is not None:
            push_and_exit(self.cfg, self.recording.dataset)


class LearnerSide:
    """The learner's side of a run: the steering policy and its processors, the algorithm, replay buffer
    and trainer, the counters (restored with everything else on `--resume`), the updates (`Learner`)
    and the checkpoints. The same for a local and a Ray run, so either resumes the other's."""

    def __init__(self, cfg: RobotRLConfig, resume_from):
        self.cfg = cfg
        self.policy, self.preprocessor, self.postprocessor = build_policy(cfg)
        cfg.algorithm.policy_config = self.policy.config
        self.algorithm = make_algorithm(cfg.algorithm, self.policy)
        self.buffer = ChunkReplayBuffer(cfg.buffer_capacity, device=self.policy.config.device, seed=cfg.seed)
        trainer = RLTrainer(self.algorithm, OnlineOfflineMixer(self.buffer, None, online_ratio=1.0), cfg.batch_size,
                            preprocessor=LearnerPreprocessor(self.preprocessor, cfg.task))
        self.counters: dict[str, Any] = {
            "env_steps": 0, "updates": 0, "episodes": 0, "transitions": 0, "update_debt": 0.0, "successes": 0,
            "interventions": 0, "attempts": 0, "start_pose": None}
        self.actor = SteeringActor(self.policy, self.preprocessor, self.postprocessor, task=cfg.task)
        if resume_from is not None:
            self.counters.update(load_training_state(
                resume_from, policy=self.policy, algorithm=self.algorithm, buffer=self.buffer,
                collector=CollectorStandIn(), actor=self.actor))
            logger.info("Resuming %s after episode %d (%d updates, %d transitions in the buffer)", cfg.output_dir,
                        self.counters["episodes"], self.counters["updates"], len(self.buffer))
        self.learner = Learner(cfg, trainer, self.policy, self.counters)
        self.saved_updates = self.counters["updates"]

    def save(self) -> Path:
        with self.learner.lock:  # background updates wait while the run is saved
            self.saved_updates = self.counters["updates"]
            return save_checkpoint(self.cfg, policy=self.policy, preprocessor=self.preprocessor,
                                   postprocessor=self.postprocessor, algorithm=self.algorithm, buffer=self.buffer,
                                   collector=CollectorStandIn(), actor=self.actor, counters=dict(self.counters))

    def take(self, episode: Episode, index: int) -> dict[str, Any]:
        """Store the episode (`store_episode`); with `--updates=between_episodes` make its updates now.
        Returns its log row with the latest losses."""
        row = store_episode(self.cfg, self.learner, self.buffer, self.counters, episode, index)
        if self.cfg.updates == "between_episodes":
            self.learner.pay()
            row["updates"] = self.counters["updates"]
        row.update(self.learner.last_stats)
        return row

    def episode_mode(self, index: int) -> str:
        return "prior" if index < self.cfg.prefill_episodes else "explore"

    def finish(self) -> None:
        """The updates still owed (background mode), then saved if anything changed since the last save."""
        self.learner.stop()
        self.learner.check()
        if self.counters["updates"] != self.saved_updates:
            self.learner.pay()
            self.save()


def print_episode(episode: Episode, index: int, counters: dict[str, Any], row: dict[str, Any], path: Path) -> None:
    print(f"episode {index}: {describe(episode.outcome)}, reward {episode.reward:g}, {episode.frames} frames, "
          f"{len(episode.chunks)} chunks | {counters['successes']}/{counters['episodes']} successes, "
          f"{counters['updates']} updates, frame p99 {row.get('frame_ms_p99', math.nan):.1f} ms | {path.name}")


def _run(cfg: RobotRLConfig, key_source: KeySource | None, stop: StopSignals) -> dict[str, Any]:
    resume_from = checkpoint_to_resume(cfg)
    arm = ArmSide(cfg, key_source)
    side = LearnerSide(cfg, resume_from)
    arm.check_policy(side.policy.config)
    counters, learner, actor = side.counters, side.learner, side.actor
    if cfg.updates == "background":
        learner.use_acting_copy()
        actor.policy = learner.acting_policy
    save_config(cfg, cfg.output_dir / TRAIN_CONFIG_NAME)
    log = MetricsLog(cfg.output_dir, resume_env_steps=counters["env_steps"] if resume_from else None)
    print(f"max_relative_target: {arm.cap}")
    arm.open()
    row: dict[str, Any] = {}
    try:
        counters["start_pose"] = arm.connect(counters["start_pose"], actor, learner.acting_lock, stop)
        if cfg.updates == "background":
            learner.start()
        while counters["episodes"] < cfg.episodes and not arm.stop_recording:
            learner.check()
            index = counters["episodes"]
            actor.mode = side.episode_mode(index)
            attempt = counters["attempts"]
            counters["attempts"] += 1
            episode = arm.session.run_episode(attempt, index, last=index == cfg.episodes - 1)
            learner.check()
            if stop.requested:
                raise RunInterrupted(interrupted_message(cfg, stop.signum, index), stop.signum)
            if episode is None:
                continue
            row = side.take(episode, index)
            learner.wake()  # background mode: the updates this episode is owed
            path = side.save()
            log.log(row)
            print_episode(episode, index, counters, row, path)
        side.finish()
    finally:
        learner.stop()
        try:
            arm.close()
        finally:
            log.close()
    arm.push()
    return {**counters, "last_row": row, "update_seconds": learner.update_seconds}


def store_episode(cfg: RobotRLConfig, learner: Learner, buffer: ChunkReplayBuffer, counters: dict[str, Any],
                  episode: Episode, index: int) -> dict[str, Any]:
    """The episode's transitions into the buffer and the counters; the updates they are owed."""
    batch = episode.batch()
    with learner.lock:
        buffer.add(batch)
        counters["episodes"] += 1
        counters["env_steps"] += episode.frames
        counters["transitions"] += len(batch)
        counters["successes"] += int(episode.reward > 0)
        counters["interventions"] += int(episode.intervened)
        if index + 1 > cfg.prefill_episodes and len(buffer) >= min(cfg.batch_size, cfg.buffer_capacity):
            counters["update_debt"] += cfg.utd_ratio * len(batch)
    row = {"env_steps": counters["env_steps"], "episode": index, "episodes": counters["episodes"],
           "transitions": counters["transitions"], "updates": counters["updates"],
           "phase": "prior" if index < cfg.prefill_episodes else "explore", "reward": episode.reward,
           "success": bool(episode.reward > 0), "intervened": episode.intervened, "label": describe(episode.outcome),
           "frames": episode.frames, "chunks": len(batch), "success_rate": counters["successes"] / counters["episodes"]}
    if episode.sim_outcome is not None:
        row["sim_outcome"] = episode.sim_outcome
    row.update(frame_stats(episode.periods, cfg.fps))
    return row


def interrupted_message(cfg: RobotRLConfig, signum: int, episode: int) -> str:
    folder = shlex.quote(str(cfg.output_dir.resolve()))
    return (f"{signal.Signals(signum).name}: stopped in episode {episode} of {cfg.episodes} (not stored; the arm "
            f"held its position); the run is saved up to the episode before. Continue with:\n"
            f"  {COMMAND} --resume=true --output_dir={folder}")


@parser.wrap()
def train_cli(cfg: RobotRLConfig) -> None:
    with user_input():  # --resume=true without a saved run
        cfg = _resume_config(cfg, sys.argv[1:], RobotRLConfig)
    train_on_robot(cfg)


def main() -> None:
    """User errors print `error: <message>` and exit 2; Ctrl-C / SIGTERM hold the arm, print the resume
    command and exit 130 / 143 (`cli_errors.run_command`)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    run_command(train_cli)


if __name__ == "__main__":
    main()
