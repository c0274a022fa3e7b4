"""Shared fixtures: small datasets generated once per test session, offline, on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest
from cli_helpers import BIN, TINY_DIFFUSION_ARGS, run_cli

from lerobot_steer.sim.generate import GenerateConfig, generate
from lerobot_steer.sim.pick_place_env import PickPlaceConfig


@pytest.fixture(scope="session", autouse=True)
def contained_tempfiles(tmp_path_factory):
    """Temporary files of this process and of the CLIs it starts go to a pytest folder (pruned with the
    old test runs): LeRobot's `PreTrainedConfig.from_pretrained` writes a /tmp/tmp*.json per config load
    and never deletes it (NamedTemporaryFile(delete=False)), ~2,000 per test run."""
    import tempfile

    folder = str(tmp_path_factory.mktemp("tempfiles"))
    saved_dir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
    yield folder
    tempfile.tempdir = saved_dir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


@pytest.fixture(scope="session")
def state_dataset(tmp_path_factory):
    """Six expert episodes with state observations (joints + privileged block/bowl poses)."""
    root = tmp_path_factory.mktemp("data") / "so101_state"
    cfg = GenerateConfig(repo_id="local/so101_state", root=str(root), num_episodes=6, seed=100,
                         env=PickPlaceConfig(obs_type="state"))
    dataset, report = generate(cfg)
    return root, report


@pytest.fixture(scope="session")
def pixel_dataset(tmp_path_factory):
    """Two expert episodes with both cameras at 48x64, as videos."""
    root = tmp_path_factory.mktemp("data") / "so101_pixels"
    cfg = GenerateConfig(repo_id="local/so101_pixels", root=str(root), num_episodes=2, seed=200,
                         env=PickPlaceConfig(obs_type="pixels_state", image_height=48, image_width=64))
    dataset, report = generate(cfg)
    return root, report



@pytest.fixture(scope="session")
def state_checkpoint(state_dataset, tmp_path_factory):
    """`lerobot-train --policy.type=diffusion` for 2 steps on the state dataset: a real LeRobot
    checkpoint (weights, config, processors) whose inputs are observation.state + environment_state."""
    root, _ = state_dataset
    out = tmp_path_factory.mktemp("train_state") / "run"
    run_cli([BIN / "lerobot-train", *TINY_DIFFUSION_ARGS, "--dataset.repo_id=local/so101_state",
             f"--dataset.root={root}", "--batch_size=4", "--steps=2", "--save_freq=2", "--num_workers=0",
             "--env_eval_freq=0", "--wandb.enable=false", f"--output_dir={out}"], cwd=out.parent)
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "policy_preprocessor.json").is_file()
    return ckpt
