"""Loading the SO-101 MJCF scenes shipped with the package, optionally with a user-supplied arm."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import mujoco

from lerobot_steer.sim.units import JOINT_NAMES

SCENE_PACKAGE = "lerobot_steer.scenes"
DEFAULT_ARM_FILE = "so101.xml"
REQUIRED_SITES = ("baseframe", "gripperframe")


def scene_path(name: str) -> Path:
    """Path of a scene file shipped in `scenes/` (works for editable and regular installs)."""
    path = Path(str(importlib.resources.files(SCENE_PACKAGE).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"Scene '{name}' is not shipped with lerobot_steer (looked in {path.parent}).")
    return path


def load_scene(scene: str = "so101_pick_place.xml", arm_mjcf_path: str | Path | None = None) -> mujoco.MjModel:
    """Compile a task scene. `arm_mjcf_path` swaps our primitive arm for another SO-101 MJCF
    (e.g. the official mesh model) that uses the same joint, actuator and site names.

    The scene's `<include file="so101.xml"/>` is pointed at the user's file, and every file next to
    that arm (meshes, included XML) is handed to MuJoCo as an asset so relative mesh paths resolve.
    """
    path = scene_path(scene)
    if arm_mjcf_path is None:
        model = mujoco.MjModel.from_xml_path(str(path))
    else:
        arm = Path(arm_mjcf_path).expanduser().resolve()
        if not arm.is_file():
            raise FileNotFoundError(f"arm_mjcf_path: no such file '{arm}'. Pass the path of an SO-101 MJCF file.")
        xml = path.read_text()
        xml, n = re.subn(r'<include\s+file="' + re.escape(DEFAULT_ARM_FILE) + r'"\s*/>', f'<include file="{arm.name}"/>', xml)
        if n != 1:
            raise ValueError(f"Scene '{scene}' does not include '{DEFAULT_ARM_FILE}', so its arm cannot be swapped.")
        assets = {str(p.relative_to(arm.parent)): p.read_bytes() for p in arm.parent.rglob("*") if p.is_file()}
        try:
            model = mujoco.MjModel.from_xml_string(xml, assets)
        except ValueError as e:
            raise ValueError(f"arm_mjcf_path={arm}: MuJoCo could not compile the task scene with this arm: {e}") from e
    check_arm_names(model, source=str(arm_mjcf_path or path))
    return model


def check_arm_names(model: mujoco.MjModel, source: str) -> None:
    """Fail early, naming what is missing, when an arm lacks the SO-101 joint/actuator/site names."""
    missing = []
    for name in JOINT_NAMES:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) < 0:
            missing.append(f"joint '{name}'")
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name) < 0:
            missing.append(f"actuator '{name}'")
    for name in REQUIRED_SITES:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name) < 0:
            missing.append(f"site '{name}'")
    if missing:
        raise ValueError(
            f"{source} is not usable as an SO-101 arm: it lacks {', '.join(missing)}. "
            "An arm MJCF must use the official so101_new_calib names."
        )
