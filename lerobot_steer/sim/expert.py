"""Scripted pick-and-place expert for the SO-101 sim: approach, descend, grasp, lift, carry, release.

The expert plans a Cartesian path for the `gripperframe` site (jaws pointing down, closing across
the block's faces), follows it with smooth (minimum-jerk) segments and converts every waypoint to
joint targets with damped-least-squares IK on a private copy of the model. Its output is an action in
LeRobot units, exactly what a teleoperator would send to a real `so101_follower`.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from lerobot_steer.sim.units import JOINT_NAMES, lerobot_to_radians, radians_to_lerobot

GRIPPER_OPEN = 50.0  # LeRobot gripper units (0 = closed)
GRIPPER_CLOSED = 0.0
# The block is grasped slightly off the site towards the moving jaw, so the fixed jaw clears it on the way down.
GRASP_OFFSET = 0.004


class ArmIK:
    """Damped-least-squares IK for the five arm joints, targeting the `gripperframe` site pose."""

    def __init__(self, model: mujoco.MjModel, iterations: int = 60, damping: float = 1e-3):
        self.model = model
        self.data = mujoco.MjData(model)
        self.iterations = iterations
        self.damping = damping
        self._qpos_adr = np.array([model.jnt_qposadr[model.joint(n).id] for n in JOINT_NAMES[:5]])
        self._dof_adr = np.array([model.jnt_dofadr[model.joint(n).id] for n in JOINT_NAMES[:5]])
        self._range = np.array([model.jnt_range[model.joint(n).id] for n in JOINT_NAMES[:5]])
        self._site = model.site("gripperframe").id
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, q_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: site position and rotation matrix for arm joints (radians)."""
        self.data.qpos[self._qpos_adr] = q_arm
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site].copy(), self.data.site_xmat[self._site].reshape(3, 3).copy()

    def solve(self, pos: np.ndarray, closing_yaw: float, q_init: np.ndarray) -> np.ndarray:
        """Arm joints (radians) that put the site at `pos`, jaws down, closing along `closing_yaw`."""
        x_d = np.array([0.0, 0.0, -1.0])  # site x: along the jaws
        z_d = np.array([np.cos(closing_yaw), np.sin(closing_yaw), 0.0])  # site z: closing direction
        r_d = np.column_stack([x_d, np.cross(z_d, x_d), z_d])
        q = np.array(q_init, dtype=np.float64)
        for _ in range(self.iterations):
            p, r = self.site_pose(q)
            err_p = pos - p
            err_r = 0.5 * sum(np.cross(r[:, i], r_d[:, i]) for i in range(3))
            err = np.concatenate([err_p, 0.3 * err_r])
            if np.linalg.norm(err_p) < 2e-4 and np.linalg.norm(err_r) < 2e-3:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
            jac = np.vstack([self._jacp[:, self._dof_adr], 0.3 * self._jacr[:, self._dof_adr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self.damping * np.eye(6), err)
            q = np.clip(q + dq, self._range[:, 0], self._range[:, 1])
        return q


def min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


@dataclass
class Segment:
    """Move the site from `start` to `end` (and the gripper between two openings) in `steps` frames."""

    start: np.ndarray
    end: np.ndarray
    grip_start: float
    grip_end: float
    steps: int
    name: str


class ScriptedExpert:
    """Plans once per episode from the block and bowl poses, then returns one action per control step.

    `act(env)` reads the sim state through the env's public accessors (block pose, bowl position,
    current joints), like a human watching the scene.
    """

    def __init__(self, model: mujoco.MjModel, fps: int = 30, speed: float = 0.25, hover: float = 0.08,
                 carry_height: float = 0.10):
        self.ik = ArmIK(model)
        self.fps = fps
        self.speed = speed  # m/s of the site along straight segments
        self.hover = hover
        self.carry_height = carry_height
        self._plan: list[Segment] = []
        self._t = 0
        self._seg = 0
        self._q = None
        self._yaw = 0.0

    def reset(self):
        self._plan = []

    @property
    def done(self) -> bool:
        return bool(self._plan) and self._seg >= len(self._plan)

    def _steps(self, a: np.ndarray, b: np.ndarray, min_s: float = 0.4) -> int:
        return max(int(np.ceil(max(np.linalg.norm(b - a) / self.speed, min_s) * self.fps)), 1)

    def plan(self, joints_lerobot: np.ndarray, gripper_pos: np.ndarray, block_pose: np.ndarray, bowl_pos: np.ndarray):
        bx, by, bz = block_pose[:3]
        w, _, _, qz = block_pose[3:7]
        block_yaw = 2 * np.arctan2(qz, w)
        # Close across the block faces, choosing among the four face normals the one closest to the
        # arm's radial direction (least wrist roll).
        radial = np.arctan2(by, bx)
        candidates = block_yaw + np.arange(4) * np.pi / 2
        diffs = np.angle(np.exp(1j * (candidates - radial)))
        self._yaw = float(radial + diffs[np.argmin(np.abs(diffs))])
        closing = np.array([np.cos(self._yaw), np.sin(self._yaw), 0.0])

        grasp = np.array([bx, by, bz]) - GRASP_OFFSET * closing
        above_block = grasp + [0, 0, self.hover]
        lift = np.array([grasp[0], grasp[1], self.carry_height])
        above_bowl = np.array([bowl_pos[0], bowl_pos[1], self.carry_height]) - GRASP_OFFSET * closing
        release = above_bowl - [0, 0, 0.04]
        retreat = above_bowl + [0, 0, 0.04]
        g0 = float(joints_lerobot[5])
        hold = int(0.4 * self.fps)
        start = np.asarray(gripper_pos, dtype=np.float64)
        self._plan = [
            Segment(start, above_block, g0, GRIPPER_OPEN, self._steps(start, above_block, 1.0), "approach"),
            Segment(above_block, grasp, GRIPPER_OPEN, GRIPPER_OPEN, self._steps(above_block, grasp, 0.6), "descend"),
            Segment(grasp, grasp, GRIPPER_OPEN, GRIPPER_CLOSED, hold, "grasp"),
            Segment(grasp, grasp, GRIPPER_CLOSED, GRIPPER_CLOSED, int(0.2 * self.fps), "settle"),
            Segment(grasp, lift, GRIPPER_CLOSED, GRIPPER_CLOSED, self._steps(grasp, lift, 0.6), "lift"),
            Segment(lift, above_bowl, GRIPPER_CLOSED, GRIPPER_CLOSED, self._steps(lift, above_bowl, 0.8), "carry"),
            Segment(above_bowl, release, GRIPPER_CLOSED, GRIPPER_CLOSED, self._steps(above_bowl, release, 0.4), "lower"),
            Segment(release, release, GRIPPER_CLOSED, GRIPPER_OPEN, hold, "release"),
            Segment(release, retreat, GRIPPER_OPEN, GRIPPER_OPEN, self._steps(release, retreat, 0.5), "retreat"),
        ]
        self._t = 0
        self._seg = 0
        self._q = lerobot_to_radians(joints_lerobot)[:5]
        self._roll_ref = None

    def act(self, env) -> np.ndarray:
        """Next action (LeRobot units) for a `SO101PickPlaceEnv`-like object."""
        if not self._plan:
            self.plan(env.joint_positions(), env.gripper_position(), env.block_pose(), env.bowl_position())
        if self._seg >= len(self._plan):
            seg, s = self._plan[-1], 1.0
        else:
            seg = self._plan[self._seg]
            self._t += 1
            s = min_jerk(self._t / seg.steps)
            if self._t >= seg.steps:
                self._seg += 1
                self._t = 0
        pos = seg.start + s * (seg.end - seg.start)
        grip = seg.grip_start + s * (seg.grip_end - seg.grip_start)
        self._q = self.ik.solve(pos, self._yaw, self._q)
        return np.append(radians_to_lerobot(np.append(self._q, 0.0))[:5], grip)

    @property
    def phase(self) -> str:
        if not self._plan:
            return "idle"
        return self._plan[min(self._seg, len(self._plan) - 1)].name if not self.done else "done"
