"""Shared fixtures: small datasets generated once per test session, offline, on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest

from lerobot_steer.sim.generate import GenerateConfig, generate
from lerobot_steer.sim.pick_place_env import PickPlaceConfig


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
