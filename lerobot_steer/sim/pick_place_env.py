"""Gymnasium env: the SO-101 picks a block and places it in a bowl.

Observations and actions use a real SO-101's LeRobot units (see `units.py`), at 30 fps by default, so
a dataset generated here and one recorded on a real arm are interchangeable to a policy:

- `agent_pos` (6,): joint positions, `shoulder_pan.pos` ... `gripper.pos`
- `environment_state` (10,) (state modes only, privileged): block position (3), block quaternion
  (w, x, y, z) (4), bowl position (3), in metres in the arm's base frame
- `pixels` {camera: uint8 H x W x 3} (pixel modes only)

The action is the absolute joint-position target (6,) in the same units, as `so101_follower` takes.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, fields

import gymnasium as gym
import mujoco
import numpy as np

from lerobot_steer.config_error import ConfigError
from lerobot_steer.sim.camera_strip import CameraStrip
from lerobot_steer.sim.model import load_scene
from lerobot_steer.sim.units import (
    JOINT_LIMITS_LEROBOT,
    JOINT_NAMES,
    MOTOR_KEYS,
    lerobot_to_radians,
    radians_to_lerobot,
)

logger = logging.getLogger(__name__)

TASK_DESCRIPTION = "Pick up the red block and place it in the blue bowl."
OBS_TYPES = ("state", "pixels", "pixels_state")
# The privileged object state (`environment_state`, or appended to `agent_pos`): block position,
# block quaternion, bowl position. The names label the dataset columns; the size follows from them.
ENV_STATE_NAMES = ("block_x", "block_y", "block_z", "block_qw", "block_qx", "block_qy", "block_qz",
                   "bowl_x", "bowl_y", "bowl_z")
ENV_STATE_DIM = len(ENV_STATE_NAMES)
CAMERAS = ("front", "wrist")
REWARD_TYPES = ("sparse", "dense")

# Failure taxonomy, one label per finished episode (the thesis project's categories).
SUCCESS = "success"
NEVER_PICKED_UP = "never_picked_up"
DROPPED_DURING_TRANSPORT = "dropped_during_transport"
MISSED_BOWL = "missed_bowl"
TIMEOUT = "timeout"
OUTCOMES = (SUCCESS, NEVER_PICKED_UP, DROPPED_DURING_TRANSPORT, MISSED_BOWL, TIMEOUT)

# Home pose in LeRobot units: gripper about 15 cm above the table, pointing down, jaws half open.
HOME_POSE = np.array([0.0, -30.0, 40.0, 70.0, 0.0, 30.0])

_LOW, _HIGH = JOINT_LIMITS_LEROBOT[:, 0].copy(), JOINT_LIMITS_LEROBOT[:, 1].copy()
BOWL_INNER_RADIUS = 0.054
BLOCK_HALF_SIZE = 0.0125
LIFT_HEIGHT = 0.02  # the block counts as picked up once its bottom is this far above the table
SETTLED_SPEED = 0.05  # m/s
IN_BOWL_MAX_HEIGHT = 0.03  # m: the block's centre below this counts as resting in the bowl, not above it
# The block counts as inside the bowl when its centre is this far inside the rim (half a block clear).
IN_BOWL_RADIUS = BOWL_INNER_RADIUS - 0.5 * BLOCK_HALF_SIZE
NEAR_BOWL_MARGIN = 0.03  # m beyond the rim: a release this close is "missed_bowl", farther "dropped"
# Dense reward: each progress stage is worth this much of phi (3 stages, so phi <= 0.75 < success's 1).
STAGE_WEIGHT = 0.25
PROXIMITY_SHARPNESS = 10.0  # 1/m: 1 - tanh(k d) falls to ~0.24 at d = 10 cm


@dataclass
class PickPlaceConfig:
    """Every knob of the pick-and-place env. Ranges are (low, high) in metres / radians."""

    obs_type: str = "pixels"
    cameras: tuple[str, ...] = CAMERAS
    image_height: int = 96
    image_width: int = 128
    fps: int = 30
    physics_substeps: int = 16
    episode_length: int = 300
    block_x_range: tuple[float, float] = (0.16, 0.26)
    block_y_range: tuple[float, float] = (0.05, 0.15)
    block_yaw_range: tuple[float, float] = (-0.5, 0.5)
    bowl_x_range: tuple[float, float] = (0.16, 0.26)
    bowl_y_range: tuple[float, float] = (-0.16, -0.08)
    home_noise_deg: float = 3.0
    reward_type: str = "sparse"
    terminate_on_success: bool = True
    render_height: int = 240
    render_width: int = 320
    render_camera: str = "front"
    shadows: bool = False
    # Offscreen MSAA samples of the observation cameras. MuJoCo's default 4 costs about 3x per frame
    # on a CPU (Mesa) renderer at 96 x 128 for edges policies do not need; videos keep 4.
    camera_multisamples: int = 0
    # Append the privileged block pose and bowl position (10 values, as `environment_state`) to
    # `agent_pos`: for policies that read only `observation.state` and cameras (SmolVLA, pi0), so a
    # small VLA can learn the task from a few minutes of CPU training. Sim only: a real arm has no such state.
    state_includes_objects: bool = False
    arm_mjcf_path: str | None = None
    task_description: str = TASK_DESCRIPTION

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check every option, naming the bad field and a valid value."""
        self.cameras = tuple(self.cameras)
        for name in ("block_x_range", "block_y_range", "block_yaw_range", "bowl_x_range", "bowl_y_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ConfigError(f"--env.{name}={list(getattr(self, name))}: need finite (low, high) with low <= high, "
                                 "e.g. [0.16,0.26].")
            setattr(self, name, (float(lo), float(hi)))
        if not (math.isfinite(self.home_noise_deg) and self.home_noise_deg >= 0):
            raise ConfigError(f"--env.home_noise_deg={self.home_noise_deg}: allowed [0, inf) (0: always the home pose).")
        if self.obs_type not in OBS_TYPES:
            raise ConfigError(f"obs_type='{self.obs_type}' is not one of {OBS_TYPES}.")
        if self.reward_type not in REWARD_TYPES:
            raise ConfigError(f"reward_type='{self.reward_type}' is not one of {REWARD_TYPES}.")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or (self.uses_pixels and not self.cameras):
            raise ConfigError(f"cameras={self.cameras}: choose one or more of {CAMERAS}.")
        if self.render_camera not in CAMERAS:
            raise ConfigError(f"render_camera='{self.render_camera}' is not one of {CAMERAS}.")
        for name in ("image_height", "image_width", "render_height", "render_width", "fps", "physics_substeps",
                     "episode_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--env.{name}={getattr(self, name)} must be a positive integer (allowed: [1, inf)).")
        if not 0 <= self.camera_multisamples <= 16:
            raise ConfigError(f"--env.camera_multisamples={self.camera_multisamples}: choose 0 (fastest) to 16 "
                             "(MuJoCo's default is 4).")
        for name in ("image_height", "render_height"):
            if getattr(self, name) > 480:
                raise ConfigError(f"--env.{name}={getattr(self, name)}: at most 480 (the scene's offscreen buffer).")
        for name in ("image_width", "render_width"):
            if getattr(self, name) > 640:
                raise ConfigError(f"--env.{name}={getattr(self, name)}: at most 640 (the scene's offscreen buffer).")

    @property
    def uses_pixels(self) -> bool:
        return self.obs_type in ("pixels", "pixels_state")

    @property
    def uses_env_state(self) -> bool:
        return self.obs_type in ("state", "pixels_state")

    @property
    def state_dim(self) -> int:
        """Length of `agent_pos`: the 6 joints, then the 10 object values with `state_includes_objects`."""
        return 6 + (ENV_STATE_DIM if self.state_includes_objects else 0)


class SO101PickPlaceEnv(gym.Env):
    """Pick the block, place it in the bowl. Success = block at rest inside the bowl, released."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, config: PickPlaceConfig | None = None, render_mode: str | None = "rgb_array", **kwargs):
        known = {f.name for f in fields(PickPlaceConfig)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"Unknown SO101PickPlaceEnv option(s) {unknown}; valid options: {sorted(known)}.")
        self.config = config if config is not None else PickPlaceConfig(**kwargs)
        cfg = self.config
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.fps}
        # LeRobot's eval reads both names (its async workers ask for `task`).
        self.task = cfg.task_description
        self.task_description = cfg.task_description
        self._max_episode_steps = cfg.episode_length

        self.model = load_scene(arm_mjcf_path=cfg.arm_mjcf_path)
        self.model.opt.timestep = 1.0 / (cfg.fps * cfg.physics_substeps)
        if cfg.shadows:
            self.model.vis.quality.shadowsize = 4096
            self.model.light_castshadow[:] = 1
        self.data = mujoco.MjData(self.model)
        self._ids()

        self.action_space = gym.spaces.Box(
            low=JOINT_LIMITS_LEROBOT[:, 0].astype(np.float32),
            high=JOINT_LIMITS_LEROBOT[:, 1].astype(np.float32),
            dtype=np.float32,
        )
        spaces: dict[str, gym.Space] = {
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, shape=(cfg.state_dim,), dtype=np.float32),
        }
        if cfg.uses_env_state:
            spaces["environment_state"] = gym.spaces.Box(-np.inf, np.inf, shape=(ENV_STATE_DIM,), dtype=np.float32)
        if cfg.uses_pixels:
            spaces["pixels"] = gym.spaces.Dict(
                {
                    cam: gym.spaces.Box(0, 255, shape=(cfg.image_height, cfg.image_width, 3), dtype=np.uint8)
                    for cam in cfg.cameras
                }
            )
        self.observation_space = gym.spaces.Dict(spaces)

        # Renderers hold GL contexts: create them on first use, so AsyncVectorEnv workers build their own.
        self._obs_renderer: CameraStrip | None = None
        self._video_renderer: mujoco.Renderer | None = None
        self._warned_clip = False
        self._reset_episode_stats()

    # ---------------------------------------------------------------- set-up
    def _ids(self):
        m = self.model
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._qvel_adr = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES])
        self._act_ids = np.array([m.actuator(n).id for n in JOINT_NAMES])
        block_joint = m.joint("block")
        self._block_qpos = block_joint.qposadr[0]
        self._block_qvel = block_joint.dofadr[0]
        self._block_body = m.body("block").id
        self._block_geom = m.geom("block").id
        self._bowl_body = m.body("bowl").id
        self._pad_geoms = np.array([m.geom("fixed_jaw_pad").id, m.geom("moving_jaw_pad").id])
        self._gripper_site = m.site("gripperframe").id

    def _reset_episode_stats(self):
        self._potential = 0.0
        self._step_count = 0
        self._was_lifted = False
        self._release_outcome: str | None = None
        self._success_seen = False
        self._n_clipped = 0

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        cfg, rng = self.config, self.np_random
        mujoco.mj_resetData(self.model, self.data)

        home = HOME_POSE + rng.uniform(-cfg.home_noise_deg, cfg.home_noise_deg, size=6) * np.r_[1, 1, 1, 1, 1, 0]
        q_home = lerobot_to_radians(home)
        self.data.qpos[self._qpos_adr] = q_home
        self.data.ctrl[self._act_ids] = q_home

        bx, by = rng.uniform(*cfg.block_x_range), rng.uniform(*cfg.block_y_range)
        yaw = rng.uniform(*cfg.block_yaw_range)
        self.data.qpos[self._block_qpos : self._block_qpos + 7] = [
            bx, by, BLOCK_HALF_SIZE, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)
        ]
        self.model.body_pos[self._bowl_body] = [rng.uniform(*cfg.bowl_x_range), rng.uniform(*cfg.bowl_y_range), 0.0]
        mujoco.mj_forward(self.model, self.data)

        self._reset_episode_stats()
        self._potential = self.progress_potential()
        info = {"is_success": False, "task": cfg.task_description}
        return self._observation(), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (6,):
            raise ValueError(f"action has shape {action.shape}; expected (6,) = {MOTOR_KEYS} in LeRobot units.")
        if not np.isfinite(action.sum()):
            bad = [MOTOR_KEYS[i] for i in np.flatnonzero(~np.isfinite(action))]
            raise ValueError(f"action contains NaN or inf in {bad}: check the policy's output (and its normalization stats).")
        clipped = np.minimum(np.maximum(action, _LOW), _HIGH)
        was_clipped = not np.array_equal(clipped, action)
        if was_clipped:
            self._n_clipped += 1
            if not self._warned_clip:
                self._warned_clip = True
                over = [MOTOR_KEYS[i] for i in np.flatnonzero(clipped != action)]
                logger.warning("Action outside joint limits for %s was clipped (reported in info['action_clipped']).", over)

        self.data.ctrl[self._act_ids] = lerobot_to_radians(clipped)
        mujoco.mj_step(self.model, self.data, nstep=self.config.physics_substeps)
        self._step_count += 1

        contacts = self.pad_contacts()
        grasped = all(contacts)
        success = self._update_task_state(contacts)
        reward = self._reward(success, grasped)
        terminated = bool(success and self.config.terminate_on_success)
        truncated = bool(self._step_count >= self.config.episode_length and not terminated)
        info = {
            "is_success": success,
            "task": self.config.task_description,
            "action_clipped": was_clipped,
            "grasped": grasped,
        }
        if terminated or truncated:
            info["failure"] = self.outcome(success)
            info["n_clipped_actions"] = self._n_clipped
        return self._observation(), reward, terminated, truncated, info

    def render(self):
        cfg = self.config
        if self._video_renderer is None:
            self._video_renderer = self._make_renderer(cfg.render_height, cfg.render_width, samples=4)
        self._video_renderer.update_scene(self.data, camera=cfg.render_camera)
        return self._video_renderer.render()

    def _make_renderer(self, height: int, width: int, samples: int) -> mujoco.Renderer:
        """A renderer whose offscreen buffer has `samples` MSAA samples (read when its context is made)."""
        self.model.vis.quality.offsamples = samples
        return mujoco.Renderer(self.model, height, width)

    def close(self):
        # Close renderers explicitly: EGL otherwise prints an error from __del__ at interpreter exit.
        for r in (self._obs_renderer, self._video_renderer):
            if r is not None:
                r.close()
        self._obs_renderer = self._video_renderer = None

    # ---------------------------------------------------------------- snapshots
    @property
    def sim_state(self) -> dict:
        """Everything the next steps depend on, as JSON-able Python values: MuJoCo's integration
        state (positions, velocities, controls, solver warm start, time), the bowl placement (a
        model field that reset moves), the episode's task flags and the env's random generator.

        A property so that vector envs reach it with `get_attr` / `set_attr` (sync and async alike):
        online training checkpoints it and a resumed run continues the interrupted episodes exactly.
        """
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, physics, spec)
        return {
            "physics": physics.tolist(),
            "bowl_pos": self.bowl_position().tolist(),
            "step_count": self._step_count,
            "was_lifted": self._was_lifted,
            "release_outcome": self._release_outcome,
            "success_seen": self._success_seen,
            "potential": self._potential,
            "n_clipped": self._n_clipped,
            "np_random": self.np_random.bit_generator.state,
        }

    @sim_state.setter
    def sim_state(self, state: dict) -> None:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self.model.body_pos[self._bowl_body] = state["bowl_pos"]
        mujoco.mj_setState(self.model, self.data, np.asarray(state["physics"], dtype=np.float64), spec)
        mujoco.mj_forward(self.model, self.data)
        self._step_count, self._was_lifted = int(state["step_count"]), bool(state["was_lifted"])
        self._release_outcome, self._success_seen = state["release_outcome"], bool(state["success_seen"])
        self._potential = float(state.get("potential", 0.0))
        self._n_clipped = int(state["n_clipped"])
        self.np_random.bit_generator.state = state["np_random"]

    def forecast_gripper_path(self, actions) -> np.ndarray:
        """Gripper-site positions (T + 1, 3), in metres in the world frame, if the action chunk
        `actions` (T, 6), in LeRobot units, were executed from the current state: where the gripper
        is now, then where it is after each action (as `gripper_position()` reads it after `step`).

        Simulated in a copy of the MuJoCo state (`mj_copyData`: positions, velocities, controls,
        actuator states, solver warm start, time), so the episode, its counters and its random
        generator are untouched. Actions are clipped to the joint limits as `step` clips them, and
        the path stops before the first non-finite action.
        """
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, 6)
        data = copy.copy(self.data)
        path = [data.site_xpos[self._gripper_site].copy()]
        for action in actions:
            if not np.isfinite(action.sum()):
                break
            data.ctrl[self._act_ids] = lerobot_to_radians(np.minimum(np.maximum(action, _LOW), _HIGH))
            mujoco.mj_step(self.model, data, nstep=self.config.physics_substeps)
            path.append(data.site_xpos[self._gripper_site].copy())
        return np.stack(path)

    # ---------------------------------------------------------------- task state
    def joint_positions(self) -> np.ndarray:
        """Current joint positions in LeRobot units."""
        return radians_to_lerobot(self.data.qpos[self._qpos_adr])

    def block_pose(self) -> np.ndarray:
        return self.data.qpos[self._block_qpos : self._block_qpos + 7].copy()

    def bowl_position(self) -> np.ndarray:
        return self.model.body_pos[self._bowl_body].copy()

    def gripper_position(self) -> np.ndarray:
        return self.data.site_xpos[self._gripper_site].copy()

    def pad_contacts(self) -> tuple[bool, bool]:
        """Whether the (fixed, moving) jaw pad touches the block right now.

        A plain loop over the contact list: it is short (a handful of contacts), and this is ~10x
        cheaper than numpy set operations on the step's hot path.
        """
        n = self.data.ncon
        if n == 0:
            return False, False
        block, fixed, moving = self._block_geom, self._pad_geoms[0], self._pad_geoms[1]
        touch_fixed = touch_moving = False
        for g1, g2 in self.data.contact.geom[:n].tolist():
            other = g2 if g1 == block else g1 if g2 == block else -1
            touch_fixed |= other == fixed
            touch_moving |= other == moving
        return touch_fixed, touch_moving

    def block_grasped(self) -> bool:
        """Both jaw pads touch the block."""
        return all(self.pad_contacts())

    def block_in_bowl(self) -> bool:
        bx, by, bz = self.data.xpos[self._block_body]
        cx, cy, _ = self.model.body_pos[self._bowl_body]
        return bool(math.hypot(bx - cx, by - cy) < IN_BOWL_RADIUS and bz < IN_BOWL_MAX_HEIGHT)

    def _update_task_state(self, contacts: tuple[bool, bool]) -> bool:
        grasped, touching = all(contacts), any(contacts)
        bx, by, bz = self.data.xpos[self._block_body]
        if grasped and bz - BLOCK_HALF_SIZE > LIFT_HEIGHT:
            self._was_lifted = True
        if self._was_lifted and not touching and self._release_outcome is None:
            cx, cy, _ = self.model.body_pos[self._bowl_body]
            near_bowl = math.hypot(bx - cx, by - cy) < BOWL_INNER_RADIUS + NEAR_BOWL_MARGIN
            self._release_outcome = MISSED_BOWL if near_bowl else DROPPED_DURING_TRANSPORT
        if grasped:
            self._release_outcome = None  # picked up again: judge the next release
        vx, vy, vz = self.data.qvel[self._block_qvel : self._block_qvel + 3]
        success = not touching and math.sqrt(vx * vx + vy * vy + vz * vz) < SETTLED_SPEED and self.block_in_bowl()
        self._success_seen |= success
        return success

    def outcome(self, success: bool | None = None) -> str:
        """Failure-taxonomy label of the episode so far."""
        if success if success is not None else self._success_seen:
            return SUCCESS
        if not self._was_lifted:
            return NEVER_PICKED_UP
        if self._release_outcome is not None and not self.block_in_bowl():
            return self._release_outcome
        return TIMEOUT

    def _reward(self, success: bool, grasped: bool) -> float:
        """sparse: 1 on success. dense: 1 on success plus the change of a progress potential,
        phi(s') - phi(s) (Ng et al. 1999). Shaping by a potential difference telescopes over an
        episode to phi(s_T) - phi(s_0), and phi <= 0.75 < 1, so no behaviour that never succeeds
        (e.g. carrying the block over the bowl until the time limit) earns what success earns."""
        if self.config.reward_type == "sparse":
            return float(success)
        previous, self._potential = self._potential, self.progress_potential(grasped)
        return float(success) + self._potential - previous

    def progress_potential(self, grasped: bool | None = None) -> float:
        """phi(s) in [0, 0.75]: 0.25 x (gripper near the block) + 0.25 x grasped + 0.25 x lifted and
        near the bowl; the dense reward's shaping term is its change."""
        if grasped is None:
            grasped = all(self.pad_contacts())
        block = self.data.xpos[self._block_body]
        reach = 1.0 - np.tanh(PROXIMITY_SHARPNESS * np.linalg.norm(self.gripper_position() - block))
        to_bowl = 1.0 - np.tanh(PROXIMITY_SHARPNESS * np.linalg.norm(block[:2] - self.bowl_position()[:2]))
        lifted = float(block[2] - BLOCK_HALF_SIZE > LIFT_HEIGHT)
        return float(STAGE_WEIGHT * (reach + float(grasped) + lifted * to_bowl))

    # ---------------------------------------------------------------- observation
    def _observation(self) -> dict:
        cfg = self.config
        obs: dict = {"agent_pos": self.joint_positions().astype(np.float32)}
        if cfg.uses_env_state or cfg.state_includes_objects:
            objects = np.concatenate([self.block_pose(), self.bowl_position()]).astype(np.float32)
            if cfg.state_includes_objects:
                obs["agent_pos"] = np.concatenate([obs["agent_pos"], objects])
            if cfg.uses_env_state:
                obs["environment_state"] = objects
        if cfg.uses_pixels:
            obs["pixels"] = self.render_cameras()
        return obs

    def render_cameras(self) -> dict[str, np.ndarray]:
        cfg = self.config
        if self._obs_renderer is None:
            self._obs_renderer = CameraStrip(self.model, cfg.cameras, cfg.image_height, cfg.image_width,
                                             samples=cfg.camera_multisamples)
        return self._obs_renderer.render(self.data)


def config_as_kwargs(config) -> dict:
    """The `PickPlaceConfig` options held by `config` (any object with those attributes, e.g. the
    LeRobot env config), as keyword arguments for `SO101PickPlaceEnv` / `gym.make`."""
    return {f.name: getattr(config, f.name) for f in fields(PickPlaceConfig)}


GYM_ID = "lerobot_steer/SO101PickPlace-v0"
if GYM_ID not in gym.registry:
    gym.register(id=GYM_ID, entry_point="lerobot_steer.sim.pick_place_env:SO101PickPlaceEnv")
