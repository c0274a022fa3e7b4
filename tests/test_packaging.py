"""The built wheel is a LeRobot plugin: LeRobot's own CLIs see our types with no extra flags."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """Build the wheel (no network: --no-build-isolation) and install it, without deps, into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    wheel = next(out.glob("lerobot_policy_steer-*.whl"))
    target = out / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    return wheel, target


@pytest.mark.slow  # builds and installs the wheel with pip
def test_wheel_ships_the_entry_module_scenes_and_underscore_name(installed_wheel):
    wheel, _ = installed_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("lerobot_policy_steer.py", "lerobot_steer/scenes/so101.xml", "lerobot_steer/scenes/so101_pick_place.xml"):
        assert required in names, f"{required} missing from {wheel.name}"
    metadata = next(n for n in names if n.endswith("METADATA"))
    assert "Name: lerobot_policy_steer\n" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "lerobot_steer").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"


@pytest.mark.slow  # builds the wheel, then imports it in a fresh interpreter
def test_lerobot_discovers_the_installed_wheel(installed_wheel):
    """LeRobot imports distributions named lerobot_policy_* by name; the wheel's copy must be the one used."""
    _, target = installed_wheel
    code = (
        "import lerobot_steer.sim.model as m, lerobot_steer\n"
        "from lerobot.utils.import_utils import register_third_party_plugins\n"
        "register_third_party_plugins()\n"
        "from lerobot.envs.configs import EnvConfig\n"
        "assert 'so101_sim' in EnvConfig.get_known_choices(), EnvConfig.get_known_choices()\n"
        f"assert lerobot_steer.__file__.startswith({str(target)!r}), lerobot_steer.__file__\n"
        f"assert str(m.scene_path('so101.xml')).startswith({str(target)!r})\n"
        "m.load_scene()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd="/")


@pytest.mark.slow  # builds the wheel, then runs each CLI in a subprocess
@pytest.mark.parametrize(
    "cli, flags, expected",
    [
        ("lerobot-eval", ["--env.type=so101_sim"], "SO101SimEnvConfig"),
        ("lerobot-train", ["--env.type=so101_sim"], "SO101SimEnvConfig"),
        ("lerobot-record", ["--robot.type=so101_sim", "--teleop.type=so101_sim_expert"], "so101_sim_expert"),
        ("lerobot-rollout", ["--robot.type=so101_sim"], "so101_sim"),
    ],
)
def test_lerobot_clis_accept_our_types_without_extra_flags(installed_wheel, cli, flags, expected):
    _, target = installed_wheel
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([str(BIN / cli), *flags, "--help"], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
    assert "Could not import third-party plugin" not in result.stderr
