"""LeRobot's own CLIs train on generated sim data without conversion and evaluate on `so101_sim`."""

from __future__ import annotations

import json

import pytest
from cli_helpers import BIN, TINY_DIFFUSION_ARGS, run_cli

pytestmark = pytest.mark.slow  # every test runs lerobot-train / lerobot-eval in a subprocess


@pytest.fixture(scope="module")
def checkpoint(pixel_dataset, tmp_path_factory):
    """`lerobot-train --policy.type=diffusion` on the generated camera dataset, as a user would run it."""
    root, _ = pixel_dataset
    out = tmp_path_factory.mktemp("train") / "run"
    run_cli([str(BIN / "lerobot-train"), *TINY_DIFFUSION_ARGS, "--dataset.repo_id=local/so101_pixels", f"--dataset.root={root}",
          "--dataset.video_backend=pyav", "--batch_size=4", "--steps=2", "--save_freq=2", "--num_workers=0",
          "--env_eval_freq=0", "--wandb.enable=false", f"--output_dir={out}"], cwd=out.parent)
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "policy_preprocessor.json").is_file()
    return ckpt


ENV_48x64 = ["--env.type=so101_sim", "--env.obs_type=pixels_state", "--env.image_height=48", "--env.image_width=64",
             "--env.episode_length=12", "--env.render_height=48", "--env.render_width=64"]


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_lerobot_eval_runs_a_sim_trained_checkpoint(checkpoint, tmp_path, vector):
    vec = ["--eval.batch_size=1", "--eval.use_async_envs=false"] if vector == "sync" else ["--eval.batch_size=2", "--eval.use_async_envs=true"]
    run_cli([str(BIN / "lerobot-eval"), f"--policy.path={checkpoint}", *ENV_48x64, "--policy.device=cpu",
          "--eval.n_episodes=2", *vec, f"--output_dir={tmp_path}"], cwd=tmp_path)
    info = json.loads((tmp_path / "eval_info.json").read_text())
    overall = info["overall"]
    assert overall["n_episodes"] == 2
    # An untrained policy cannot place the block: success must be reported as 0, not the 100 % LeRobot
    # would report for an env that forgets `is_success`.
    assert overall["pc_success"] == 0.0
    videos = list((tmp_path / "videos").rglob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 0 for v in videos)


def test_eval_recording_writes_a_dataset(checkpoint, tmp_path):
    run_cli([str(BIN / "lerobot-eval"), f"--policy.path={checkpoint}", *ENV_48x64, "--policy.device=cpu",
          "--eval.n_episodes=1", "--eval.batch_size=1", "--eval.use_async_envs=false", "--eval.recording=true",
          f"--output_dir={tmp_path}"], cwd=tmp_path)
    infos = list(tmp_path.rglob("meta/info.json"))
    assert infos, "no recorded dataset"
    features = json.loads(infos[0].read_text())["features"]
    assert {"observation.images.front", "observation.images.wrist", "next.success", "action"} <= set(features)
