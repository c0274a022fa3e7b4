"""Speed of the SO-101 sim, measured side by side in one run on this machine.

Prints:
- env steps/s with state observations against raw `mj_step` throughput on the same model and the
  same number of physics substeps per control step (the overhead ratio; goal <= 1.3x),
- env steps/s with two cameras at 96x128 and at 480x640 (goal >= 100 steps/s at 96x128 on one core),
  next to raw frame pairs/s on the same scene and size (what rendering alone costs) of a
  `mujoco.Renderer` read camera by camera and of the env's `CameraStrip` (both cameras drawn side by
  side, read back once), with the cameras' MSAA off (the default) and at MuJoCo's default of 4 samples,
- env steps/s of the 96x128 two-camera env in an async vector env of one worker process per core
  (gymnasium's `AsyncVectorEnv`, what `lerobot-steer-rl --async_envs=true` uses), next to one env
  in this process: rendering is the cost, and this is how it uses both cores,
- scripted-expert dataset generation in episodes per minute (state-only and with two 96x128 cameras).

    MUJOCO_GL=egl python scripts/benchmark_sim.py [--steps 3000] [--json out.json]

Everything but the async row runs in one process on one core (torch and the renderer are not
multithreaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

from lerobot_steer.sim.camera_strip import CameraStrip
from lerobot_steer.sim.generate import GenerateConfig, generate
from lerobot_steer.sim.pick_place_env import PickPlaceConfig, SO101PickPlaceEnv


def raw_physics_steps_per_s(env: SO101PickPlaceEnv, control_steps: int) -> float:
    """Control steps/s of bare `mj_step` (same model, same substeps, same ctrl), no Python env logic."""
    model, data = env.model, mujoco.MjData(env.model)
    data.qpos[:] = env.data.qpos
    data.ctrl[:] = env.data.ctrl
    n = env.config.physics_substeps
    t0 = time.perf_counter()
    for _ in range(control_steps):
        mujoco.mj_step(model, data, nstep=n)
    return control_steps / (time.perf_counter() - t0)


def env_steps_per_s(env: SO101PickPlaceEnv, control_steps: int, seed: int = 0) -> float:
    """Env steps/s holding a fixed joint target (episodes restart on truncation; reset time counted)."""
    obs, _ = env.reset(seed=seed)
    action = obs["agent_pos"].copy()
    t0 = time.perf_counter()
    for _ in range(control_steps):
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return control_steps / (time.perf_counter() - t0)


def raw_render_pairs_per_s(env: SO101PickPlaceEnv, frames: int) -> float:
    """Two-camera frame pairs/s of a bare renderer on the env's model and size, no env logic."""
    renderer = env._make_renderer(env.config.image_height, env.config.image_width, samples=env.config.camera_multisamples)
    t0 = time.perf_counter()
    for _ in range(frames):
        for cam in env.config.cameras:
            renderer.update_scene(env.data, camera=cam)
            renderer.render()
    rate = frames / (time.perf_counter() - t0)
    renderer.close()
    return rate


def raw_strip_pairs_per_s(env: SO101PickPlaceEnv, frames: int) -> float:
    """Two-camera frame pairs/s of a bare `CameraStrip` (what the env renders with), no env logic."""
    cfg = env.config
    strip = CameraStrip(env.model, cfg.cameras, cfg.image_height, cfg.image_width, samples=cfg.camera_multisamples)
    t0 = time.perf_counter()
    for _ in range(frames):
        strip.render(env.data)
    rate = frames / (time.perf_counter() - t0)
    strip.close()
    return rate


def _pixel_env(**kwargs) -> SO101PickPlaceEnv:
    return SO101PickPlaceEnv(obs_type="pixels", image_height=96, image_width=128, **kwargs)


def async_env_steps_per_s(n_envs: int, control_steps: int) -> float:
    """Env steps/s (all workers together) of `n_envs` two-camera 96x128 envs, each in its own process,
    holding their joint targets; worker start-up and GL context creation are outside the window."""
    envs = gym.vector.AsyncVectorEnv([_pixel_env] * n_envs, context="forkserver")
    try:
        obs, _ = envs.reset(seed=0)
        action = np.asarray(obs["agent_pos"]).copy()
        for _ in range(10):  # warm-up: each worker renders its first frames
            envs.step(action)
        steps = max(control_steps // n_envs, 1)
        t0 = time.perf_counter()
        for _ in range(steps):
            envs.step(action)
        return steps * n_envs / (time.perf_counter() - t0)
    finally:
        envs.close()


def generation_episodes_per_min(env_cfg: PickPlaceConfig, episodes: int) -> float:
    tmp = tempfile.mkdtemp()
    try:
        _, report = generate(GenerateConfig(repo_id="local/bench", root=f"{tmp}/ds", num_episodes=episodes, env=env_cfg))
        return report["episodes_per_minute"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="control steps per state-obs measurement")
    parser.add_argument("--episodes", type=int, default=10, help="expert episodes per generation measurement")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    results: dict[str, float] = {}
    state_env = SO101PickPlaceEnv(obs_type="state")
    state_env.reset(seed=0)
    # Interleave repeats so both sides see the same machine load; keep the best of each.
    raw, ours = [], []
    for _ in range(3):
        raw.append(raw_physics_steps_per_s(state_env, args.steps))
        ours.append(env_steps_per_s(state_env, args.steps))
    results["raw_mj_step_control_steps_per_s"] = max(raw)
    results["env_state_steps_per_s"] = max(ours)
    results["env_overhead_ratio"] = max(raw) / max(ours)

    for samples in (0, 4):
        for h, w in [(96, 128), (480, 640)]:
            env = SO101PickPlaceEnv(obs_type="pixels", image_height=h, image_width=w, camera_multisamples=samples)
            n = max(args.steps // (10 if h > 100 else 3), 50)
            env_steps_per_s(env, 20)  # warm-up: GL context creation
            results[f"env_2cams_{h}x{w}_msaa{samples}_steps_per_s"] = env_steps_per_s(env, n)
            results[f"raw_render_2cams_{h}x{w}_msaa{samples}_pairs_per_s"] = raw_render_pairs_per_s(env, n)
            results[f"raw_strip_2cams_{h}x{w}_msaa{samples}_pairs_per_s"] = raw_strip_pairs_per_s(env, n)
            env.close()

    cores = os.cpu_count() or 1
    pixel_steps = max(args.steps // 3, 50)
    single = _pixel_env()
    env_steps_per_s(single, 20)
    results["env_2cams_96x128_one_process_steps_per_s"] = env_steps_per_s(single, pixel_steps)
    single.close()
    results[f"env_2cams_96x128_async_{cores}_workers_steps_per_s"] = async_env_steps_per_s(cores, pixel_steps)

    results["expert_episodes_per_min_state"] = generation_episodes_per_min(PickPlaceConfig(obs_type="state"), args.episodes)
    results["expert_episodes_per_min_2cams_96x128_video"] = generation_episodes_per_min(
        PickPlaceConfig(obs_type="pixels_state"), args.episodes
    )

    substeps = state_env.config.physics_substeps
    print(f"\nSO-101 sim benchmark ({substeps} physics substeps per 30 fps control step, one process)")
    print(f"  raw mj_step                 : {results['raw_mj_step_control_steps_per_s']:10.0f} control steps/s")
    print(f"  env, state obs              : {results['env_state_steps_per_s']:10.0f} steps/s  "
          f"(overhead {results['env_overhead_ratio']:.2f}x raw physics; goal <= 1.3x)")
    for samples in (0, 4):
        for h, w in [(96, 128), (480, 640)]:
            key = f"{h}x{w}_msaa{samples}"
            env_rate, raw_rate = results[f"env_2cams_{key}_steps_per_s"], results[f"raw_render_2cams_{key}_pairs_per_s"]
            strip_rate = results[f"raw_strip_2cams_{key}_pairs_per_s"]
            print(f"  env, 2 cameras {h}x{w}, MSAA {samples}: {env_rate:8.0f} steps/s  vs raw renderer per camera {raw_rate:6.0f} "
                  f"frame pairs/s ({env_rate / raw_rate:.2f}x), raw strip {strip_rate:6.0f} ({env_rate / strip_rate:.2f}x)"
                  + ("  (default; goal >= 100)" if key == "96x128_msaa0" else ""))
    one, both = results["env_2cams_96x128_one_process_steps_per_s"], results[f"env_2cams_96x128_async_{cores}_workers_steps_per_s"]
    print(f"  env, 2 cameras 96x128, async x{cores}: {both:6.0f} steps/s  vs one process {one:6.0f} steps/s "
          f"({both / one:.2f}x; goal >= 300 steps/s on 2 cores)")
    print(f"  expert dataset, state       : {results['expert_episodes_per_min_state']:10.1f} episodes/min")
    print(f"  expert dataset, 2 cams video: {results['expert_episodes_per_min_2cams_96x128_video']:10.1f} episodes/min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
