"""The primitive SO-101 arm must move like TheRobotStudio's official `so101_new_calib` model."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from lerobot_steer.sim.model import load_scene
from lerobot_steer.sim.units import JOINT_NAMES, JOINT_RANGES_RAD

# The official body chain: (pos in parent, quat w x y z in parent); every joint turns about local z.
OFFICIAL_CHAIN = [
    ("shoulder", [0.0388353, 0.0, 0.0624], [0.0, 0.0, -1.0, 0.0]),
    ("upper_arm", [-0.0303992, -0.0182778, -0.0542], [0.5, -0.5, -0.5, -0.5]),
    ("lower_arm", [-0.11257, -0.028, 0.0], [0.707107, 0.0, 0.0, 0.707107]),
    ("wrist", [-0.1349, 0.0052, 0.0], [0.707107, 0.0, 0.0, -0.707107]),
    ("gripper", [0.0, -0.0611, 0.0181], [0.0172091, -0.0172091, 0.706897, 0.706897]),
]
OFFICIAL_GRIPPERFRAME = [-0.0079, -0.000218121, -0.0981274]
OFFICIAL_ZERO_POSE_GRIPPERFRAME = [0.39136, -1e-05, 0.22647]
OFFICIAL_MASSES = {"base": 0.147, "shoulder": 0.100006, "upper_arm": 0.103, "lower_arm": 0.104,
                   "wrist": 0.079, "gripper": 0.087, "moving_jaw_so101_v1": 0.012}


def _quat_to_mat(q):
    q = np.asarray(q, float) / np.linalg.norm(q)
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, q)
    return m.reshape(3, 3)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def official_gripperframe(q_arm):
    """Forward kinematics of the official chain, written independently of MuJoCo's model."""
    rot, pos = np.eye(3), np.zeros(3)
    for (_, p, quat), angle in zip(OFFICIAL_CHAIN, q_arm, strict=True):
        pos = pos + rot @ np.asarray(p)
        rot = rot @ _quat_to_mat(quat) @ _rot_z(angle)
    return pos + rot @ np.asarray(OFFICIAL_GRIPPERFRAME)


@pytest.fixture(scope="module")
def arm():
    model = load_scene()
    return model, mujoco.MjData(model)


def _site_at(model, data, q_arm):
    for name, angle in zip(JOINT_NAMES[:5], q_arm, strict=True):
        data.qpos[model.jnt_qposadr[model.joint(name).id]] = angle
    mujoco.mj_kinematics(model, data)
    return data.site_xpos[model.site("gripperframe").id].copy()


def test_zero_pose_matches_official_numbers(arm):
    model, data = arm
    np.testing.assert_allclose(_site_at(model, data, np.zeros(5)), OFFICIAL_ZERO_POSE_GRIPPERFRAME, atol=2e-4)


def test_forward_kinematics_within_2mm_anywhere_in_range(arm):
    model, data = arm
    rng = np.random.default_rng(0)
    for _ in range(500):
        q = rng.uniform(JOINT_RANGES_RAD[:5, 0], JOINT_RANGES_RAD[:5, 1])
        err = np.linalg.norm(_site_at(model, data, q) - official_gripperframe(q))
        assert err < 2e-3, f"gripperframe off by {err * 1000:.2f} mm at q={q}"


def test_joint_ranges_axes_and_servo_gains_are_official(arm):
    model, _ = arm
    for i, name in enumerate(JOINT_NAMES):
        j = model.joint(name)
        np.testing.assert_allclose(j.range, JOINT_RANGES_RAD[i], atol=1e-5)
        np.testing.assert_allclose(model.jnt_axis[j.id], [0, 0, 1])
        act = model.actuator(name)
        assert act.gainprm[0] == pytest.approx(998.22)
        assert -act.biasprm[2] == pytest.approx(2.731)
        np.testing.assert_allclose(act.forcerange, [-3.35, 3.35])
        assert model.dof_damping[j.dofadr[0]] == pytest.approx(0.6)


def test_link_masses_are_official(arm):
    model, _ = arm
    for body, mass in OFFICIAL_MASSES.items():
        assert model.body(body).mass[0] == pytest.approx(mass, rel=1e-4)
    assert sum(OFFICIAL_MASSES.values()) == pytest.approx(0.632, abs=1e-3)
