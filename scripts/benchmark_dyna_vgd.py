"""What value guidance costs: `dyna_vgd` sampling and training time, measured on CPU in one run.

Goals (issue 11): a guided decode (guidance on the last k = 3 denoising steps) takes <= 2x the
unguided decode, and a `dyna_vgd` training step takes <= 1.5x a LeRobot `diffusion` training step on
the same dataset and batch size.

1. Sampling latency, in process: `DynaVGDPolicy.predict_action_chunk` with guidance on and off
   (`guide_actions`), over a state-input LeRobot `DiffusionPolicy` built from config with LeRobot's
   default sizes (U-Net down_dims (512, 1024, 2048), horizon 64, 32 executed steps, 2 observation
   steps; observation.state (6) + environment_state (10) -> 6-d actions; random weights: latency does
   not depend on them), deterministic DDIM with 4 and 8 steps, batch 1 and 64. The bare LeRobot
   `predict_action_chunk` of the same base is timed too at small batches, for reference (the
   unguided dyna_vgd decode is that same call through the adapter). A guided step costs one
   critic forward + backward (4 heads, 3 x 256) on the step's own clean-action estimate and no extra
   U-Net call, so the ratio tends to 1 as the U-Net grows. Guided and unguided samples are
   interleaved (alternating which goes first) so that both see the same machine load.

2. Training step time, through `lerobot-train` itself on a dataset made by the repo's generator
   (`lerobot_steer.sim.generate`, state observations): `--policy.type=diffusion`, then
   `--policy.type=dyna_vgd` with `base_mode=bc` (the same diffusion trained by BC plus the critics'
   TD step) and with `base_mode=frozen` over the diffusion run's checkpoint (critics only), all with
   the same batch size. Per-step `updt_s` (forward, backward, clip, optimizer step: LeRobot's
   `update_policy`) and `data_s` are read from lerobot-train's log (`--log_freq=1`), first
   `--warmup` steps dropped, median taken. The dyna_vgd TD target needs a guided decode of the base
   at the chunk-end observation for every sample of every step (as the VGD reference code does, DozenDucc/VGD):
   N no-grad U-Net forwards against diffusion's one forward + backward, so the ratio grows with the
   number of denoising steps N (`--train_inference_steps`).

The default run takes about 5 minutes on 2 loaded cores (one thread): sampling at LeRobot's default
size with one paired sample per figure (a batch-64 decode of that U-Net takes 15-30 s), training at the demo's diffusion size (down_dims (64, 128, 256), horizon
16, 8 executed) with batch 64. Longer runs:

    python scripts/benchmark_dyna_vgd.py [--repeats 3] [--train_size lerobot] [--train_steps 20]
        [--batch_sizes 1 64] [--inference_steps 4 8] [--train_inference_steps 4 8] [--json out.json]

On a shared machine read the ratios, not the absolute times (the load average is printed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

from lerobot_steer.policies.dyna_vgd import DynaVGDConfig, DynaVGDPolicy
from lerobot_steer.steering import BasePolicyAdapter
from lerobot_steer.steering.tiny_bases import ACTION, ENV, STATE, batch_maker

SAMPLING_GOAL = 2.0  # guided decode <= 2x the unguided one (k = 3 guided steps)
TRAINING_GOAL = 1.5  # dyna_vgd step <= 1.5x diffusion's
GUIDED_LAST_K = 3
BIN = Path(sys.executable).parent

# Diffusion sizes (DiffusionConfig fields). "lerobot": LeRobot 0.6.1's defaults; "demo": the base the
# repo's demo trains.
SIZES = {
    "lerobot": {},
    "demo": {"horizon": 16, "n_action_steps": 8, "down_dims": (64, 128, 256)},
}


def describe(config: DiffusionConfig) -> str:
    return (f"U-Net down_dims {tuple(config.down_dims)}, horizon {config.horizon}, {config.n_action_steps} executed, "
            f"{config.n_obs_steps} obs steps")


# ------------------------------------------------------------------------------------ 1. sampling


def diffusion_config(size: str) -> DiffusionConfig:
    return DiffusionConfig(
        device="cpu", pretrained_backbone_weights=None,
        input_features={STATE: PolicyFeature(FeatureType.STATE, (6,)), ENV: PolicyFeature(FeatureType.ENV, (10,))},
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (6,))},
        **SIZES[size],
    )


def _timed(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def paired_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; samples interleaved, rotating the order per repeat."""
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            samples[n].append(_timed(fns[n], 1))
    return {n: statistics.median(s) for n, s in samples.items()}


@torch.no_grad()
def measure_sampling(size: str, batch_sizes: list[int], inference_steps: list[int], repeats: int,
                     bare_batch_max: int) -> tuple[dict, str]:
    torch.manual_seed(0)
    bare = DiffusionPolicy(diffusion_config(size)).eval()
    description = f"{describe(bare.config)}; {sum(p.numel() for p in bare.parameters()) / 1e6:.0f}M params"
    results: dict[str, dict] = {}
    for steps in inference_steps:
        base = copy.deepcopy(bare)
        policy = DynaVGDPolicy(
            DynaVGDConfig(device="cpu", guidance_last_k=GUIDED_LAST_K, guidance_scale=0.005),
            base_adapter=BasePolicyAdapter.from_policy(base, num_inference_steps=steps),
        ).eval()
        reference = copy.deepcopy(base)  # LeRobot's own loop, same DDIM scheduler and steps
        make_batch = batch_maker(bare)
        for b in batch_sizes:
            t0 = time.perf_counter()
            obs = make_batch(b, 0)
            history = policy._as_history(obs)  # (B, n_obs_steps, ...) as after a reset: no queue effects
            noise = policy.adapter.sample_noise(b, generator=torch.Generator().manual_seed(1))

            def decode(guided: bool):
                def run():
                    policy.config.guide_actions = guided
                    return policy.predict_action_chunk(history, noise=noise)
                return run

            def bare_decode():
                reference.reset()
                return reference.predict_action_chunk(history, noise=noise)

            fns = {"guided": decode(True), "unguided": decode(False)}
            if b <= bare_batch_max:
                fns["bare"] = bare_decode
            if b == min(batch_sizes):
                decode(True)()  # warm-up (allocator, autograd): once, at the cheapest batch
            med = paired_medians(fns, repeats)
            results[f"{steps}/{b}"] = {
                "steps": steps, "batch": b, "guided_ms": 1e3 * med["guided"], "unguided_ms": 1e3 * med["unguided"],
                "bare_base_ms": 1e3 * med["bare"] if "bare" in med else None, "ratio": med["guided"] / med["unguided"],
            }
            print(f"  sampling: {steps} DDIM steps, batch {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    return results, description


# ------------------------------------------------------------------------------------ 2. training


def generate_dataset(root: Path, episodes: int) -> None:
    from lerobot_steer.sim.generate import GenerateConfig, generate
    from lerobot_steer.sim.pick_place_env import PickPlaceConfig

    generate(GenerateConfig(repo_id="local/so101_bench", root=str(root), num_episodes=episodes, seed=7,
                            env=PickPlaceConfig(obs_type="state")))


def size_flags(prefix: str, size: str) -> list[str]:
    flags = [f"{prefix}pretrained_backbone_weights=null"]
    for name, value in SIZES[size].items():
        value = f"[{','.join(map(str, value))}]" if isinstance(value, tuple) else value
        flags.append(f"{prefix}{name}={value}")
    return flags


def lerobot_train(policy_flags: list[str], data: Path, out: Path, batch_size: int, steps: int,
                  threads: int) -> list[tuple[float, float]]:
    """Run lerobot-train; (updt_s, data_s) of every logged step."""
    cmd = [str(BIN / "lerobot-train"), *policy_flags, "--policy.device=cpu", "--policy.push_to_hub=false",
           "--dataset.repo_id=local/so101_bench", f"--dataset.root={data}", f"--batch_size={batch_size}",
           f"--steps={steps}", f"--save_freq={steps}", "--log_freq=1", "--num_workers=0", "--env_eval_freq=0",
           "--wandb.enable=false", f"--output_dir={out}"]
    # One OpenMP thread per run: on a shared machine, spinning OpenMP workers that compete with other
    # processes for the cores make step times erratic (seconds instead of milliseconds).
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, env=env)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"lerobot-train failed:\n{' '.join(cmd)}\n{log[-3000:]}")
    return [(float(u), float(d)) for u, d in re.findall(r" updt_s:([\d.]+) data_s:([\d.]+)", log)]


def measure_training(size: str, batch_size: int, steps: int, warmup: int, inference_steps: list[int],
                     episodes: int, workdir: Path, threads: int) -> tuple[dict, str]:
    data = workdir / "data"
    t0 = time.perf_counter()
    generate_dataset(data, episodes)
    print(f"  dataset: {episodes} expert episodes in {time.perf_counter() - t0:.0f} s", flush=True)
    runs: dict[str, list[str]] = {"diffusion": ["--policy.type=diffusion", *size_flags("--policy.", size)]}
    base_ckpt = workdir / "diffusion" / "checkpoints" / "last" / "pretrained_model"
    for n in inference_steps:
        runs[f"dyna_vgd bc, DDIM {n}"] = ["--policy.type=dyna_vgd", "--policy.base_mode=bc",
                                          f"--policy.num_inference_steps={n}", *size_flags("--policy.diffusion.", size)]
        runs[f"dyna_vgd frozen, DDIM {n}"] = ["--policy.type=dyna_vgd", f"--policy.base_policy_path={base_ckpt}",
                                              f"--policy.num_inference_steps={n}"]
    results = {}
    for i, (name, flags) in enumerate(runs.items()):
        t0 = time.perf_counter()
        logged = lerobot_train(flags, data, workdir / ("diffusion" if i == 0 else f"run{i}"), batch_size, steps,
                               threads)[warmup:]
        update = statistics.median(u for u, _ in logged)
        data_s = statistics.median(d for _, d in logged)
        results[name] = {"update_s": update, "data_s": data_s, "steps_per_s": 1 / (update + data_s), "samples": len(logged)}
        print(f"  training: {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    ref = results["diffusion"]
    for r in results.values():
        r["update_ratio"] = r["update_s"] / ref["update_s"]
        r["step_ratio"] = (r["update_s"] + r["data_s"]) / (ref["update_s"] + ref["data_s"])
    description = f"{describe(DiffusionConfig(device='cpu', **SIZES[size]))}, batch {batch_size}, {episodes} episodes"
    return results, description


# ------------------------------------------------------------------------------------------ report


def report(sampling, sampling_desc, training, training_desc, threads, loads) -> None:
    print(f"\ndyna_vgd cost on CPU (torch threads = {threads} everywhere; "
          f"load average before/after: {loads[0]:.2f} / {loads[1]:.2f})")
    print(f"\n1. Sampling latency, guidance on the last {GUIDED_LAST_K} steps ({sampling_desc})\n")
    header = f"{'DDIM steps':>10} {'batch':>5} | {'bare base ms':>12} {'unguided ms':>11} {'guided ms':>10} | {'guided/unguided':>15}"
    print(header)
    print("-" * len(header))
    for r in sampling.values():
        bare = "-" if r["bare_base_ms"] is None else f"{r['bare_base_ms']:.1f}"
        print(f"{r['steps']:>10} {r['batch']:>5} | {bare:>12} {r['unguided_ms']:>11.1f} "
              f"{r['guided_ms']:>10.1f} | {r['ratio']:>14.3f}x")
    worst = max(r["ratio"] for r in sampling.values())
    print(f"Verdict: worst guided/unguided {worst:.3f}x: {'MEETS' if worst <= SAMPLING_GOAL else 'MISSES'} "
          f"the goal (<= {SAMPLING_GOAL}x)")
    if training is None:
        return
    print(f"\n2. lerobot-train step time, same dataset and batch size ({training_desc})\n")
    header = (f"{'policy':<26} | {'update s':>8} {'data s':>7} {'steps/s':>7} | {'update / diffusion':>18} "
              f"{'step / diffusion':>16}")
    print(header)
    print("-" * len(header))
    for name, r in training.items():
        print(f"{name:<26} | {r['update_s']:>8.3f} {r['data_s']:>7.3f} {r['steps_per_s']:>7.2f} | "
              f"{r['update_ratio']:>17.2f}x {r['step_ratio']:>15.2f}x")
    print(f"Verdict (goal: a dyna_vgd step <= {TRAINING_GOAL}x diffusion's):")
    for name, r in training.items():
        if name != "diffusion":
            verdict = "MEETS" if r["step_ratio"] <= TRAINING_GOAL else "MISSES"
            print(f"  {name:<26} {verdict} the goal ({r['step_ratio']:.2f}x per step)")
    print("  A dyna_vgd step decodes the base at every sample's chunk-end observation (N no-grad U-Net forwards) "
          "for the TD target; diffusion's step is one U-Net forward + backward.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="lerobot", choices=list(SIZES), help="diffusion size for sampling")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--inference_steps", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved samples per sampling figure (median)")
    parser.add_argument("--bare_batch_max", type=int, default=8,
                        help="time the bare LeRobot base too at batch sizes up to this (a reference column)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for sampling and OMP_NUM_THREADS for the lerobot-train runs")
    parser.add_argument("--train_size", default="demo", choices=list(SIZES), help="diffusion size for training")
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--train_steps", type=int, default=8, help="lerobot-train steps per policy")
    parser.add_argument("--warmup", type=int, default=2, help="first logged steps left out of the medians")
    parser.add_argument("--train_inference_steps", nargs="+", type=int, default=[4], help="dyna_vgd DDIM steps")
    parser.add_argument("--episodes", type=int, default=10, help="expert episodes in the generated dataset")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.train_steps <= args.warmup:
        parser.error("--train_steps must exceed --warmup")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    sampling, sampling_desc = measure_sampling(args.size, args.batch_sizes, args.inference_steps, args.repeats,
                                               args.bare_batch_max)
    training = training_desc = None
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as workdir:
            training, training_desc = measure_training(
                args.train_size, args.train_batch_size, args.train_steps, args.warmup, args.train_inference_steps,
                args.episodes, Path(workdir), args.threads,
            )
    loads = (load_before, os.getloadavg()[0])
    report(sampling, sampling_desc, training, training_desc, args.threads, loads)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load_average": list(loads), "sampling": sampling,
                       "sampling_base": sampling_desc, "training": training, "training_setup": training_desc}, f,
                      indent=2, default=str)


if __name__ == "__main__":
    main()
