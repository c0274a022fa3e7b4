"""The `so101_sim` robot and `so101_sim_expert` teleoperator, in process and through LeRobot's CLIs.

What matters: the sim robot is a drop-in for a real `so101_follower` (same features, same
send_action contract), the expert records successful demonstrations with `lerobot-record`, each
recorded episode gets its own scene, and `lerobot-rollout` runs a policy on it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from lerobot.cameras.opencv import OpenCVCameraConfig
from lerobot.robots import make_robot_from_config
from lerobot.robots.so_follower import SO101Follower, SOFollowerRobotConfig
from lerobot.teleoperators import make_teleoperator_from_config
from lerobot.utils.constants import ACTION, OBS_STR
from lerobot.utils.feature_utils import hw_to_dataset_features
from lerobot.utils.utils import log_say

from lerobot_steer.sim.expert import ArmIK
from lerobot_steer.sim.model import load_scene
from lerobot_steer.sim.pick_place_env import HOME_POSE, TASK_DESCRIPTION
from lerobot_steer.sim.robot import SimCameraConfig, SO101Sim, SO101SimConfig
from lerobot_steer.sim.teleop import SO101SimExpert, SO101SimExpertConfig
from lerobot_steer.sim.units import JOINT_LIMITS_LEROBOT, MOTOR_KEYS, lerobot_to_radians

BIN = Path(sys.executable).parent
H, W = 64, 96  # small images keep the CLI runs fast
SMALL_CAMERAS = f"{{front: {{width: {W}, height: {H}}}, wrist: {{width: {W}, height: {H}}}}}"


def _sim_config(tmp_path, **kwargs) -> SO101SimConfig:
    kwargs.setdefault("cameras", {})
    return SO101SimConfig(calibration_dir=tmp_path / "calibration", **kwargs)


@pytest.fixture
def connect_sim(tmp_path):
    """Connects sim robots and always disconnects them, so a failing test frees the robot id."""
    robots = []

    def connect(**kwargs) -> SO101Sim:
        robots.append(SO101Sim(_sim_config(tmp_path, seed=0, **kwargs)))
        robots[-1].connect()
        return robots[-1]

    yield connect
    for robot in robots:
        if robot.is_connected:
            robot.disconnect()


@pytest.fixture
def sim_robot(connect_sim):
    return connect_sim()


def _real_follower(tmp_path) -> SO101Follower:
    """A real SO-101 follower object with two 64x96 cameras, never connected."""
    cameras = {name: OpenCVCameraConfig(index_or_path=i, width=W, height=H, fps=30)
               for i, name in enumerate(("front", "wrist"))}
    config = SOFollowerRobotConfig(port="/dev/null", cameras=cameras, calibration_dir=tmp_path / "calibration")
    return SO101Follower(config)


def _cli_env(tmp_path) -> dict:
    return {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1",
            "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}


# ---------------------------------------------------------------- drop-in for so101_follower
def test_features_equal_a_real_so101_follower_with_the_same_cameras(tmp_path):
    real = _real_follower(tmp_path)
    cameras = {name: SimCameraConfig(width=W, height=H) for name in ("front", "wrist")}
    sim = SO101Sim(_sim_config(tmp_path, cameras=cameras))
    assert list(sim.observation_features.items()) == list(real.observation_features.items())
    assert list(sim.action_features.items()) == list(real.action_features.items())
    assert len(sim.cameras) == len(real.cameras)


def test_lerobot_factories_build_the_sim_robot_and_expert(tmp_path):
    robot = make_robot_from_config(_sim_config(tmp_path))
    teleop = make_teleoperator_from_config(SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    assert isinstance(robot, SO101Sim) and isinstance(teleop, SO101SimExpert)
    assert teleop.action_features == robot.action_features
    default = SO101SimConfig()
    sizes = {name: (cam.height, cam.width) for name, cam in default.cameras.items()}
    assert sizes == {"front": (240, 320), "wrist": (240, 320)}


def test_send_action_clips_to_joint_limits_and_returns_what_was_sent(sim_robot):
    low, high = JOINT_LIMITS_LEROBOT[:, 0], JOINT_LIMITS_LEROBOT[:, 1]
    wild = dict(zip(MOTOR_KEYS, [500.0, -500.0, 0.0, 500.0, -500.0, 150.0], strict=True))
    sent = sim_robot.send_action(wild)
    assert list(sent) == list(MOTOR_KEYS)
    np.testing.assert_allclose(list(sent.values()), [high[0], low[1], 0.0, high[3], low[4], high[5]])
    # A partial action commands only its joints, as on the real bus.
    assert sim_robot.send_action({"gripper.pos": 10.0}) == {"gripper.pos": 10.0}


def test_max_relative_target_caps_the_step_from_the_present_position(connect_sim):
    robot = connect_sim(max_relative_target=5.0)
    present = np.array([robot.get_observation()[k] for k in MOTOR_KEYS])
    sent = robot.send_action({k: float(v + 40.0) for k, v in zip(MOTOR_KEYS, present, strict=True)})
    np.testing.assert_allclose(np.array(list(sent.values())) - present, 5.0, atol=1e-6)


def test_only_send_action_advances_time_and_images_have_the_configured_shape(connect_sim):
    robot = connect_sim(cameras={"wrist": SimCameraConfig(width=W, height=H)})
    t0 = robot.env.data.time
    obs = robot.get_observation()
    robot.get_observation()
    assert robot.env.data.time == t0
    assert obs["wrist"].shape == (H, W, 3) and obs["wrist"].dtype == np.uint8
    robot.send_action({k: obs[k] for k in MOTOR_KEYS})
    assert robot.env.data.time == pytest.approx(t0 + 1 / robot.config.fps)


# ---------------------------------------------------------------- expert teleop and episodes
def _control_loop(robot, teleop, steps):
    for _ in range(steps):
        robot.get_observation()
        robot.send_action(teleop.get_action())
        if robot.last_info.get("is_success"):
            return True
    return False


def test_expert_teleop_drives_the_sim_to_success_within_an_episode(sim_robot, tmp_path):
    teleop = SO101SimExpert(SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    teleop.connect()
    assert _control_loop(sim_robot, teleop, steps=8 * sim_robot.config.fps)
    teleop.disconnect()


def test_episode_announcement_resets_the_scene_at_the_next_frame_only(sim_robot, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # LeRobot's init_logging lets INFO through; pytest's default does not
    teleop = SO101SimExpert(SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    teleop.connect()

    log_say("Recording episode 0", play_sounds=False)  # nothing acted yet: the fresh scene is kept
    block0 = sim_robot.env.block_pose()
    sim_robot.get_observation()
    assert sim_robot.scene_version == 1
    _control_loop(sim_robot, teleop, steps=60)
    assert teleop.phase not in ("idle", "approach") and sim_robot.scene_version == 1

    log_say("Reset the environment", play_sounds=False)  # the reset phase keeps the scene
    sim_robot.get_observation()
    assert sim_robot.scene_version == 1

    log_say("Recording episode 1", play_sounds=False)
    assert sim_robot.scene_version == 1  # not in the middle of whatever frame is running
    obs = sim_robot.get_observation()
    assert sim_robot.scene_version == 2
    assert np.linalg.norm(sim_robot.env.block_pose()[:2] - block0[:2]) > 1e-3
    joints = np.array([obs[k] for k in MOTOR_KEYS])
    assert np.abs(joints - HOME_POSE).max() <= sim_robot.config.scene.home_noise_deg + 1e-6
    teleop.get_action()
    assert teleop.phase == "approach"  # a fresh plan for the new scene
    teleop.disconnect()


def test_an_announcement_logged_by_a_child_logger_still_starts_a_new_scene(sim_robot, tmp_path, caplog):
    """If LeRobot moves log_say to a module logger, the root handler still hears it (a filter would not)."""
    caplog.set_level(logging.INFO)
    teleop = SO101SimExpert(SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    teleop.connect()
    sim_robot.get_observation()
    _control_loop(sim_robot, teleop, steps=10)
    logging.getLogger("lerobot.utils.utils").info("Recording episode 1")
    sim_robot.get_observation()
    assert sim_robot.scene_version == 2
    teleop.disconnect()


def test_connect_warns_naming_the_seam_when_log_say_cannot_be_heard(connect_sim, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("lerobot.utils.utils.log_say", lambda text, play_sounds=True, blocking=False: None)
    connect_sim()
    assert any("LeRobot seam changed" in r.getMessage() and "log_say" in r.getMessage() for r in caplog.records)


def test_recording_loop_episodes_get_their_own_scene_even_unannounced_and_a_missing_announcement_is_reported(
    sim_robot, tmp_path, caplog
):
    """LeRobot's real record_loop: each call with a dataset is an episode; one nobody announced is
    logged as an error naming the seam and still gets a fresh scene."""
    import types

    from lerobot.processor import make_default_processors
    from lerobot.scripts.lerobot_record import record_loop

    caplog.set_level(logging.INFO)
    teleop = SO101SimExpert(SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    teleop.connect()
    teleop_proc, robot_proc, obs_proc = make_default_processors()
    fps = sim_robot.config.fps
    frames = []
    dataset = types.SimpleNamespace(fps=fps, features={}, add_frame=frames.append)

    def run(recording: bool):
        record_loop(robot=sim_robot, events={"exit_early": False}, fps=fps, teleop_action_processor=teleop_proc,
                    robot_action_processor=robot_proc, robot_observation_processor=obs_proc,
                    dataset=dataset if recording else None, teleop=teleop, control_time_s=0.15, single_task="t")

    def seam_errors():
        return [r for r in caplog.records if r.levelno >= logging.ERROR and "LeRobot seam changed" in r.getMessage()]

    log_say("Recording episode 0", play_sounds=False)
    run(recording=True)
    assert sim_robot.scene_version == 1 and sim_robot.recorded_episodes == 1 and frames and not seam_errors()
    run(recording=False)  # the reset phase is no episode
    assert sim_robot.scene_version == 1 and sim_robot.recorded_episodes == 1

    run(recording=True)  # LeRobot announced nothing: reported, and a fresh scene all the same
    assert sim_robot.scene_version == 2 and sim_robot.recorded_episodes == 2
    (error,) = seam_errors()
    assert "Recording episode" in error.getMessage() and "log_say" in error.getMessage()

    logging.getLogger("lerobot.utils.utils").info("Recording episode 2")  # announced again, by a child logger
    run(recording=True)
    assert sim_robot.scene_version == 3 and sim_robot.recorded_episodes == 3 and len(seam_errors()) == 1
    teleop.disconnect()


def test_expert_without_a_sim_robot_says_what_is_missing(tmp_path):
    teleop = SO101SimExpert(SO101SimExpertConfig(robot_id="nope", calibration_dir=tmp_path / "calibration"))
    teleop.connect()
    with pytest.raises(LookupError, match="--teleop.robot_id"):
        teleop.get_action()


# ---------------------------------------------------------------- LeRobot CLIs
def _grasp_position(states: np.ndarray, actions: np.ndarray, ik: ArmIK) -> np.ndarray:
    """Where the gripper was when the expert finished closing it: the block's (x, y), give or take."""
    k = int(np.argmax(actions[:, 5] <= 0.5))
    assert actions[k, 5] <= 0.5, "the expert never closed the gripper in this episode"
    position, _ = ik.site_pose(lerobot_to_radians(states[k])[:5])
    return position[:2]


@pytest.mark.slow  # lerobot-record in a subprocess
def test_lerobot_record_with_the_expert_records_one_scene_per_episode(tmp_path):
    from lerobot.datasets import LeRobotDataset

    root, repo_id, fps, episode_s = tmp_path / "demo", "local/so101_sim_demo", 30, 4
    cmd = [
        str(BIN / "lerobot-record"), "--robot.type=so101_sim", f"--robot.cameras={SMALL_CAMERAS}",
        "--robot.seed=0", "--teleop.type=so101_sim_expert", f"--dataset.repo_id={repo_id}",
        f"--dataset.root={root}", f"--dataset.single_task={TASK_DESCRIPTION}", "--dataset.num_episodes=2",
        f"--dataset.episode_time_s={episode_s}", "--dataset.reset_time_s=0.5", f"--dataset.fps={fps}",
        "--dataset.push_to_hub=false", "--dataset.no_stamp=true", "--play_sounds=false",
    ]
    run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                         env=_cli_env(tmp_path))
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]

    ds = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    real = _real_follower(tmp_path)
    expected = {**hw_to_dataset_features(real.action_features, ACTION),
                **hw_to_dataset_features(real.observation_features, OBS_STR)}
    for key, feature in expected.items():
        assert {k: tuple(v) if k == "shape" else v for k, v in ds.meta.features[key].items() if k != "info"} == \
            {k: v for k, v in feature.items() if k != "info"}, key
    assert ds.meta.robot_type == "so101_sim" and ds.num_episodes == 2
    assert ds[0]["observation.images.front"].shape == (3, H, W)

    frames = ds.hf_dataset.with_format("numpy")
    episode = np.asarray(frames["episode_index"])
    states, actions = np.stack(frames["observation.state"]), np.stack(frames["action"])
    lengths = np.bincount(episode)
    assert np.all((lengths >= 0.6 * fps * episode_s) & (lengths <= fps * episode_s + 1)), lengths

    # Scenes as the robot logged them ("so101_sim scene N: block at (x, y) m, ..."); episode 0 keeps
    # the scene drawn at connect, episode 1 gets the next one.
    logged = {int(n): np.array([float(x), float(y)])
              for n, x, y in re.findall(r"so101_sim scene (\d+): block at \(([-\d.]+), ([-\d.]+)\)", log)}
    assert sorted(logged) == [1, 2], log[-4000:]
    ik = ArmIK(load_scene())
    grasps = []
    for e in range(2):
        s, a = states[episode == e], actions[episode == e]
        assert np.abs(s[0] - HOME_POSE).max() <= 3.0 + 1e-3  # each episode starts at home in a fresh scene
        assert np.abs(np.diff(s, axis=0)).max() < 15.0  # and is never reset midway
        grasps.append(_grasp_position(s, a, ik))
        assert np.linalg.norm(grasps[e] - logged[e + 1]) < 0.02
    assert np.linalg.norm(grasps[0] - grasps[1]) > 0.01


def _tiny_act_checkpoint(path: Path) -> Path:
    """A random-weight ACT for the sim's front camera and joints, saved like a training checkpoint."""
    import torch

    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

    front = f"{OBS_IMAGES}.front"
    config = ACTConfig(
        input_features={OBS_STATE: PolicyFeature(FeatureType.STATE, (6,)),
                        front: PolicyFeature(FeatureType.VISUAL, (3, H, W))},
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (6,))},
        pretrained_backbone_weights=None, dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1,
        n_decoder_layers=1, use_vae=False, chunk_size=10, n_action_steps=10, device="cpu",
    )
    stats = {OBS_STATE: {"mean": torch.tensor(HOME_POSE, dtype=torch.float32), "std": torch.full((6,), 30.0)},
             ACTION: {"mean": torch.tensor(HOME_POSE, dtype=torch.float32), "std": torch.full((6,), 30.0)},
             front: {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}}
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    for part in (ACTPolicy(config), preprocessor, postprocessor):
        part.save_pretrained(path)
    return path


@pytest.mark.slow  # lerobot-rollout in a subprocess
def test_lerobot_rollout_runs_a_policy_on_the_sim_robot(tmp_path):
    checkpoint = _tiny_act_checkpoint(tmp_path / "act")
    cmd = [
        str(BIN / "lerobot-rollout"), "--robot.type=so101_sim",
        f"--robot.cameras={{front: {{width: {W}, height: {H}}}}}",
        f"--policy.path={checkpoint}", "--duration=2", f"--task={TASK_DESCRIPTION}", "--play_sounds=false",
    ]
    run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                         env=_cli_env(tmp_path))
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "Duration limit reached" in log and "SO101Sim disconnected" in log, log[-4000:]
