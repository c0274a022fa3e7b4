"""Sim radians <-> the units LeRobot records for a real SO-101 (degrees from mid-range, gripper 0-100)."""

import numpy as np
import pytest

from lerobot_steer.sim.units import (
    JOINT_LIMITS_LEROBOT,
    JOINT_RANGES_RAD,
    lerobot_to_radians,
    radians_to_lerobot,
)


def test_round_trip_is_exact():
    rng = np.random.default_rng(0)
    q = rng.uniform(JOINT_RANGES_RAD[:, 0], JOINT_RANGES_RAD[:, 1], size=(100, 6))
    np.testing.assert_allclose(lerobot_to_radians(radians_to_lerobot(q)), q, atol=1e-12)


def test_arm_joints_are_degrees_from_mid_range():
    u = radians_to_lerobot(np.array([np.pi / 2, -np.pi / 4, 0.0, 0.1, 1.0, 0.5]))
    np.testing.assert_allclose(u[:5], [90.0, -45.0, 0.0, np.degrees(0.1), np.degrees(1.0)])


def test_gripper_spans_0_closed_to_100_open():
    lo, hi = JOINT_RANGES_RAD[5]
    assert radians_to_lerobot(np.array([0, 0, 0, 0, 0, lo]))[5] == pytest.approx(0.0)
    assert radians_to_lerobot(np.array([0, 0, 0, 0, 0, hi]))[5] == pytest.approx(100.0)
    np.testing.assert_allclose(JOINT_LIMITS_LEROBOT[5], [0.0, 100.0])
    np.testing.assert_allclose(JOINT_LIMITS_LEROBOT[0], [-110.0, 110.0], atol=0.01)
