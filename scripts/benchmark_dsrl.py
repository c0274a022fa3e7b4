"""What DSRL steering costs at inference: `dsrl` against its bare base, measured side by side on CPU.

The goal (issue: DSRL policy type) is that steering adds at most 10 % to the base's inference time.
At inference DSRL runs its actor once per chunk (observation -> initial noise) and then the frozen
base exactly once, from that noise instead of a random draw, so the extra cost is the actor plus the
adapter's bookkeeping (its own observation history, shape checks). This script times both sides:

* select_action: per-call latency amortized over whole chunks (a rollout of `--chunks` chunks of
  n_action_steps calls each, from a reset; the per-step queue and history handling is included);
* chunk: the cost of one chunk, i.e. one base decode (`base.predict_action_chunk`) against actor +
  one base decode (`dsrl.predict_action_chunk`), both on the same observations (with the base's
  observation history for diffusion), and the actor alone, for the breakdown.

Bases (random weights: latency does not depend on them):

* diffusion-state: the kind `make demo` trains: observation.state (6) + environment_state (10),
  n_obs_steps 2, horizon 16, n_action_steps 8, U-Net down_dims (64, 128, 256), DDIM 10 steps;
* diffusion-camera: the same U-Net on observation.state + one 96x128 camera (ResNet-18 on 84x84 crops);
* smolvla-tiny, pi0-tiny: the tiny VLAs of the test suite (lerobot_steer.steering.tiny_bases: 64-wide
  one-to-four-layer language models, chunk 8, 4 executed, 3 denoising steps). Real VLAs are hundreds
  of times larger while the actor stays the same size, so their ratios here are upper bounds.

The DSRL side uses DSRLConfig's defaults (actor 3 x 256 with LayerNorm, full-chunk noise, CNN
encoder for cameras). Processors are left out on both sides: they are the same pipelines (DSRL
reuses the base's), so including them would only dilute the ratio.

Measurement: one process, `torch.set_num_threads` fixed (printed); base and dsrl samples are
interleaved, alternating which goes first, so both see the same machine load; each figure is the
median of `--repeats` samples, each sample averaging enough calls to last about `--sample_s`.
The load average is printed before and after: on a shared machine read the ratios, not the
absolute times.

    python scripts/benchmark_dsrl.py [--batch_sizes 1 64] [--bases diffusion-state pi0-tiny]
                                     [--threads 1] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_policy_config

from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy
from lerobot_steer.steering import BasePolicyAdapter
from lerobot_steer.steering.tiny_bases import (
    ACTION,
    CAMERA,
    ENV,
    STATE,
    batch_maker,
    offline_vla_builds,
    tiny_vla,
)

GOAL = 0.10  # steering may add at most 10 % to the base's inference time
BASE_NAMES = ("diffusion-state", "diffusion-camera", "smolvla-tiny", "pi0-tiny")


@dataclass
class Case:
    """One base and the DSRL policy steering an identical copy of it."""

    name: str
    description: str
    base: torch.nn.Module  # the bare LeRobot policy
    dsrl: DSRLPolicy  # steers its own deep copy (the adapter resets its policy's queues on every decode)
    make_batch: Callable[[int, int], dict]  # single-step normalized observations
    n_exec: int
    test_size: bool  # a deliberately tiny stand-in for a much larger real base

    def chunk_batch(self, batch_size: int) -> dict:
        """Observations for one decode: with the base's history (B, n_obs_steps, ...) where it has one,
        so that both sides decode from exactly the same input."""
        batch = self.make_batch(batch_size, 0)
        n = getattr(self.base.config, "n_obs_steps", 1)
        if n == 1:
            return batch
        features = self.base.config.input_features
        return {k: v.unsqueeze(1).expand(v.shape[0], n, *v.shape[1:]).contiguous() if k in features else v
                for k, v in batch.items()}


# ------------------------------------------------------------------------------------------ bases


def demo_diffusion(with_camera: bool):
    """A diffusion base shaped like the one `make demo` trains (random weights)."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,))}
    if with_camera:
        inputs[CAMERA] = PolicyFeature(FeatureType.VISUAL, (3, 96, 128))
    else:
        inputs[ENV] = PolicyFeature(FeatureType.ENV, (10,))
    config = make_policy_config(
        "diffusion", device="cpu", input_features=inputs,
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (6,))},
        n_obs_steps=2, horizon=16, n_action_steps=8, down_dims=(64, 128, 256),
        noise_scheduler_type="DDIM", num_inference_steps=10, pretrained_backbone_weights=None,
    )
    return DiffusionPolicy(config)


def build_case(name: str, vlm_dir) -> Case:
    torch.manual_seed(0)
    if name.startswith("diffusion"):
        policy = demo_diffusion(with_camera=name == "diffusion-camera")
        c = policy.config
        inputs = ", ".join(f"{k.removeprefix('observation.')} {tuple(f.shape)}" for k, f in c.input_features.items())
        description = (f"diffusion U-Net {tuple(c.down_dims)}, {inputs}, horizon {c.horizon}, "
                       f"{c.n_action_steps} executed, DDIM {c.num_inference_steps} steps")
    else:
        kind = name.removesuffix("-tiny")
        with offline_vla_builds(vlm_dir):
            policy, _, _ = tiny_vla(kind, vlm_dir)
        c = policy.config
        steps = getattr(c, "num_steps", None) or getattr(c, "num_inference_steps", None)
        description = (f"tiny {kind} (test-suite size), state (6,) + camera 32x32 + 5 tokens, chunk {c.chunk_size}, "
                       f"{c.n_action_steps} executed, {steps} flow steps")
    policy.eval()
    bare = copy.deepcopy(policy)
    dsrl = DSRLPolicy(DSRLConfig(device="cpu"), base_adapter=BasePolicyAdapter.from_policy(policy))
    dsrl.eval()
    base_params = sum(p.numel() for p in bare.parameters())
    actor_params = sum(p.numel() for p in dsrl.actor.parameters())
    description += f"; base {base_params / 1e6:.2f}M params, actor {actor_params / 1e6:.2f}M"
    description += f" (noise dim {dsrl.noise_dim})"
    return Case(name, description, bare, dsrl, batch_maker(bare), dsrl.config.n_exec, test_size=name.endswith("-tiny"))


# ------------------------------------------------------------------------------------ measurement


def _timed(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def paired_medians(fns: dict[str, Callable[[], object]], repeats: int, sample_s: float) -> dict[str, float]:
    """Median seconds per call of each function, samples interleaved (rotating the order per repeat)."""
    for fn in fns.values():  # warm-up (allocator, lazy init) and calibration
        fn()
    first = next(iter(fns.values()))
    calls = max(1, math.ceil(sample_s / max(_timed(first, 1), 1e-6)))
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            samples[n].append(_timed(fns[n], calls))
    return {n: statistics.median(s) for n, s in samples.items()}


def rollout_fn(policy, obs: dict, steps: int) -> Callable[[], None]:
    """`steps` select_action calls from a reset; the result is divided by `steps` afterwards."""

    def run():
        policy.reset()
        for _ in range(steps):
            policy.select_action(obs)

    return run


@torch.no_grad()
def measure(case: Case, batch_size: int, chunks: int, repeats: int, sample_s: float) -> dict[str, float]:
    steps = chunks * case.n_exec
    obs = case.make_batch(batch_size, 0)
    per_rollout = paired_medians(
        {"base": rollout_fn(case.base, obs, steps), "dsrl": rollout_fn(case.dsrl, obs, steps)},
        repeats, sample_s,
    )
    batch = case.chunk_batch(batch_size)

    def base_chunk():
        case.base.reset()  # LeRobot diffusion decodes from the given batch only when its queues are empty
        return case.base.predict_action_chunk(batch)

    def dsrl_chunk():
        return case.dsrl.predict_action_chunk(batch)

    def actor_only():
        return case.dsrl.base_noise(case.dsrl.actor(batch).action)

    per_chunk = paired_medians({"base": base_chunk, "dsrl": dsrl_chunk, "actor": actor_only}, repeats, sample_s)
    return {
        "select_action_base_ms": 1e3 * per_rollout["base"] / steps,
        "select_action_dsrl_ms": 1e3 * per_rollout["dsrl"] / steps,
        "select_action_ratio": per_rollout["dsrl"] / per_rollout["base"],
        "chunk_base_ms": 1e3 * per_chunk["base"],
        "chunk_dsrl_ms": 1e3 * per_chunk["dsrl"],
        "chunk_ratio": per_chunk["dsrl"] / per_chunk["base"],
        "actor_ms": 1e3 * per_chunk["actor"],
        "actor_share_of_base_chunk": per_chunk["actor"] / per_chunk["base"],
    }


# ------------------------------------------------------------------------------------------ report


def print_report(cases: list[Case], results: dict, batch_sizes: list[int], threads: int, loads) -> None:
    print(f"\nDSRL inference overhead against the bare base (CPU, torch threads = {threads}, "
          f"load average before/after: {loads[0]:.2f} / {loads[1]:.2f})")
    print("select_action: per call, amortized over whole chunks; "
          "chunk: one decode (base) vs actor + one decode (dsrl)\n")
    header = (f"{'base':<17} {'B':>3} | {'select_action ms':>16} {'dsrl ms':>9} {'ratio':>6} | "
              f"{'chunk base ms':>13} {'dsrl ms':>9} {'ratio':>6} | {'actor ms':>8} {'actor/base':>10}")
    print(header)
    print("-" * len(header))
    for case in cases:
        for b in batch_sizes:
            r = results[case.name][str(b)]
            print(f"{case.name:<17} {b:>3} | {r['select_action_base_ms']:>16.3f} {r['select_action_dsrl_ms']:>9.3f} "
                  f"{r['select_action_ratio']:>6.3f} | {r['chunk_base_ms']:>13.2f} {r['chunk_dsrl_ms']:>9.2f} "
                  f"{r['chunk_ratio']:>6.3f} | {r['actor_ms']:>8.3f} {100 * r['actor_share_of_base_chunk']:>9.1f}%")
    print()
    for case in cases:
        print(f"{case.name}: {case.description}")
    print(f"\nVerdict (goal: steering adds <= {100 * GOAL:.0f} % to the base's inference time):")
    for case in cases:
        per_b = results[case.name]
        worst = max(max(r["select_action_ratio"], r["chunk_ratio"]) for r in per_b.values())
        verdict = "MEETS the goal" if worst <= 1 + GOAL else "MISSES the goal"
        if case.test_size:
            verdict += " on this test-size base"
        added = ", ".join(
            f"B={b}: +{100 * (r['select_action_ratio'] - 1):.1f} % per call, +{100 * (r['chunk_ratio'] - 1):.1f} % "
            f"per chunk (+{r['chunk_dsrl_ms'] - r['chunk_base_ms']:.1f} ms on a {r['chunk_base_ms']:.1f} ms decode)"
            for b, r in ((b, per_b[str(b)]) for b in batch_sizes)
        )
        print(f"  {case.name:<17} {verdict} (worst +{100 * (worst - 1):.1f} %; {added})")
    if any(c.test_size for c in cases):
        print("  Test-size bases decode in milliseconds while the actor's cost is fixed by its own inputs (it does not "
              "grow with the base), so their ratios overstate what steering a full-size VLA costs.")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", nargs="+", default=list(BASE_NAMES), choices=BASE_NAMES)
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the whole run")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved samples per figure (median taken)")
    parser.add_argument("--sample_s", type=float, default=0.3, help="approximate duration of one sample")
    parser.add_argument("--chunks", type=int, default=2, help="chunks per select_action rollout sample")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results: dict[str, dict] = {}
    cases = []
    with tempfile.TemporaryDirectory() as vlm_dir:
        for name in args.bases:
            case = build_case(name, vlm_dir)
            cases.append(case)
            results[name] = {}
            for b in args.batch_sizes:
                t0 = time.perf_counter()
                results[name][str(b)] = measure(case, b, args.chunks, args.repeats, args.sample_s)
                print(f"  measured {name} at batch {b} in {time.perf_counter() - t0:.0f} s", flush=True)
    loads = (load_before, os.getloadavg()[0])
    print_report(cases, results, args.batch_sizes, args.threads, loads)
    if args.json:
        payload = {
            "threads": args.threads, "repeats": args.repeats, "load_average": list(loads), "goal": GOAL,
            "bases": {c.name: {"description": c.description, "results": results[c.name]} for c in cases},
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
