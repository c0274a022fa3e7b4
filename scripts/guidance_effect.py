"""What value guidance does to the executed chunks of a `dyna_vgd` checkpoint, per action dimension.

The guide logs its own step (`acting/guidance_action_shift`: |x0_g - x0_hat| at each guided denoising
step), but the base denoises on from the shifted sample, so the executed chunk can move much more
than one step's shift. This script acts with the checkpoint in the sim (its own acting noise, guided,
as `lerobot-eval` runs it) and, at every chunk, decodes the same noise without guidance. It prints,
per action dimension (normalized units, the base's action space), the mean and 95th percentile of
|guided - unguided| over the executed steps, and the success of the guided episodes.

    python scripts/guidance_effect.py <run>/checkpoints/last/pretrained_model [more checkpoints] \\
        [--chunks 40] [--n_envs 8] [--seed 300000]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from lerobot_steer.rl.acting import SteeringActor
from lerobot_steer.rl.chunk_rollout import ChunkCollector
from lerobot_steer.rl.config import SteerRLConfig
from lerobot_steer.rl.train import build_acting
from lerobot_steer.sim.env_config import SO101SimEnvConfig

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def measure(checkpoint: str, chunks: int, n_envs: int, seed: int) -> dict:
    from lerobot.configs.policies import PreTrainedConfig

    policy_cfg = PreTrainedConfig.from_pretrained(checkpoint)
    policy_cfg.pretrained_path = checkpoint
    cfg = SteerRLConfig(policy=policy_cfg, env=SO101SimEnvConfig(obs_type="state"), n_envs=n_envs)
    policy, _pre, _post, _env_pre, _env_post, envs, actor = build_acting(cfg, n_envs)
    policy.eval()
    shifts: list[np.ndarray] = []
    original = policy.guided_decode

    def recording(obs, noise, *, guide=True):
        chunk, stats = original(obs, noise, guide=guide)
        if guide:
            plain = policy.adapter.sample(obs, noise)[:, : policy.config.n_exec]
            shifts.append((chunk - plain).abs().flatten(0, 1).cpu().numpy())  # (B * n_exec, action_dim)
        return chunk, stats

    policy.guided_decode = recording
    actor: SteeringActor
    actor.mode = "explore"
    collector = ChunkCollector(envs)
    collector.reset(seed=seed)
    successes = []
    with torch.no_grad():
        for _ in range(chunks):
            _, episodes = collector.collect(actor, observe=actor.observe)
            actor.episodes_ended(collector.episode_start)
            successes += [e.success for e in episodes]
    collector.close()
    table = np.concatenate(shifts)
    return {"mean": table.mean(axis=0), "p95": np.percentile(table, 95, axis=0), "episodes": len(successes),
            "success": float(np.mean(successes)) if successes else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--chunks", type=int, default=40, help="chunks per env")
    parser.add_argument("--n_envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=300000, help="first env seed (a tuning set, not held out)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| checkpoint | statistic | " + " | ".join(JOINTS) + " | episodes, success |")
    print("|---|---|" + "---|" * (len(JOINTS) + 1))
    for path in args.checkpoints:
        r = measure(path, args.chunks, args.n_envs, args.seed)
        for stat in ("mean", "p95"):
            cells = " | ".join(f"{v:.3f}" for v in r[stat])
            tail = f"{r['episodes']}, {100 * r['success']:.0f} %" if stat == "mean" else ""
            print(f"| {path} | abs(guided - unguided), {stat} | {cells} | {tail} |")


if __name__ == "__main__":
    main()
