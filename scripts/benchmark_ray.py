"""Throughput of `lerobot-steer-rl --runtime=ray` against the local loop, in one run on this machine.

What runs: the real training loop (`lerobot_steer.rl.train.train`) on the SO-101 sim with state
observations, steering a random-weight diffusion base of the demo's size (U-Net 64-128-256, horizon
16, 8 executed steps, DDIM 10 steps) with DSRL-SAC's defaults, once locally and once per number of
Ray workers (each worker with `--n_envs` envs, one CPU). Two windows per run, from its own log rows:

* collection: the prefill (base on N(0, I) noise, no updates): acting + physics + the transfer to the
  learner. At 1 worker this is where Ray's overhead shows (serialization, scheduling);
* training: after the prefill, at the default update ratio: acting in the workers overlaps the
  learner's gradient steps, which the one-process loop runs in turn.

The first log window (Ray and worker start-up, process imports) is left out. Then a scaling model for
a cluster, from the measured parts: workers x one worker's collection rate, capped by what the
learner absorbs (its gradient steps per second / utd x chunk length), and the bytes per weight
broadcast.

    python scripts/benchmark_ray.py [--workers 1 2] [--n_envs 8] [--window 2048]

On a 2-core machine more than one worker competes with the learner for the cores: read the ratios
as this machine's, and the model for machines with a core per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import ray
import torch

from lerobot_steer.policies.dsrl import DSRLConfig
from lerobot_steer.rl.config import OnlineEvalConfig, RayRuntimeConfig, SteerRLConfig
from lerobot_steer.rl.train import train
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering.tiny_bases import save_base, sim_state_diffusion

OVERHEAD_GOAL = 1.15


def run(base: Path, out: Path, runtime: str, workers: int, n_envs: int, window: int, threads: int) -> list[dict]:
    """Windows: [start-up, collection, collection, training, training]; returns the log rows."""
    torch.set_num_threads(threads)
    cfg = SteerRLConfig(
        policy=DSRLConfig(base_policy_path=str(base), device="cpu"), env=SO101SimEnvConfig(obs_type="state"),
        n_envs=n_envs, steps=5 * window, prefill_steps=3 * window, log_freq=window, save_freq=10**9,
        eval=OnlineEvalConfig(n_episodes=0), output_dir=out, progress=False, runtime=runtime,
        ray=RayRuntimeConfig(num_workers=workers),
    )
    train(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n_envs", type=int, default=8, help="envs per worker, and of the local loop")
    parser.add_argument("--window", type=int, default=2048, help="env steps per measured window (>= 256 x 8 / 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the learner / local loop "
                        "(a worker uses one per CPU it reserves)")
    args = parser.parse_args()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        base = save_base(*sim_state_diffusion(), Path(tmp) / "base")
        print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; learner threads {args.threads}")
        # "local, 1 thread" acts with the compute one worker has (one CPU): Ray's overhead is measured against it.
        runs = [("local", "local", 0, args.threads), ("local, 1 thread", "local", 0, 1)]
        runs += [(f"ray x{w}", "ray", w, args.threads) for w in args.workers]
        for name, runtime, workers, threads in runs:
            t0 = time.perf_counter()
            folder = Path(tmp) / name.replace(" ", "_").replace(",", "")
            results[name] = run(base, folder, runtime, workers, args.n_envs, args.window, threads)
            print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    local = results["local"]
    collect_local, train_local = local[2]["env_steps_per_s"], local[4]["env_steps_per_s"]
    print("| runtime | collection env steps/s | local / this | training env steps/s | this / local | staleness (grad steps) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        collect, training = rows[2]["env_steps_per_s"], rows[4]["env_steps_per_s"]
        stale = f"{rows[4]['ray/staleness_mean']:.0f} (max {rows[4]['ray/staleness_max']})" if "ray/staleness_mean" in rows[4] else "-"
        print(f"| {name} | {collect:.0f} | {collect_local / collect:.2f}x | {training:.0f} | {training / train_local:.2f}x | {stale} |")
    one = results.get("ray x1")
    if one is not None:
        overhead = results["local, 1 thread"][2]["env_steps_per_s"] / one[2]["env_steps_per_s"]
        verdict = "met" if overhead <= OVERHEAD_GOAL else "not met"
        print(f"\nRay's overhead at 1 worker (collection time of 1 worker / the local loop's at the same 1 thread): "
              f"{overhead:.2f}x, goal <= {OVERHEAD_GOAL}x: {verdict}")

    # Scaling model from the measured parts.
    row = local[4]
    updates_in_window = row["updates"] - local[3]["updates"]
    update_seconds = args.window / row["env_steps_per_s"] * row["time_share/updates"]
    learner_updates_per_s = updates_in_window / update_seconds
    utd = updates_in_window / (args.window / 8)  # transitions are 8-step chunks
    learner_cap = learner_updates_per_s / utd * 8
    worker_rate = one[2]["env_steps_per_s"] if one is not None else collect_local
    last_ray = results[next(n for n in results if n.startswith("ray"))][-1]
    mb_per_broadcast = last_ray["ray/broadcast_mb"] / max(1, last_ray["ray/broadcasts"])
    print("\nScaling model for a cluster (one CPU per worker, the learner on its own machine):")
    print(f"- one worker collects {worker_rate:.0f} env steps/s ({args.n_envs} envs, base decode + physics)")
    print(f"- the learner makes {learner_updates_per_s:.0f} gradient steps/s here; at utd {utd:.1f} per 8-step chunk "
          f"it absorbs {learner_cap:.0f} env steps/s")
    print(f"- so W workers give min(W x {worker_rate:.0f}, {learner_cap:.0f}) env steps/s: the learner saturates "
          f"at W = {max(1, round(learner_cap / worker_rate))} (a GPU learner moves the cap up)")
    print(f"- each weight broadcast is {mb_per_broadcast:.2f} MB (DSRL's noise actor; the base never moves), "
          f"at most one per returned batch ({utd * args.n_envs:.0f} gradient steps): "
          f"{mb_per_broadcast * learner_updates_per_s / max(utd * args.n_envs, 1):.1f} MB/s in all at the learner's pace "
          f"(an object-store reference per worker, one copy per node)")


if __name__ == "__main__":
    main()
