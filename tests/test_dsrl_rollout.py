"""`lerobot-rollout --policy.path=<dsrl checkpoint>` drives the `so101_sim` robot with nothing else.

A DSRL checkpoint is deployed like any LeRobot policy: the rollout CLI reads its config, loads the
class through the plugin registry, and loads the processors from the checkpoint's own JSON files
(not from our processor factory). So the checkpoint must carry the steering networks, the frozen
base (in `base_policy/`) and the base's processors at its top level, and must not need the folder
the base was originally loaded from. This test builds such a checkpoint the way lerobot-train
writes one (policy.save_pretrained + the processors from `make_dsrl_pre_post_processors`), deletes
the original base folder, and runs the CLI on the sim robot with the same camera the base expects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy, make_dsrl_pre_post_processors
from lerobot_steer.sim.pick_place_env import TASK_DESCRIPTION
from lerobot_steer.sim.units import JOINT_LIMITS_LEROBOT
from lerobot_steer.steering.tiny_bases import ACTION, CAMERA, STATE, save_base, tiny_diffusion

BIN = Path(sys.executable).parent
H, W = 48, 64  # one small `front` camera keeps rendering and the base's ResNet cheap


def _joint_stats() -> dict[str, torch.Tensor]:
    """MIN_MAX statistics over the arm's joint range (LeRobot units), so decoded actions are plausible."""
    limits = torch.as_tensor(JOINT_LIMITS_LEROBOT, dtype=torch.float32)
    low, high = limits[:, 0], limits[:, 1]
    return {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / 4, "q01": low, "q99": high}


def _sim_diffusion_base(folder: Path) -> Path:
    """A tiny diffusion base whose inputs are the sim robot's (joints + the `front` camera), saved with
    its processors as lerobot-train writes a checkpoint."""
    torch.manual_seed(0)
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,)), CAMERA: PolicyFeature(FeatureType.VISUAL, (3, H, W))}
    stats = {STATE: _joint_stats(), ACTION: _joint_stats(),
             CAMERA: {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25),
                      "min": torch.zeros(3, 1, 1), "max": torch.ones(3, 1, 1)}}
    return save_base(*tiny_diffusion(inputs, action_dim=6, stats=stats, crop_shape=None), folder)


def _dsrl_checkpoint(tmp_path: Path) -> Path:
    base = _sim_diffusion_base(tmp_path / "base")
    config = DSRLConfig(base_policy_path=str(base), device="cpu", hidden_dims=[32, 32], image_channels=[8, 8],
                        image_strides=[2, 2], image_latent_dim=16)
    policy = DSRLPolicy(config)
    with torch.no_grad():
        policy.actor.head.mu.bias.add_(0.5)  # steered away from the prior's mean, as after training
    checkpoint = tmp_path / "dsrl" / "pretrained_model"
    policy.save_pretrained(checkpoint)
    for pipeline in make_dsrl_pre_post_processors(config):
        pipeline.save_pretrained(checkpoint)
    shutil.rmtree(base)  # the checkpoint must be self-contained
    return checkpoint


@pytest.mark.slow  # lerobot-rollout in a subprocess
def test_lerobot_rollout_runs_a_dsrl_checkpoint_from_policy_path_alone(tmp_path):
    checkpoint = _dsrl_checkpoint(tmp_path)
    assert (checkpoint / "base_policy" / "model.safetensors").is_file()
    cmd = [
        str(BIN / "lerobot-rollout"), "--robot.type=so101_sim",
        f"--robot.cameras={{front: {{width: {W}, height: {H}}}}}", f"--policy.path={checkpoint}", "--duration=2",
        f"--task={TASK_DESCRIPTION}", "--play_sounds=false",
    ]
    env = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}
    run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "Policy loaded: type=dsrl" in log, log[-4000:]
    assert "Duration limit reached" in log and "SO101Sim disconnected" in log, log[-4000:]
