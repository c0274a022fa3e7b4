"""Conversion between MuJoCo joint radians and the units LeRobot records for a real SO-101.

LeRobot's `so101_follower` with `use_degrees=True` (the 0.6 default) reports the five arm joints in
degrees measured from the middle of the calibrated range, and the gripper on a 0-100 scale over its
range (0 = closed). The sim arm uses the "new calibration" kinematics, where every joint's zero is the
middle of its range, so arm joints convert by a plain radians -> degrees scale and the gripper maps
linearly from its joint range onto 0-100.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
MOTOR_KEYS: tuple[str, ...] = tuple(f"{name}.pos" for name in JOINT_NAMES)
ARM_JOINTS = slice(0, 5)
GRIPPER = 5

# Joint ranges of the official `so101_new_calib` model, in radians.
JOINT_RANGES_RAD = np.array(
    [
        [-1.91986, 1.91986],
        [-1.74533, 1.74533],
        [-1.69, 1.69],
        [-1.65806, 1.65806],
        [-2.74385, 2.84121],
        [-0.174533, 1.74533],
    ]
)
GRIPPER_RANGE_RAD = JOINT_RANGES_RAD[GRIPPER]


# Both conversions are affine per joint: lerobot = (radians - offset) * scale. Precomputed because
# they run twice per env step.
_SCALE = np.array([180.0 / np.pi] * 5 + [100.0 / (GRIPPER_RANGE_RAD[1] - GRIPPER_RANGE_RAD[0])])
_OFFSET = np.array([0.0] * 5 + [GRIPPER_RANGE_RAD[0]])


def radians_to_lerobot(q: np.ndarray) -> np.ndarray:
    """Joint radians (..., 6) -> LeRobot units: degrees for the arm, 0-100 for the gripper."""
    return (np.asarray(q, dtype=np.float64) - _OFFSET) * _SCALE


def lerobot_to_radians(u: np.ndarray) -> np.ndarray:
    """LeRobot units (..., 6) -> joint radians; the inverse of `radians_to_lerobot`."""
    return np.asarray(u, dtype=np.float64) / _SCALE + _OFFSET


JOINT_LIMITS_LEROBOT = radians_to_lerobot(JOINT_RANGES_RAD.T).T  # (6, 2): low, high in LeRobot units
