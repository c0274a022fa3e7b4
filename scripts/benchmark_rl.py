"""Throughput of the whole online loop (`lerobot-steer-rl`) on this machine's CPU, and where it goes.

Goal (issue: online RL): >= 300 env steps/s for `dsrl` with a state-based diffusion base on 2 cores,
and near-linear scaling in `n_envs` until the cores are used. For reference, LeRobot's own actor runs
gym-hil at about 1 step/s here with images, and the research log we started from reports 3 steps/s.

What runs: the real loop (`lerobot_steer.rl.train.train`) in this process, on the SO-101 sim with state
observations, steering a random-weight diffusion base of the demo's size (U-Net 64-128-256, horizon 16,
8 executed steps, DDIM 10 steps; latency does not depend on the weights) with DSRL's default networks
(3 x 256). Each configuration prefills, then trains; the figure is the env-steps/s of the training
window only (after prefill), with the loop's own breakdown: physics (env.step incl. the sim's
bookkeeping), inference (preprocessing + actor + base decode for acting), updates (gradient steps),
other (buffer, checkpoints). Checkpoints and evaluation are off.

    python scripts/benchmark_rl.py [--n_envs 1 2 4 8] [--steps 4096] [--variants sac na na_reference] [--na_aliases 4 2] [--threads 2]

Read the ratios if the machine is shared (the load average is printed).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch

from lerobot_steer.policies.dsrl import DSRLConfig
from lerobot_steer.rl.config import OnlineEvalConfig, SteerRLConfig
from lerobot_steer.rl.train import train
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering.tiny_bases import save_base, sim_state_diffusion

GOAL = 300.0


def run(base: Path, out: Path, variant: str, n_envs: int, steps: int, prefill: int, utd: float, batch: int,
        na_aliases: int | None = None) -> dict:
    # na: lerobot-steer-rl's DSRL-NA (aliases decoded while acting, noise-critic bootstrap);
    # na_reference: the reference's DSRL-NA, two base decodes of the batch in every update.
    reference = {"na_aliases": 0, "na_bootstrap": "decode"} if variant == "na_reference" else {}
    if na_aliases is not None:  # only set for the na variant
        reference["na_aliases"] = na_aliases
    cfg = SteerRLConfig(
        policy=DSRLConfig(base_policy_path=str(base), device="cpu", variant=variant.removesuffix("_reference"),
                          **reference),
        env=SO101SimEnvConfig(obs_type="state"), n_envs=n_envs, steps=prefill + steps, prefill_steps=prefill,
        utd_ratio=utd, batch_size=batch, log_freq=prefill + steps if steps <= prefill else prefill, save_freq=10**9,
        eval=OnlineEvalConfig(n_episodes=0), output_dir=out, progress=False,
    )
    t0 = time.perf_counter()
    row = train(cfg)
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_envs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--variants", nargs="+", default=["sac", "na"], choices=["sac", "na", "na_reference"],
                        help="na_reference: DSRL-NA decoding the base in every update (about 12 env steps/s)")
    parser.add_argument("--na_n_envs", type=int, default=8, help="DSRL-NA (slow updates) only at this n_envs")
    parser.add_argument("--steps", type=int, default=4096, help="training env steps after prefill")
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--utd", type=float, default=None,
                        help="gradient steps per chunk transition (default: each variant's lerobot-steer-rl default)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--na_aliases", type=int, nargs="+", default=[None],
                        help="DSRL-NA prior noises decoded beside each acting decode (default: the config's); "
                             "several values run side by side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        base = save_base(*sim_state_diffusion(), Path(tmp) / "base")
        print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads: {torch.get_num_threads()}")
        runs = [(v, n, None) for v in args.variants if v != "na" for n in (args.n_envs if v == "sac" else [args.na_n_envs])]
        if "na" in args.variants:
            runs += [("na", args.na_n_envs, k) for k in args.na_aliases]
        # Updates start once the buffer holds a batch: one transition per 8-step chunk of one env, so a
        # batch of B transitions takes 8 * B env steps whatever n_envs is.
        prefill = max(args.prefill, 8 * args.batch_size)
        for variant, n, aliases in runs:
            name = variant if aliases is None else f"{variant} (na_aliases={aliases})"
            row = run(base, Path(tmp) / f"{variant}_{n}_{aliases}", variant, n, args.steps, prefill, args.utd,
                      args.batch_size, aliases)
            results.append((name, n, row))
            print(f"dsrl-{name} n_envs={n}: {row['env_steps_per_s']:.0f} env steps/s, "
                  f"{row['updates']} updates", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    print(f"| variant | n_envs | env steps/s | x n_envs=1 | physics | inference | updates | other | goal >= {GOAL:.0f} |")
    print("|---|---|---|---|---|---|---|---|---|")
    single = {v: r["env_steps_per_s"] for v, n, r in results if n == 1}
    for variant, n, row in results:
        sps = row["env_steps_per_s"]
        scale = f"{sps / single[variant]:.2f}x" if variant in single else "-"
        shares = [f"{row[f'time_share/{k}']:.0%}" for k in ("physics", "inference", "updates", "other")]
        print(f"| dsrl-{variant} | {n} | {sps:.0f} | {scale} | {' | '.join(shares)} | {'yes' if sps >= GOAL else 'no'} |")
    utd = "each variant's default" if args.utd is None else args.utd
    print(f"\n(training window only; utd {utd} gradient steps per chunk transition, batch {args.batch_size})")


if __name__ == "__main__":
    main()
