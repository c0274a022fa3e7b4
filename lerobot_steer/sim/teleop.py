"""LeRobot teleoperator type `so101_sim_expert`: the scripted pick-and-place expert as a "leader arm".

`lerobot-record` in LeRobot 0.6.1 records only through a teleoperator, so scripted demonstrations
need one:

    lerobot-record --robot.type=so101_sim --teleop.type=so101_sim_expert \\
        --dataset.single_task="Pick up the red block and place it in the blue bowl." ...

The expert watches the live sim of the `so101_sim` robot connected in the same process (found by
robot id, see `robot.get_live_robot`) and returns the next joint targets in LeRobot units, as a
leader arm would.

Episodes: the robot starts each recorded episode from a fresh scene (it hears lerobot-record's
"Recording episode N" announcement, see `robot.py`) and increments its `scene_version`; the expert
compares that counter on every `get_action` and drops its plan when it changed, so it plans once per
scene from that scene's first frame. When its plan is finished (block placed, arm retreated, about
5 s) it holds the last pose, through the rest of the episode and the reset phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lerobot.lerobot_types import RobotAction
from lerobot.teleoperators import Teleoperator, TeleoperatorConfig
from lerobot.utils.decorators import check_if_already_connected, check_if_not_connected

from lerobot_steer.sim.expert import ScriptedExpert
from lerobot_steer.sim.robot import SO101Sim, get_live_robot, publish_for_device_factory
from lerobot_steer.sim.units import MOTOR_KEYS


@TeleoperatorConfig.register_subclass("so101_sim_expert")
@dataclass(kw_only=True)
class SO101SimExpertConfig(TeleoperatorConfig):
    """The scripted expert (`--teleop.type=so101_sim_expert`)."""

    # --robot.id of the so101_sim robot to drive. None (the robot's default id) also matches the
    # only so101_sim robot of the process, whatever its id.
    robot_id: str | None = None
    # Speed of the gripper along straight segments, m/s.
    speed: float = 0.25

    def __post_init__(self):
        if self.speed <= 0:
            raise ValueError(f"speed={self.speed} must be positive (m/s, e.g. 0.25).")


class SO101SimExpert(Teleoperator):
    """Returns the scripted expert's next action for the live `so101_sim` robot."""

    config_class = SO101SimExpertConfig
    name = "so101_sim_expert"

    def __init__(self, config: SO101SimExpertConfig):
        super().__init__(config)
        self.config = config
        self._connected = False
        self._robot: SO101Sim | None = None
        self._expert: ScriptedExpert | None = None
        self._scene_version: int | None = None

    @property
    def action_features(self) -> dict[str, type]:
        return dict.fromkeys(MOTOR_KEYS, float)

    @property
    def feedback_features(self) -> dict[str, type]:
        return {}

    @property
    def is_connected(self) -> bool:
        return self._connected

    @check_if_already_connected
    def connect(self, calibrate: bool = True) -> None:
        # lerobot-record connects the teleop before the robot, so the sim is looked up on first use.
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        """Nothing to calibrate."""

    def configure(self) -> None:
        """Nothing to configure."""

    @property
    def phase(self) -> str:
        """The expert's current motion segment ('approach', ..., 'done'), or 'idle' before planning."""
        return self._expert.phase if self._expert is not None else "idle"

    def _expert_for_live_robot(self) -> ScriptedExpert:
        robot = get_live_robot(self.config.robot_id)
        if robot is not self._robot or self._expert is None or self._expert.ik.model is not robot.env.model:
            self._robot = robot
            self._expert = ScriptedExpert(robot.env.model, fps=robot.config.fps, speed=self.config.speed)
            self._scene_version = None
        if robot.scene_version != self._scene_version:
            self._expert.reset()
            self._scene_version = robot.scene_version
        return self._expert

    @check_if_not_connected
    def get_action(self) -> RobotAction:
        expert = self._expert_for_live_robot()
        action = expert.act(self._robot.env)
        return {key: float(v) for key, v in zip(MOTOR_KEYS, action, strict=True)}

    def send_feedback(self, feedback: dict[str, Any]) -> None:
        """The expert needs no feedback: it reads the sim directly."""

    @check_if_not_connected
    def disconnect(self) -> None:
        self._connected = False
        self._robot = self._expert = None


publish_for_device_factory(SO101SimExpert)
