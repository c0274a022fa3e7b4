"""Generated expert data must drop into LeRobot's dataset pipeline like a real SO-101 recording."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lerobot.datasets.lerobot_dataset import LeRobotDataset

from lerobot_steer.sim.generate import GenerateConfig, generate
from lerobot_steer.sim.pick_place_env import TASK_DESCRIPTION, PickPlaceConfig
from lerobot_steer.sim.units import MOTOR_KEYS


def test_state_dataset_reloads_with_real_so101_columns(state_dataset):
    root, report = state_dataset
    ds = LeRobotDataset("local/so101_state", root=root, video_backend="pyav")
    assert ds.num_episodes == 6 and ds.fps == 30
    assert ds.meta.features["observation.state"]["names"] == list(MOTOR_KEYS)
    assert ds.meta.features["action"]["names"] == list(MOTOR_KEYS)
    for key in ("next.reward", "next.success", "next.done", "observation.environment_state"):
        assert key in ds.meta.features
    item = ds[0]
    assert item["task"] == TASK_DESCRIPTION
    assert item["observation.state"].shape == (6,)
    assert report["expert_success_rate"] >= 0.9 and report["episodes_saved"] == 6
    assert json.loads((root / "generation_report.json").read_text())["outcomes"]["success"] >= 6


def test_rewards_success_and_done_follow_the_episode(state_dataset):
    root, _ = state_dataset
    ds = LeRobotDataset("local/so101_state", root=root, video_backend="pyav")
    table = ds.hf_dataset.with_format("numpy")
    col = lambda key: np.asarray(table[key][:])  # noqa: E731
    episodes = col("episode_index")
    done = col("next.done").reshape(-1).astype(bool)
    success = col("next.success").reshape(-1).astype(bool)
    reward = col("next.reward").reshape(-1)
    for ep in range(ds.num_episodes):
        idx = np.flatnonzero(episodes == ep)
        assert done[idx[-1]] and not done[idx[:-1]].any(), "next.done only on the last frame"
        assert success[idx[-1]], "a saved expert episode ends in success"
        first = idx[np.argmax(success[idx])]
        assert not success[idx[0] : first - idx[0]].any()
        np.testing.assert_array_equal(reward[idx], success[idx].astype(np.float32))
    # The recorded action moves the arm: the next state follows the commanded targets.
    states, actions = col("observation.state"), col("action")
    assert np.abs(states[1:50] - actions[0:49]).mean() < 5.0


@pytest.mark.slow  # the only fast user of `pixel_dataset`: generating its videos takes ~15-20 s
def test_pixel_dataset_decodes_video_frames(pixel_dataset):
    root, _ = pixel_dataset
    ds = LeRobotDataset("local/so101_pixels", root=root, video_backend="pyav")
    item = ds[len(ds) // 2]
    for cam in ("front", "wrist"):
        img = item[f"observation.images.{cam}"]
        assert img.shape == (3, 48, 64) and img.dtype == torch.float32
        assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.02
    assert (root / "videos").is_dir()


def test_failed_expert_episodes_are_not_written_unless_asked(tmp_path):
    # A bowl out of the arm's reach: the expert cannot succeed.
    env = PickPlaceConfig(obs_type="state", bowl_x_range=(0.6, 0.6), bowl_y_range=(-0.5, -0.5), episode_length=60)
    cfg = GenerateConfig(repo_id="local/fail", root=str(tmp_path / "fail"), num_episodes=1, env=env,
                         max_attempts_factor=2.0)
    with pytest.raises(RuntimeError, match="Only 0/1 episodes"):
        generate(cfg)
    report = json.loads((tmp_path / "fail" / "generation_report.json").read_text())
    assert report["attempts"] == 2 and report["outcomes"]["success"] == 0
    kept = GenerateConfig(repo_id="local/kept", root=str(tmp_path / "kept"), num_episodes=1, env=env,
                          keep_failures=True)
    _, report = generate(kept)
    assert report["episodes_saved"] == 1 and report["expert_success_rate"] == 0.0


def test_generator_refuses_to_overwrite_a_dataset(state_dataset):
    root, _ = state_dataset
    with pytest.raises(FileExistsError, match="--root"):
        generate(GenerateConfig(root=str(root), num_episodes=1))


def test_interrupted_generation_keeps_the_saved_episodes(tmp_path, monkeypatch):
    """Ctrl-C during episode 3 must leave episodes 1-2 readable (the dataset is finalized on the way out)."""
    import lerobot_steer.sim.generate as gen

    calls = {"n": 0}
    real = gen.run_expert_episode

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "run_expert_episode", interrupt_on_third)
    root = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        generate(GenerateConfig(repo_id="local/interrupted", root=str(root), num_episodes=5,
                                env=PickPlaceConfig(obs_type="state")))
    ds = LeRobotDataset("local/interrupted", root=root, video_backend="pyav")
    assert ds.num_episodes == 2 and len(ds) > 100
