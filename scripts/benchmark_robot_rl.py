"""Frame-time jitter of `lerobot-steer-rl-robot`'s control loop: updates between episodes vs in a background thread.

On the `so101_sim` robot, paced in wall-clock time (`--realtime=true`) at `--fps`, the same run twice in one
process: DSRL-SAC over a random-weight diffusion base with a front camera, `--prefill_episodes` episodes
on the base's noise, then episodes whose updates (`--utd_ratio` per stored chunk transition) run either
after each episode (between_episodes) or in a thread during the next ones (background). Printed side
by side: the period between consecutive frame starts (p50, p99, max, in ms) against the 1/fps budget,
the share of frames over 1.1 x budget, the updates made, and the wall time spent between episodes
(where between_episodes pays its updates while the arm waits). Frames of the prefill episodes are
left out (no update runs then in either mode).

    python scripts/benchmark_robot_rl.py [--fps 10] [--episodes 5] [--prefill_episodes 1]
                                         [--episode_time_s 3] [--utd_ratio 2] [--threads 1]

On a shared machine the load average (printed) moves the tails; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_steer.policies.dsrl.configuration_dsrl import DSRLConfig
from lerobot_steer.record.eval_config import ResetConfig
from lerobot_steer.record.keys import ScriptedKeys
from lerobot_steer.rl import robot_loop
from lerobot_steer.rl.robot_config import RobotRLConfig
from lerobot_steer.sim.robot import SimCameraConfig, SO101SimConfig
from lerobot_steer.steering.tiny_bases import save_base, tiny_diffusion

H, W = 24, 32


def make_base(folder: Path) -> str:
    """A random-weight diffusion base: 6 joints + a 24x32 front camera, chunks of 16 with 8 executed, a
    small U-Net and 3 DDIM steps, so that one decode fits in a 10 fps frame on a CPU."""
    torch.manual_seed(0)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
              "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, H, W))}
    save_base(*tiny_diffusion(inputs, action_dim=6, crop_shape=None, horizon=16, n_action_steps=8,
                              down_dims=(16, 32), num_inference_steps=3), folder)
    return str(folder)


def run(mode: str, base: str, folder: Path, args) -> dict:
    periods: list[list[float]] = []
    frame_stats = robot_loop.frame_stats

    def spy(p, fps):
        periods.append(list(p))
        return frame_stats(p, fps)

    robot_loop.frame_stats = spy
    cfg = RobotRLConfig(
        robot=SO101SimConfig(cameras={"front": SimCameraConfig(width=W, height=H)}, fps=args.fps, seed=0,
                             calibration_dir=folder / "calibration"),
        policy=DSRLConfig(base_policy_path=base, device="cpu", push_to_hub=False),
        fps=args.fps, episode_time_s=args.episode_time_s, episodes=args.episodes,
        prefill_episodes=args.prefill_episodes, updates=mode, utd_ratio=args.utd_ratio, batch_size=args.batch_size,
        buffer_capacity=10_000, reset=ResetConfig(time_s=0), label_source="sim", realtime=True, play_sounds=False,
        device="cpu", output_dir=folder / mode)
    cfg.outcome.label_wait_s = 0.0
    t0 = time.perf_counter()
    try:
        result = robot_loop.train_on_robot(cfg, key_source=ScriptedKeys([]))
    finally:
        robot_loop.frame_stats = frame_stats
    wall = time.perf_counter() - t0
    ms = np.concatenate([np.asarray(p) for p in periods[args.prefill_episodes:]]) * 1000
    frames_s = args.episodes * args.episode_time_s
    return {"p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99), "max": ms.max(),
            "over": float(np.mean(ms > 1.1 * 1000 / args.fps)), "updates": result["updates"],
            "update_s": result["update_seconds"], "between_s": wall - frames_s, "frames": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--prefill_episodes", type=int, default=1)
    parser.add_argument("--episode_time_s", type=float, default=3.0)
    parser.add_argument("--utd_ratio", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.WARNING)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        base = make_base(Path(tmp) / "base")
        results = {mode: run(mode, base, Path(tmp), args) for mode in ("between_episodes", "background")}
    budget = 1000 / args.fps
    print(f"\n{args.fps} fps (budget {budget:.1f} ms), {args.episodes} episodes of {args.episode_time_s:g} s "
          f"({args.prefill_episodes} prefill, left out), utd {args.utd_ratio:g}, torch threads {args.threads}, "
          f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'':28s}{'between_episodes':>18s}{'background':>14s}")
    rows = [("frame period p50 (ms)", "p50", "{:.1f}"), ("frame period p99 (ms)", "p99", "{:.1f}"),
            ("frame period max (ms)", "max", "{:.1f}"), ("frames > 1.1 x budget", "over", "{:.1%}"),
            ("frames measured", "frames", "{:d}"), ("updates", "updates", "{:d}"),
            ("update time (s)", "update_s", "{:.1f}"), ("time outside episodes (s)", "between_s", "{:.1f}")]
    for label, key, fmt in rows:
        a, b = (fmt.format(results[m][key]) for m in ("between_episodes", "background"))
        print(f"{label:28s}{a:>18s}{b:>14s}")


if __name__ == "__main__":
    main()
