"""Behaviour of the pick-and-place env that training, evaluation and LeRobot's CLIs rely on."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lerobot_steer.config_error import ConfigError
from lerobot_steer.sim.expert import ScriptedExpert
from lerobot_steer.sim.model import scene_path
from lerobot_steer.sim.pick_place_env import (
    NEVER_PICKED_UP,
    SUCCESS,
    PickPlaceConfig,
    SO101PickPlaceEnv,
)


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trace = [obs["agent_pos"].copy()]
    for a in actions:
        obs, *_ = env.step(a)
        trace.append(np.concatenate([obs["agent_pos"], obs["environment_state"]]))
    return np.concatenate(trace)


def test_seeded_resets_and_rollouts_are_reproducible():
    env = SO101PickPlaceEnv(obs_type="state")
    rng = np.random.default_rng(1)
    actions = [env.action_space.sample() * 0.2 for _ in range(20)]
    a = _rollout(env, 7, actions)
    b = _rollout(SO101PickPlaceEnv(obs_type="state"), 7, actions)
    np.testing.assert_array_equal(a, b)
    obs0, _ = env.reset(seed=7)
    obs1, _ = env.reset(seed=8)
    assert not np.allclose(obs0["environment_state"], obs1["environment_state"]), "different seeds, same scene"
    del rng


def test_observation_layout_per_obs_type():
    env = SO101PickPlaceEnv(obs_type="pixels", image_height=48, image_width=64)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"agent_pos", "pixels"}
    assert set(obs["pixels"]) == {"front", "wrist"}
    assert obs["pixels"]["front"].shape == (48, 64, 3) and obs["pixels"]["front"].dtype == np.uint8
    assert obs["pixels"]["front"].std() > 5, "camera image is blank"
    assert info["is_success"] is False
    env.close()
    env = SO101PickPlaceEnv(obs_type="state")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"agent_pos", "environment_state"}
    assert obs["agent_pos"].shape == (6,) and obs["environment_state"].shape == (10,)
    assert env.observation_space.contains(obs)


def test_state_includes_objects_appends_the_object_poses_to_the_joints_everywhere():
    """A VLA reads only observation.state and cameras: the option must put the same 10 object values
    in agent_pos that environment_state carries, and every feature description must agree on 16."""
    from lerobot_steer.sim.env_config import SO101SimEnvConfig
    from lerobot_steer.sim.generate import dataset_features

    env = SO101PickPlaceEnv(obs_type="pixels_state", cameras=("front",), image_height=24, image_width=32,
                            state_includes_objects=True)
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(obs["agent_pos"][:6])
    assert obs["agent_pos"].shape == (16,) and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["agent_pos"][6:], obs["environment_state"])
    np.testing.assert_allclose(obs["agent_pos"][:6], env.joint_positions(), atol=1e-5)
    cfg = SO101SimEnvConfig(obs_type="pixels", cameras=("front",), state_includes_objects=True)
    assert cfg.features["agent_pos"].shape == (16,)
    state = dataset_features(cfg)["observation.state"]
    assert state["shape"] == (16,) and state["names"][6:] == ["block_x", "block_y", "block_z", "block_qw",
                                                                "block_qx", "block_qy", "block_qz", "bowl_x",
                                                                "bowl_y", "bowl_z"]
    assert SO101PickPlaceEnv(obs_type="state").reset(seed=3)[0]["agent_pos"].shape == (6,), "default changed"


def test_every_step_reports_is_success_and_task():
    env = SO101PickPlaceEnv(obs_type="state", episode_length=5)
    obs, info = env.reset(seed=0)
    assert "is_success" in info and env.task_description == env.task
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(obs["agent_pos"])
        assert isinstance(info["is_success"], bool) and info["task"] == env.task_description
    assert truncated and not terminated and env._max_episode_steps == 5
    assert info["failure"] == NEVER_PICKED_UP


def test_nan_action_raises_naming_the_joint():
    env = SO101PickPlaceEnv(obs_type="state")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="elbow_flex.pos"):
        env.step(np.array([0, 0, np.nan, 0, 0, 50.0]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5))


def test_out_of_range_actions_are_clipped_and_reported():
    env = SO101PickPlaceEnv(obs_type="state")
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(obs["agent_pos"])
    assert info["action_clipped"] is False
    wild = np.array([500.0, 0, 0, 0, 0, 150.0])
    for _ in range(30):
        obs, _, _, _, info = env.step(wild)
    assert info["action_clipped"] is True
    assert obs["agent_pos"][0] <= 110.5 and obs["agent_pos"][5] <= 100.5


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"obs_type": "rgb"}, "obs_type"),
        ({"cameras": ("side",)}, "cameras"),
        ({"block_x_range": (0.3, 0.1)}, "block_x_range"),
        ({"image_height": 0}, "image_height"),
        ({"image_width": 1280}, "image_width"),
        ({"reward_type": "shaped"}, "reward_type"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PickPlaceConfig(**kwargs)


def test_unknown_option_is_rejected_with_the_valid_list():
    with pytest.raises(TypeError, match="obs_typ.*valid options"):
        SO101PickPlaceEnv(obs_typ="state")


def test_expert_succeeds_on_a_sample_and_reward_marks_success():
    env = SO101PickPlaceEnv(obs_type="state")
    expert = ScriptedExpert(env.model)
    outcomes = []
    for seed in range(10):
        env.reset(seed=1000 + seed)
        expert.reset()
        for _ in range(env.config.episode_length):
            obs, reward, terminated, truncated, info = env.step(expert.act(env))
            if terminated or truncated:
                break
        outcomes.append(info["failure"])
        if info["failure"] == SUCCESS:
            assert terminated and reward == 1.0 and info["is_success"]
    assert outcomes.count(SUCCESS) >= 9, outcomes


def test_grasped_block_is_carried_not_dropped():
    """Realistic friction (1.0) still holds the block through lift and carry."""
    env = SO101PickPlaceEnv(obs_type="state", terminate_on_success=False)
    expert = ScriptedExpert(env.model)
    env.reset(seed=3)
    heights = []
    for _ in range(env.config.episode_length):
        env.step(expert.act(env))
        if expert.phase == "carry":
            heights.append(env.block_pose()[2])
            assert env.block_grasped()
    assert min(heights) > 0.05
    assert env.model.geom("block").friction[0] == pytest.approx(1.0)


def _expert_return(env, expert, seed: int, hover: bool, gamma: float = 1.0) -> tuple[float, bool]:
    """Discounted return of the expert, or of an expert that carries the block over the bowl and then
    holds it there (gripper closed) until the time limit instead of lowering and releasing it."""
    env.reset(seed=seed)
    total, discount, hold = 0.0, 1.0, None
    for _ in range(env.config.episode_length):
        action = expert.act(env)
        if hover and expert.phase in ("lower", "release", "retreat", "done"):
            action = hold
        elif expert.phase == "carry":
            hold = action
        _, r, terminated, truncated, info = env.step(action)
        total += discount * r
        discount *= gamma
        if terminated or truncated:
            return total, bool(info["is_success"])
    return total, False


@pytest.mark.parametrize("gamma", [1.0, 0.99 ** (1 / 8)])
def test_dense_reward_pays_success_more_than_hovering_over_the_bowl(gamma):
    """Potential-based shaping: an agent that carries the block to the bowl and never lets go must
    earn less than one that places it, undiscounted and at the RL default discount (0.99 per chunk)."""
    env = SO101PickPlaceEnv(obs_type="state", reward_type="dense")
    success_return, success = _expert_return(env, ScriptedExpert(env.model), seed=5, hover=False, gamma=gamma)
    hover_return, hover_success = _expert_return(env, ScriptedExpert(env.model), seed=5, hover=True, gamma=gamma)
    assert success and not hover_success
    assert success_return > hover_return + 0.2
    assert hover_return < 0.75  # the potential's bound: shaping alone never reaches a success's 1


def test_dense_reward_shaping_telescopes_to_the_potential_change():
    env = SO101PickPlaceEnv(obs_type="state", reward_type="dense")
    expert = ScriptedExpert(env.model)
    env.reset(seed=3)
    phi0, total = env.progress_potential(), 0.0
    for _ in range(60):
        _, r, terminated, truncated, info = env.step(expert.act(env))
        total += r
    assert not info["is_success"]
    assert total == pytest.approx(env.progress_potential() - phi0, abs=1e-9)
    assert total > 0.1  # the expert reached and grasped: progress shows in the reward


def test_user_supplied_arm_mjcf_with_assets_in_subfolders(tmp_path):
    arm_dir = tmp_path / "my_arm"
    arm_dir.mkdir()
    shutil.copy(scene_path("so101.xml"), arm_dir / "so101_custom.xml")
    env = SO101PickPlaceEnv(obs_type="state", arm_mjcf_path=str(arm_dir / "so101_custom.xml"))
    obs, _ = env.reset(seed=0)
    assert obs["agent_pos"].shape == (6,)


def test_arm_mjcf_without_so101_names_fails_clearly(tmp_path):
    bad = tmp_path / "bad_arm.xml"
    bad.write_text(scene_path("so101.xml").read_text().replace('"wrist_roll"', '"roll"'))
    with pytest.raises(ValueError, match="joint 'wrist_roll'"):
        SO101PickPlaceEnv(obs_type="state", arm_mjcf_path=str(bad))
    broken = tmp_path / "broken_arm.xml"
    broken.write_text(scene_path("so101.xml").read_text().replace('joint="wrist_roll"', 'joint="nowhere"'))
    with pytest.raises(ValueError, match="arm_mjcf_path.*could not compile"):
        SO101PickPlaceEnv(obs_type="state", arm_mjcf_path=str(broken))
    with pytest.raises(FileNotFoundError, match="arm_mjcf_path"):
        SO101PickPlaceEnv(obs_type="state", arm_mjcf_path=str(tmp_path / "missing.xml"))


@pytest.mark.parametrize("samples", [0, 4])
def test_cameras_rendered_in_one_strip_are_the_pictures_of_a_renderer_per_camera(samples):
    """The env draws its cameras side by side and reads them back once (CameraStrip): the images must
    be what mujoco.Renderer gives camera by camera, at any MSAA setting."""
    import mujoco

    env = SO101PickPlaceEnv(obs_type="pixels", image_height=96, image_width=128, camera_multisamples=samples)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, *_ = env.step(obs["agent_pos"] + 0.05)
    env.model.vis.quality.offsamples = samples
    with mujoco.Renderer(env.model, 96, 128) as renderer:
        for cam in env.config.cameras:
            renderer.update_scene(env.data, camera=cam)
            diff = np.abs(renderer.render().astype(int) - obs["pixels"][cam])
            assert obs["pixels"][cam].shape == (96, 128, 3)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, (cam, diff.max(), (diff > 0).mean())
    env.close()


def test_the_coarse_table_grid_draws_the_picture_of_the_fine_one():
    """The table plane is tessellated into 0.2 m quads for drawing (2.5x faster frames on a CPU
    renderer than MuJoCo's usual 0.01 m): under the scene's directional lights the pictures a pixel
    policy sees must be those of the fine grid."""
    import mujoco

    env = SO101PickPlaceEnv(obs_type="pixels", image_height=96, image_width=128)
    obs, _ = env.reset(seed=5)
    table = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "table")
    assert env.model.geom_size[table][2] == pytest.approx(0.2)
    fine = env.model.__copy__()
    fine.geom_size[table][2] = 0.01
    with mujoco.Renderer(fine, 96, 128) as renderer:
        for cam in env.config.cameras:
            renderer.update_scene(env.data, camera=cam)
            diff = np.abs(renderer.render().astype(int) - obs["pixels"][cam])
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, (cam, diff.max(), (diff > 0).mean())
    env.close()


def test_camera_multisampling_is_an_option_that_only_softens_edges():
    """MSAA off (the default, ~3x faster on a CPU renderer) and MuJoCo's 4 samples see the same scene."""
    frames = {}
    for samples in (0, 4):
        env = SO101PickPlaceEnv(obs_type="pixels", camera_multisamples=samples)
        obs, _ = env.reset(seed=0)
        frames[samples] = obs["pixels"]["front"].astype(float)
        env.close()
    diff = np.abs(frames[0] - frames[4])
    assert 0 < diff.mean() < 3.0  # edges differ, the picture does not
    with pytest.raises(ConfigError, match="camera_multisamples=32"):
        SO101PickPlaceEnv(obs_type="pixels", camera_multisamples=32)
