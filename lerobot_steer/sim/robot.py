"""LeRobot robot type `so101_sim`: the pick-and-place sim behind the interface of a real SO-101 follower.

Every LeRobot tool that drives a robot works on it unchanged, on a machine with no arm:

    lerobot-record  --robot.type=so101_sim --teleop.type=so101_sim_expert ...   # expert demonstrations
    lerobot-rollout --robot.type=so101_sim --policy.path=...                      # run a policy

Its observation and action features are exactly those of `so101_follower` with the same cameras (six
`<joint>.pos` floats in LeRobot units, plus `camera: (H, W, 3)`), so datasets recorded here and on a
real arm, and the policies trained on them, are interchangeable.

Time only advances in `send_action`: each call steps the physics by one control period (1/fps s),
`get_observation` steps nothing. A slow control loop therefore records fewer frames per wall-clock
second but never distorts the dynamics in the data.

Episode boundaries. LeRobot 0.6.1 tells robots nothing about episodes: `lerobot-record`'s
`record_loop` only calls `get_observation` / `send_action`, and the reset phase between episodes is the
same loop without a dataset. What it does do, right before every recorded episode (re-recorded ones
included), is announce it to the human operator with `log_say("Recording episode N")`, and
`lerobot-rollout --strategy.type=episodic` does the same. While connected, the robot listens for it
with a handler on the root logger (a handler, not a filter: it also hears the announcement if LeRobot
moves `log_say` to a module logger) and, like an operator who heard it, starts the next episode from a
fresh scene: the next `get_observation` (the episode's first frame) calls `env.reset()` (new block/bowl
poses, arm at its home pose) and increments `scene_version`, which tells the `so101_sim_expert`
teleoperator to plan anew. The announcement only happens between episodes, so a recorded episode is
never re-randomized midway; a scene nobody has acted in yet (right after `connect`) is kept. Outside
those CLIs (`lerobot-rollout` base strategy, `lerobot-teleoperate`, scripts) nothing is announced: the
scene is drawn once at `connect` and scripts call `reset_scene()` themselves.

The announcement is a seam of LeRobot's, so the robot checks it rather than trusting it:

* at `connect` it sends a test message through `log_say` and warns, naming the seam, if its handler
  does not hear it (the root logger drops INFO records, or `log_say` no longer logs where a root
  handler hears it);
* every `get_observation` looks at its caller: the first frame of a recording loop it knows
  (`record_loop` of lerobot-record with a dataset, the episodic rollout's `_policy_loop`) starts a
  recorded episode, announced or not. An episode that starts with no announcement since the previous
  one is logged as an error naming the seam, and its scene is reset all the same, so a LeRobot change
  to `log_say` cannot make recorded episodes share a scene unnoticed.

Rendering needs an OpenGL backend: set `MUJOCO_GL=egl` (or `osmesa`) on a headless machine.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property

import mujoco
import numpy as np

from lerobot.lerobot_types import RobotAction, RobotObservation
from lerobot.robots import Robot, RobotConfig
from lerobot.robots.utils import ensure_safe_goal_position
from lerobot.utils.decorators import check_if_already_connected, check_if_not_connected

from lerobot_steer.sim.pick_place_env import CAMERAS, PickPlaceConfig, SO101PickPlaceEnv
from lerobot_steer.sim.units import JOINT_LIMITS_LEROBOT, JOINT_NAMES, MOTOR_KEYS

logger = logging.getLogger(__name__)

# What `log_say` announces before each recorded episode (lerobot-record, lerobot-rollout episodic).
EPISODE_ANNOUNCEMENT = "Recording episode"
# Sent through `log_say` at connect, to check that the announcements reach the robot's handler.
HEARING_CHECK = "so101_sim: listening for LeRobot's episode announcements"
# LeRobot 0.6.1 loops whose every call records one episode, as (file name, function name); each has a
# `dataset` argument (None in lerobot-record's reset phase) and calls robot.get_observation() itself,
# through at most one wrapper (lerobot-rollout's ThreadSafeRobot).
RECORDING_LOOPS = frozenset({("lerobot_record.py", "record_loop"), ("episodic.py", "_policy_loop")})
_CALLER_DEPTH = 3  # frames above get_observation searched for one of those loops
MAX_IMAGE_HEIGHT, MAX_IMAGE_WIDTH = 480, 640  # the scene's offscreen buffer


@dataclass
class SimCameraConfig:
    """One rendered camera, `height` x `width` pixels.

    240x320 by default because that is what records at 30 fps on a 2-core CPU: two cameras render in
    about 13 ms per frame, leaving room for the expert's IK and lerobot-record's PNG writer threads
    (measured: 460 of 480 frames in 2 x 8 s episodes). At 480x640, the usual real-arm setting, the
    same run reaches only about 20 fps, so choose it on a faster machine."""

    width: int = 320
    height: int = 240


def _default_cameras() -> dict[str, SimCameraConfig]:
    return {name: SimCameraConfig() for name in CAMERAS}


def _default_scene() -> PickPlaceConfig:
    return PickPlaceConfig(obs_type="state")


@RobotConfig.register_subclass("so101_sim")
@dataclass(kw_only=True)
class SO101SimConfig(RobotConfig):
    """A simulated SO-101 follower (`--robot.type=so101_sim`)."""

    # Cameras to render, named as in the scene ('front', 'wrist'); each becomes
    # `observation.images.<name>`. E.g. --robot.cameras="{front: {width: 640, height: 480}}".
    cameras: dict[str, SimCameraConfig] = field(default_factory=_default_cameras)
    # Control rate: every send_action advances the physics by 1/fps s. Keep it equal to
    # --dataset.fps (lerobot-record) or --fps (lerobot-rollout), both 30 by default.
    fps: int = 30
    # Seed of the first scene; later scenes continue the same random stream (None = random).
    seed: int | None = None
    # Same safety cap as so101_follower: the largest change of a joint target from the present
    # position per action (one float for all joints, or {joint name: value}); None = no cap.
    max_relative_target: float | dict[str, float] | None = None
    # The env options that shape the scene: episode randomization (block_x_range, block_y_range,
    # block_yaw_range, bowl_x_range, bowl_y_range, home_noise_deg), physics_substeps, shadows,
    # arm_mjcf_path, e.g. --robot.scene.block_x_range="[0.18,0.24]". Its observation, image, fps,
    # reward and episode-length options are not used: cameras and fps are set above, and episodes
    # are delimited by the recording tool.
    scene: PickPlaceConfig = field(default_factory=_default_scene)

    def __post_init__(self):
        # RobotConfig.__post_init__ only checks that LeRobot CameraConfigs carry an fps; rendered
        # cameras have none (they render on every get_observation), so we validate them here instead.
        for name, cam in self.cameras.items():
            if name not in CAMERAS:
                raise ValueError(f"cameras: unknown camera '{name}'; the scene has {CAMERAS}.")
            if not (0 < cam.height <= MAX_IMAGE_HEIGHT and 0 < cam.width <= MAX_IMAGE_WIDTH):
                raise ValueError(
                    f"cameras.{name}: {cam.height}x{cam.width} (HxW) is outside 1..{MAX_IMAGE_HEIGHT} x "
                    f"1..{MAX_IMAGE_WIDTH}, the scene's offscreen buffer."
                )
        if self.fps <= 0:
            raise ValueError(f"fps={self.fps} must be positive (e.g. 30, as --dataset.fps).")

    def env_config(self) -> PickPlaceConfig:
        """The env options the robot runs: `scene`, with state observations (the robot renders its
        own cameras) and no episode logic (no termination on success, no time limit in effect)."""
        return replace(self.scene, obs_type="state", fps=self.fps, terminate_on_success=False)


# Simulated robots connected in this process, by robot id, so a teleoperator can reach the sim.
_LIVE_ROBOTS: dict[str | None, SO101Sim] = {}


def get_live_robot(robot_id: str | None) -> SO101Sim:
    """The connected `so101_sim` robot with this id. `None` also accepts the only one connected, so
    the expert teleop finds a robot given an --robot.id without being told it."""
    if robot_id in _LIVE_ROBOTS:
        return _LIVE_ROBOTS[robot_id]
    if robot_id is None and len(_LIVE_ROBOTS) == 1:
        return next(iter(_LIVE_ROBOTS.values()))
    live = sorted(map(str, _LIVE_ROBOTS)) or "none"
    raise LookupError(
        f"No connected so101_sim robot with id {robot_id!r} in this process (connected: {live}). "
        "The sim teleoperator only drives a --robot.type=so101_sim robot of the same command; "
        "set --teleop.robot_id to its --robot.id."
    )


class _EpisodeAnnouncementListener(logging.Handler):
    """Root-logger handler that hears LeRobot's "Recording episode N" announcement (and the connect
    check). A handler rather than a filter: root filters never see records of child loggers, root
    handlers see every record that propagates to the root, whichever logger `log_say` uses."""

    def __init__(self, robot: SO101Sim):
        super().__init__(level=logging.NOTSET)
        self.robot = robot
        self.heard_check = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record of someone else's: not ours to report
            return
        if text.startswith(EPISODE_ANNOUNCEMENT):
            self.robot.announcements += 1
            self.robot.request_scene_reset()
        elif text == HEARING_CHECK:
            self.heard_check = True


def _recording_loop_of(frame) -> object | None:
    """The frame of a known recording loop (`RECORDING_LOOPS`) among the callers of `frame`, if it is
    recording (its `dataset` is set), else None."""
    for _ in range(_CALLER_DEPTH):
        frame = frame.f_back
        if frame is None:
            return None
        code = frame.f_code
        if (os.path.basename(code.co_filename), code.co_name) in RECORDING_LOOPS:
            return frame if frame.f_locals.get("dataset") is not None else None
    return None


class SO101Sim(Robot):
    """The simulated SO-101 follower. See the module docstring for timing and episode handling."""

    config_class = SO101SimConfig
    name = "so101_sim"

    def __init__(self, config: SO101SimConfig):
        super().__init__(config)
        self.config = config
        # Camera name -> shape; lerobot-record and lerobot-rollout read len(robot.cameras).
        self.cameras = {name: (cam.height, cam.width, 3) for name, cam in config.cameras.items()}
        self.env: SO101PickPlaceEnv | None = None
        self.last_info: dict = {}  # info of the last env step (is_success, grasped, ...)
        self.scene_version = 0  # incremented by every scene reset
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._target = np.zeros(6)  # joint targets last sent, LeRobot units
        self._acted = False  # whether any action was sent in the current scene
        self._reset_requested = False
        self._listener = _EpisodeAnnouncementListener(self)
        self.announcements = 0  # "Recording episode N" announcements heard while connected
        self.recorded_episodes = 0  # calls of a known recording loop seen (RECORDING_LOOPS)
        self._episode_loop = None  # the frame of the recording loop running the current episode
        self._announcements_at_episode = 0  # `announcements` when the current episode started

    # ---------------------------------------------------------------- features
    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**self.action_features, **self.cameras}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return dict.fromkeys(MOTOR_KEYS, float)

    # ---------------------------------------------------------------- connection
    @property
    def is_connected(self) -> bool:
        return self.env is not None

    @check_if_already_connected
    def connect(self, calibrate: bool = True) -> None:
        if self.id in _LIVE_ROBOTS:
            raise RuntimeError(
                f"An so101_sim robot with id {self.id!r} is already connected; give each one its own --robot.id."
            )
        self.env = SO101PickPlaceEnv(self.config.env_config())
        self.reset_scene(seed=self.config.seed)
        _LIVE_ROBOTS[self.id] = self
        logging.getLogger().addHandler(self._listener)
        self.announcements = self.recorded_episodes = self._announcements_at_episode = 0
        self._check_announcements_are_heard()
        logger.info(f"{self} connected.")

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        """Nothing to calibrate: sim joints are reported in calibrated LeRobot units already."""

    def configure(self) -> None:
        """Nothing to configure."""

    @check_if_not_connected
    def disconnect(self) -> None:
        logging.getLogger().removeHandler(self._listener)
        self._episode_loop = None  # releases the loop's frame (and the dataset it holds)
        _LIVE_ROBOTS.pop(self.id, None)
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self.env.close()
        self.env = None
        logger.info(f"{self} disconnected.")

    # ---------------------------------------------------------------- episodes
    def _check_announcements_are_heard(self) -> None:
        """Send a test message through LeRobot's `log_say`; warn, naming the seam, if it is not heard."""
        from lerobot.utils.utils import log_say

        root = logging.getLogger()
        self._listener.heard_check = False
        try:
            log_say(HEARING_CHECK, play_sounds=False)
        except TypeError as e:
            raise RuntimeError(
                "LeRobot seam changed: lerobot.utils.utils.log_say(text, play_sounds=False) no longer works "
                f"({e}); so101_sim relies on it to hear lerobot-record's episode announcements"
            ) from e
        if self._listener.heard_check:
            return
        if not root.isEnabledFor(logging.INFO):
            # LeRobot's CLIs call init_logging (root level NOTSET) first; a script may not have.
            logger.warning(
                "The root logger drops INFO records, so so101_sim cannot hear LeRobot's episode "
                "announcements and will not re-randomize the scene between episodes; call "
                "robot.reset_scene() yourself or set logging.getLogger().setLevel(logging.INFO)."
            )
        else:
            logger.warning(
                "LeRobot seam changed: a message sent with lerobot.utils.utils.log_say did not reach the "
                "so101_sim handler on the root logger (does log_say still log, through a logger that "
                "propagates to the root?). lerobot-record episodes are still told apart by their recording "
                "loop, but lerobot-rollout --strategy.type=episodic episodes will share one scene."
            )

    def _note_recording_loop(self, loop_frame) -> None:
        """`get_observation` called from a recording loop: a new call of the loop starts an episode."""
        if loop_frame is self._episode_loop:
            return
        self._episode_loop = loop_frame
        self.recorded_episodes += 1
        if self.announcements == self._announcements_at_episode:
            logger.error(
                "LeRobot seam changed: recorded episode %d of this so101_sim robot started without LeRobot's "
                "'%s N' announcement (lerobot.utils.utils.log_say, heard by a root-logger handler). The "
                "scene is reset anyway; update lerobot_steer/sim/robot.py to the new signal.",
                self.recorded_episodes, EPISODE_ANNOUNCEMENT,
            )
            self.request_scene_reset()
        self._announcements_at_episode = self.announcements

    def request_scene_reset(self) -> None:
        """Reset the scene at the next `get_observation` (the first frame of the next episode)."""
        self._reset_requested = True

    @check_if_not_connected
    def reset_scene(self, seed: int | None = None) -> None:
        """New block and bowl poses and the arm at home: `env.reset()`; tells the expert to re-plan."""
        self.env.reset(seed=seed)
        self._target = self.env.joint_positions()
        self._acted = False
        self.last_info = {}
        self.scene_version += 1
        block, bowl = self.env.block_pose(), self.env.bowl_position()
        logger.info(
            "so101_sim scene %d: block at (%.3f, %.3f) m, bowl at (%.3f, %.3f) m",
            self.scene_version, block[0], block[1], bowl[0], bowl[1],
        )

    # ---------------------------------------------------------------- I/O
    @check_if_not_connected
    def get_observation(self) -> RobotObservation:
        loop_frame = _recording_loop_of(sys._getframe())
        if loop_frame is not None:
            self._note_recording_loop(loop_frame)
        if self._reset_requested:
            self._reset_requested = False
            if self._acted:
                self.reset_scene()
        joints = self.env.joint_positions()
        obs: RobotObservation = {key: float(v) for key, v in zip(MOTOR_KEYS, joints, strict=True)}
        for name, (height, width, _) in self.cameras.items():
            renderer = self._renderers.get((height, width))
            if renderer is None:
                renderer = self._renderers[(height, width)] = self.env._make_renderer(height, width, samples=self.env.config.camera_multisamples)
            renderer.update_scene(self.env.data, camera=name)
            obs[name] = renderer.render().copy()
        return obs

    @check_if_not_connected
    def send_action(self, action: RobotAction) -> RobotAction:
        """Move the joint targets and advance the physics by one control period.

        As on `so101_follower`, only the `.pos` keys given are commanded (other joints keep their
        last target), `max_relative_target` caps the step from the present position, and the
        returned dict is what was actually sent; here targets are also clipped to the joint limits,
        which the real motors enforce themselves.
        """
        goal = {key.removesuffix(".pos"): float(v) for key, v in action.items() if key.endswith(".pos")}
        unknown = sorted(set(goal) - set(JOINT_NAMES))
        if unknown:
            raise ValueError(f"Unknown joint(s) {unknown} in action; so101_sim has {list(MOTOR_KEYS)}.")
        if self.config.max_relative_target is not None:
            present = dict(zip(JOINT_NAMES, self.env.joint_positions(), strict=True))
            goal = ensure_safe_goal_position(
                {j: (g, float(present[j])) for j, g in goal.items()}, self.config.max_relative_target
            )
        for j, g in goal.items():
            i = JOINT_NAMES.index(j)
            goal[j] = float(np.clip(g, JOINT_LIMITS_LEROBOT[i, 0], JOINT_LIMITS_LEROBOT[i, 1]))
            self._target[i] = goal[j]
        _, _, _, _, self.last_info = self.env.step(self._target)
        self._acted = True
        return {f"{j}.pos": g for j, g in goal.items()}


def publish_for_device_factory(device_cls: type) -> None:
    """Let LeRobot's factory find `device_cls` from its config class.

    `make_device_from_device_class` (lerobot/utils/import_utils.py) strips "Config" from the config
    class name (`SO101SimConfig` -> `SO101Sim`) and looks for that name in the config module's
    parent package (`lerobot_steer.sim`) or in `lerobot_steer.sim.so101sim`, never in the config's
    own module. Publishing the class on the parent package, as soon as the config class exists,
    satisfies it without an extra module or an eager import in `lerobot_steer/sim/__init__.py`.
    """
    package = sys.modules[device_cls.__module__.rpartition(".")[0]]
    setattr(package, device_cls.__name__, device_cls)


publish_for_device_factory(SO101Sim)
