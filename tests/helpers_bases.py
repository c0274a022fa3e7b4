"""Tiny LeRobot base policies built offline from config (random weights), shared by test files.

The builders live in `lerobot_steer.steering.tiny_bases` so that the benchmark scripts time exactly
the bases the tests check; this module re-exports them under the names the tests import.
VLA builds need `offline_vla_builds()` active while the policy is constructed.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path

import pytest
import torch

from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_steer.steering.tiny_bases import (
    ACTION,
    CAMERA,
    ENV,
    STATE,
    TOKEN_MASK,
    TOKENS,
    batch_maker,
    offline_vla_builds,
    save_base,
    stats_for,
    tiny_diffusion,
    tiny_vla,
)

__all__ = [
    "ACTION", "CAMERA", "ENV", "STATE", "TOKENS", "TOKEN_MASK", "batch_maker", "offline_vla_builds", "save_base",
    "stats_for", "tiny_diffusion", "tiny_vla", "one_thread", "vla_builds", "diffusion_base", "diffusion_dataset_meta",
    "tiny_adapter", "write_success_dataset", "sim_smolvla", "info_logging", "save_camera_diffusion",
]


# Module-scoped pytest fixtures: a test module that imports one gets its own instance of it.


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine run far faster single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def info_logging():
    """The root logger at INFO, as LeRobot's init_logging leaves it in the CLI (the sim robot checks it)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


@pytest.fixture(scope="module")
def vla_builds(tmp_path_factory):
    """Let SmolVLA, pi0 and pi05 build tiny with no Hub access, for the whole module (yields `vlm_dir`)."""
    with offline_vla_builds(tmp_path_factory.mktemp("tiny_smolvlm")) as vlm_dir:
        yield vlm_dir


@pytest.fixture(scope="module")
def sim_smolvla(vla_builds, tmp_path_factory) -> Path:
    """A tiny SmolVLA checkpoint for the sim's joints and front camera, LeRobot's own processors."""
    from lerobot_steer.steering.tiny_bases import tiny_sim_smolvla

    torch.manual_seed(0)
    return save_base(*tiny_sim_smolvla(vla_builds), tmp_path_factory.mktemp("sim_smolvla"))


@pytest.fixture(scope="module")
def diffusion_base(tmp_path_factory):
    """A tiny diffusion checkpoint folder (state + env state -> 2-d actions)."""
    torch.manual_seed(0)
    return save_base(*tiny_diffusion(), tmp_path_factory.mktemp("diffusion_base"))


def save_camera_diffusion(folder: Path, height: int, width: int) -> str:
    """A tiny random-weight diffusion base saved in `folder` (seeded: the same weights every time): 6
    joints and a `height` x `width` front camera in (LeRobot's diffusion needs an image or an environment
    state), 6 joint targets out, chunks of 8 with 4 executed. Returns the folder."""
    torch.manual_seed(0)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
              "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, height, width))}
    save_base(*tiny_diffusion(inputs, action_dim=6, crop_shape=None), folder)
    return str(folder)


def tiny_adapter(kind: str, vlm_dir):
    """(adapter, make_batch) for a tiny "diffusion" (the default `tiny_diffusion`) or VLA base, seeded 0."""
    from lerobot_steer.steering import BasePolicyAdapter

    torch.manual_seed(0)
    if kind == "diffusion":
        policy, pre, post = tiny_diffusion()
    else:
        policy, pre, post = tiny_vla(kind, vlm_dir)
    return BasePolicyAdapter.from_policy(policy, pre, post), batch_maker(policy)


def diffusion_dataset_meta() -> types.SimpleNamespace:
    """Dataset metadata matching `diffusion_base` (state, env state, 2-d action) with no reward feature."""
    return types.SimpleNamespace(features={
        STATE: {"dtype": "float32", "shape": (4,), "names": None},
        ENV: {"dtype": "float32", "shape": (3,), "names": None},
        ACTION: {"dtype": "float32", "shape": (2,), "names": None},
    })


def write_success_dataset(root, repo_id: str, frames_per_episode: int, outcomes=(True, False, True)):
    """A LeRobot dataset written by LeRobot's own writer, one episode per outcome, `next.success` true
    on the last frame of the successful ones; returns its metadata."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    features = {"observation.state": {"dtype": "float32", "shape": (2,), "names": None},
                "action": {"dtype": "float32", "shape": (2,), "names": None},
                "next.success": {"dtype": "bool", "shape": (1,), "names": None}}
    ds = LeRobotDataset.create(repo_id, fps=30, root=root, features=features, use_videos=False)
    last = frames_per_episode - 1
    for outcome in outcomes:
        for t in range(frames_per_episode):
            ds.add_frame({"observation.state": torch.zeros(2).numpy(), "action": torch.zeros(2).numpy(),
                          "next.success": torch.tensor([outcome and t == last]).numpy(), "task": "t"})
        ds.save_episode()
    ds.finalize()
    return LeRobotDatasetMetadata(repo_id, root=root)
