"""Reference policies that need no checkpoint: the scripted expert (the ceiling) and a policy that
holds its pose (the floor).

They take the same batched LeRobot observation a checkpoint gets (`select_action(batch)`, `reset()`),
so a comparison table can carry them as rows (`--policy_paths=[builtin:expert,<checkpoint>]`) and the
statistics can be tested on policies whose success rate is known. The expert reads the privileged
`observation.environment_state` (block and bowl poses), so it needs `--env.obs_type=state` or
`pixels_state`.

On a robot (`lerobot-steer-eval-real`, `make_robot_builtin`): `builtin:hold` runs on any robot whose
state and action name the same joints; `builtin:expert` only on the `so101_sim` robot, where it is the
`so101_sim_expert` teleoperator reading the live scene (an oracle: no real arm has one).
"""

from __future__ import annotations

import numpy as np
import torch

from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE

from lerobot_steer.sim.expert import ScriptedExpert
from lerobot_steer.sim.model import load_scene
from lerobot_steer.sim.units import lerobot_to_radians

from .checks import FeatureMismatchError
from .rollout import PolicyUnderTest

BUILTIN_PREFIX = "builtin:"


class _SceneView:
    """The accessors `ScriptedExpert.act` reads, answered from one row of the observation."""

    def __init__(self, expert: ScriptedExpert, joints: np.ndarray, env_state: np.ndarray):
        self._expert, self._joints, self._env_state = expert, joints, env_state

    def joint_positions(self) -> np.ndarray:
        return self._joints

    def block_pose(self) -> np.ndarray:
        return self._env_state[:7]

    def bowl_position(self) -> np.ndarray:
        return self._env_state[7:10]

    def gripper_position(self) -> np.ndarray:
        return self._expert.ik.site_pose(lerobot_to_radians(self._joints)[:5])[0]


class ScriptedExpertPolicy:
    """The scripted expert behind the LeRobot policy interface, one planner per batch row."""

    name = "scripted_expert"

    def __init__(self, arm_mjcf_path: str | None = None, fps: int = 30):
        self._model = load_scene(arm_mjcf_path=arm_mjcf_path)
        self._fps = fps
        self._experts: list[ScriptedExpert] = []

    def reset(self):
        for expert in self._experts:
            expert.reset()

    def select_action(self, batch: dict) -> torch.Tensor:
        if OBS_ENV_STATE not in batch:
            raise FeatureMismatchError(
                "the scripted expert needs observation.environment_state: use --env.obs_type=state"
            )
        joints = batch[OBS_STATE].double().cpu().numpy()
        env_state = batch[OBS_ENV_STATE].double().cpu().numpy()
        while len(self._experts) < len(joints):
            self._experts.append(ScriptedExpert(self._model, fps=self._fps))
        actions = [
            expert.act(_SceneView(expert, joints[i], env_state[i]))
            for i, expert in enumerate(self._experts[: len(joints)])
        ]
        return torch.as_tensor(np.stack(actions), dtype=torch.float32)


class HoldPolicy:
    """Commands the current joint positions: the arm stays put (0 % success, never picks up)."""

    name = "hold"

    def reset(self):
        pass

    def select_action(self, batch: dict) -> torch.Tensor:
        return batch[OBS_STATE].clone().float()


class SimRobotExpertPolicy:
    """The scripted expert on the `so101_sim` robot: LeRobot's teleoperator `so101_sim_expert` (which plans
    from the live scene and re-plans when the robot draws a new one) behind the policy interface.
    `action_names` orders its joint targets as the robot's action features."""

    name = "scripted_expert"

    def __init__(self, robot, action_names: list[str]):
        from lerobot_steer.sim.teleop import SO101SimExpert, SO101SimExpertConfig

        self._teleop = SO101SimExpert(SO101SimExpertConfig(robot_id=robot.id, calibration_dir=robot.calibration_dir))
        self._teleop.connect()
        self._names = list(action_names)

    def reset(self):
        pass  # the teleoperator re-plans on every new scene of the robot

    def select_action(self, batch: dict) -> torch.Tensor:
        action = self._teleop.get_action()
        return torch.tensor([[action[name] for name in self._names]], dtype=torch.float32)


def make_robot_builtin(spec: str, robot, dataset_features: dict, label: str | None = None) -> PolicyUnderTest:
    """`builtin:hold` (any robot whose state and action name the same joints) or `builtin:expert`
    (the `so101_sim` robot only) as a policy under test on `robot` (identity processors).
    `dataset_features`: what LeRobot records for the robot (names of `observation.state` and `action`)."""
    from lerobot_steer.sim.robot import SO101Sim

    kind = spec.removeprefix(BUILTIN_PREFIX)
    action_names = list(dataset_features["action"]["names"])
    if kind == "expert":
        if not isinstance(robot, SO101Sim):
            raise FeatureMismatchError(
                f"'{spec}' plans from the sim's block and bowl poses, which the robot {robot.name} does not know; "
                "it runs on --robot.type=so101_sim only (use builtin:hold, or a checkpoint, on a real arm)")
        policy = SimRobotExpertPolicy(robot, action_names)
    elif kind == "hold":
        state = dataset_features.get(OBS_STATE, {}).get("names")
        if state is None or list(state) != action_names:
            raise FeatureMismatchError(
                f"'{spec}' commands the present joint positions, but the robot {robot.name}'s state {state} and "
                f"action {action_names} name different joints")
        policy = HoldPolicy()
    else:
        raise ValueError(f"unknown built-in policy '{spec}'; choose builtin:expert or builtin:hold")
    return PolicyUnderTest(label=label or spec, policy=policy, path=spec, policy_type=policy.name)


def make_builtin(spec: str, env_cfg, label: str | None = None) -> PolicyUnderTest:
    """`builtin:expert` or `builtin:hold` as a policy under test (identity processors)."""
    kind = spec.removeprefix(BUILTIN_PREFIX)
    if kind == "expert":
        if not env_cfg.uses_env_state:
            raise FeatureMismatchError(
                f"'{spec}' reads observation.environment_state, which obs_type={env_cfg.obs_type} lacks; "
                "fix: --env.obs_type=state (or pixels_state)"
            )
        policy = ScriptedExpertPolicy(arm_mjcf_path=env_cfg.arm_mjcf_path, fps=env_cfg.fps)
    elif kind == "hold":
        policy = HoldPolicy()
    else:
        raise ValueError(f"unknown built-in policy '{spec}'; choose builtin:expert or builtin:hold")
    return PolicyUnderTest(label=label or spec, policy=policy, path=spec, policy_type=policy.name)
