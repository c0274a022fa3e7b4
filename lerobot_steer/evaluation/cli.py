"""`lerobot-steer-eval`: compare checkpoints on the SO-101 sim with paired seeds and intervals.

    lerobot-steer-eval --policy_paths='[outputs/train/a/checkpoints/last/pretrained_model,builtin:expert]' \
        --env.obs_type=state --n_episodes=50 --batch_size=4 --videos.first=2 --videos.failures=3

`--videos.trails=true` draws every predicted action chunk into the videos as the gripper path it
leads to (base vs steered for dsrl / dyna_vgd checkpoints; see `trails.py`).

Every `PickPlaceConfig` option is an `--env.<name>` flag (the `so101_sim` env of `lerobot-eval`).
All checkpoints are loaded and checked against the env before the first rollout, so a mismatch in
the third checkpoint does not surface after an hour of evaluating the first two.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import draccus

from lerobot_steer.cli_errors import run_command
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.sim.pick_place_env import config_as_kwargs

from .report import build_report, markdown_table, write_outputs
from .rollout import run_episodes
from .video import VideoConfig, VideoRecorder

logger = logging.getLogger(__name__)


SYNC_BATCH = 50


@dataclass
class SteerEvalConfig:
    # Checkpoint folders (`.../pretrained_model`) or Hub ids, or builtin:expert / builtin:hold.
    policy_paths: list[str] = field(default_factory=list)
    env: SO101SimEnvConfig = field(default_factory=SO101SimEnvConfig)
    n_episodes: int = 50
    # Episode i uses seed + i, for every checkpoint.
    seed: int = 1000
    # Envs run in lock-step (one policy.reset() per batch). 0: with sync envs min(n_episodes, 50), since one
    # batched base decode serves them all (on 2 cores, 1 env at a time made 4 x 50 episodes take 20 min);
    # with async envs min(0.7 x CPU cores, n_episodes, 64), as lerobot-eval.
    batch_size: int = 0
    use_async_envs: bool = False
    videos: VideoConfig = field(default_factory=VideoConfig)
    output_dir: str | None = None
    # Inference device; default: cuda if available, else cpu.
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if not self.policy_paths:
            raise ValueError("give at least one checkpoint: --policy_paths='[<dir>/pretrained_model]'")
        if self.n_episodes <= 0:
            raise ValueError(f"n_episodes={self.n_episodes} must be positive")
        if self.batch_size <= 0:
            parallel = int(0.7 * (os.cpu_count() or 1)) if self.use_async_envs else SYNC_BATCH
            self.batch_size = max(1, min(parallel, self.n_episodes, 64))
        if self.output_dir is None:
            self.output_dir = f"outputs/steer_eval/{dt.datetime.now():%Y-%m-%d/%H-%M-%S}"


def evaluate(cfg: SteerEvalConfig) -> dict:
    """Load and check every checkpoint, roll each out on the same seeds, write the report."""
    from lerobot.utils.random_utils import set_seed

    from .loading import load_policy, unique_labels

    output_dir = Path(cfg.output_dir)
    labels = unique_labels(cfg.policy_paths)
    # Load all first: a feature mismatch or a missing file fails before any episode runs.
    policies = [load_policy(p, cfg.env, cfg.device, label) for p, label in zip(cfg.policy_paths, labels, strict=True)]
    seeds = [cfg.seed + i for i in range(cfg.n_episodes)]
    runs = []
    for put in policies:
        set_seed(cfg.seed)  # the same sampling noise stream for every checkpoint
        recorder = VideoRecorder(cfg.videos, output_dir / "videos", put.label, cfg.env.fps)
        episodes = run_episodes(put, cfg.env, seeds, cfg.batch_size, cfg.use_async_envs,
                                recorder=recorder, progress=cfg.progress)
        runs.append({"label": put.label, "path": put.path, "policy_type": put.policy_type, "episodes": episodes})
    report = build_report(runs, config_as_kwargs(cfg.env), seeds)
    paths = write_outputs(report, output_dir)
    print(markdown_table(report))
    print(f"Report: {paths['json']}, {paths['markdown']}, {paths['chart']}")
    return report


def main(args: list[str] | None = None):
    from lerobot.utils.import_utils import register_third_party_plugins

    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("MUJOCO_GL", "egl")
    register_third_party_plugins()  # other plugins' policy types, as lerobot-eval loads them
    # User errors (bad flags, a missing checkpoint folder, a feature mismatch): `error: <message>`, exit 2.
    run_command(lambda: evaluate(draccus.parse(config_class=SteerEvalConfig, args=args)))


if __name__ == "__main__":
    main()
