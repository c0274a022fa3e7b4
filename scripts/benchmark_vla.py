"""What RL fine-tuning a VLA costs on one accelerator: `smolvla_rl` / `pi0_rl` memory and samples/s.

For each policy family and `--policy.trainable` setting, side by side in one process:

* act: LeRobot's own decode (`model.sample_actions`, the base as `lerobot-eval` runs it) against the
  RL policy's stochastic chain with its log-likelihood and value (`sample_actions_with_log_prob`,
  what `lerobot-steer-ppo` runs per rollout chunk), both at `--rollout_batch` observations:
  chunks/s and their ratio;
* update: one PPO minibatch exactly as `lerobot-steer-ppo` takes it (`PPOAlgorithm.update`: the
  chain re-evaluated with gradients, clipped surrogate, value loss, backward, gradient clip, Adam
  step) at `--micro_batch` rows: rows/s and the peak accelerator memory of the step.

Sizes:
* `tiny`: the test suite's tiny VLAs (`lerobot_steer.steering.tiny_bases`), for a CPU check;
* `full`: SmolVLA over a SmolVLM2-500M-sized VLM (its published sizes, written into a local config:
  960-wide 32-layer text model cut to SmolVLA's 16 layers, 768-wide 12-layer SigLIP at 512 x 512,
  expert at 0.75 width) and pi0 at LeRobot's hard-coded PaliGemma-3B + Gemma-300M sizes. The
  parameter counts are printed: compare them with the published ones (SmolVLA ~0.45 B, pi0 ~3.3 B).

Weights are random (nothing is downloaded): time and memory do not depend on their values. Inputs
are two 96 x 128 cameras (the sim's pixel observations), a 6-d state and 48 language tokens.
`--precision bf16`: pi0 uses LeRobot's own `dtype=bfloat16` (with `gradient_checkpointing`), SmolVLA
(which has no such field in LeRobot 0.6.1) runs under bf16 autocast, as `lerobot-train --policy.use_amp`.

    python scripts/benchmark_vla.py --size tiny --device cpu                      # the CPU check
    python scripts/benchmark_vla.py --size full --device cuda --precision bf16    # one GPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_steer.policies.pi0_rl import PI0RLConfig, PI0RLPolicy
from lerobot_steer.policies.smolvla_rl import SmolVLARLConfig, SmolVLARLPolicy
from lerobot_steer.rl.onpolicy.algorithms import PPOAlgorithm, PPOConfig
from lerobot_steer.steering.tiny_bases import batch_maker, offline_smolvla_processor, offline_vla_builds

CAMERAS = ("observation.images.front", "observation.images.wrist")
STATE, ACTION = "observation.state", "action"
NUM_TOKENS = 48


def save_smolvlm2_500m_config(folder: Path) -> Path:
    """SmolVLM2-500M's architecture (not its weights) as a local config that `vlm_model_name` loads."""
    import transformers

    transformers.SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, head_dim=64, vocab_size=49280,
                         rope_theta=100000.0, max_position_embeddings=8192, rms_norm_eps=1e-5),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16),
        scale_factor=4,
    ).save_pretrained(folder)
    return folder


def features(size: str):
    shape = (3, 32, 32) if size == "tiny" else (3, 96, 128)
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,))}
    inputs.update({cam: PolicyFeature(FeatureType.VISUAL, shape) for cam in CAMERAS})
    return inputs, {ACTION: PolicyFeature(FeatureType.ACTION, (6,))}


def build(family: str, size: str, trainable: str, precision: str, device: str, vlm_dir: Path, checkpointing: bool):
    """The RL policy with random weights, built directly on `device` (a 3 B model initializes in
    seconds there, minutes on a CPU)."""
    inputs, outputs = features(size)
    common = dict(input_features=inputs, output_features=outputs, device=device, trainable=trainable,
                  chain_gradient_checkpointing=checkpointing)
    if size == "tiny":
        common.update(chunk_size=8, n_action_steps=4)
    if family == "smolvla":
        sizes = (dict(num_vlm_layers=4, resize_imgs_with_padding=(64, 64), num_steps=3) if size == "tiny"
                 else dict(num_vlm_layers=16))
        config = SmolVLARLConfig(vlm_model_name=str(vlm_dir), load_vlm_weights=False, **sizes, **common)
        cls = SmolVLARLPolicy
    else:
        sizes = dict(image_resolution=(28, 28), num_inference_steps=3) if size == "tiny" else {}
        if precision == "bf16":
            sizes.update(dtype="bfloat16", gradient_checkpointing=checkpointing)
        config = PI0RLConfig(**sizes, **common)
        cls = PI0RLPolicy
    with torch.device(device):
        policy = cls(config)
    return policy.to(device)


def make_batch(policy, batch_size: int, device: str, seed: int = 0) -> dict:
    """Random normalized observations with NUM_TOKENS language tokens, on `device`."""
    batch = batch_maker(policy, num_tokens=NUM_TOKENS)(batch_size, seed)
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def resident_gib(device: str) -> float | None:
    return torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def measure(family, size, trainable, precision, device, vlm_dir, rollout_batch, micro_batch, repeats,
            checkpointing) -> dict:
    gc.collect()  # the previous row's policy and optimizer
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    policy = build(family, size, trainable, precision, device, vlm_dir, checkpointing)
    autocast = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
                if precision == "bf16" and family == "smolvla" else contextlib.nullcontext())
    n_params = sum(p.numel() for p in policy.parameters())
    n_trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    # Resident after construction (pi0 is built in fp32, then LeRobot casts it to bf16: the build's peak is higher).
    row = dict(family=family, size=size, trainable=trainable, precision=precision, checkpointing=checkpointing,
               params_m=n_params / 1e6, trained_m=n_trained / 1e6, weights_gib=resident_gib(device))

    policy.eval()
    obs = make_batch(policy, rollout_batch, device)
    inputs = policy.model_inputs(obs)
    shape = (rollout_batch, policy.config.chunk_size, policy.config.max_action_dim)
    noise = torch.randn(shape, device=device)
    reset_peak(device)
    with torch.no_grad(), autocast:
        base_s = timed(lambda: policy.model.sample_actions(*inputs, noise=noise), device, repeats)
        chain_s = timed(lambda: policy.sample_actions_with_log_prob(obs, noise=noise), device, repeats)
    row.update(base_chunks_per_s=rollout_batch / base_s, chain_chunks_per_s=rollout_batch / chain_s,
               chain_over_base=chain_s / base_s, act_peak_gib=peak_gib(device))

    algorithm = PPOAlgorithm(policy, PPOConfig(micro_batch_size=micro_batch, minibatch_size=micro_batch))
    obs = make_batch(policy, micro_batch, device, seed=1)
    with torch.no_grad(), autocast:
        out = policy.sample_actions_with_log_prob(obs)
    micro = {"observation": obs, "chain": out.chain, "old_log_prob": out.log_prob.float(),
             "old_value": out.value.float(), "return": out.value.float() + 1.0,
             "advantage": torch.randn(micro_batch, device=device), "weight": 1.0}

    def update():
        with autocast:
            algorithm.update(iter([[micro]]))

    reset_peak(device)
    update_s = timed(update, device, repeats)
    row.update(update_rows_per_s=micro_batch / update_s, update_peak_gib=peak_gib(device))
    return row


def print_table(rows: list[dict]) -> None:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"{'family':8} {'trainable':9} {'prec':5} {'ckpt':4} {'params M':>9} {'trained M':>9} {'base ch/s':>10} "
          f"{'chain ch/s':>10} {'chain/base':>10} {'update rows/s':>13} {'weights GiB':>11} {'act peak GiB':>12} "
          f"{'update peak GiB':>15}")
    for r in rows:
        if "error" in r:
            print(f"{r['family']:8} {r['trainable']:9} {r['precision']:5} {'on' if r['checkpointing'] else 'off':4} failed: {r['error']}")
            continue
        print(f"{r['family']:8} {r['trainable']:9} {r['precision']:5} {'on' if r['checkpointing'] else 'off':4} {r['params_m']:9.1f} {r['trained_m']:9.1f} "
              f"{r['base_chunks_per_s']:10.1f} {r['chain_chunks_per_s']:10.1f} {r['chain_over_base']:10.2f} "
              f"{r['update_rows_per_s']:13.1f} {fmt(r['weights_gib'], '11.2f')} {fmt(r['act_peak_gib'], '12.2f')} "
              f"{fmt(r['update_peak_gib'], '15.2f')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--families", nargs="+", default=["smolvla", "pi0"], choices=["smolvla", "pi0"])
    parser.add_argument("--trainable", nargs="+", default=["expert", "lora", "all"])
    parser.add_argument("--rollout_batch", type=int, default=8, help="observations per acting call (n_envs)")
    parser.add_argument("--micro_batch", type=int, default=8, help="rows per PPO micro-batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chain_checkpointing", choices=["off", "on", "both"], default="off",
                        help="--policy.chain_gradient_checkpointing (and pi0's gradient_checkpointing); both: side by side")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print(f"device: cpu, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = Path(tmp) / "smolvlm"
        vlm_dir.mkdir()
        if args.size == "full":
            save_smolvlm2_500m_config(vlm_dir)
        # The tiny builds need all the offline patches; full-size ones only SmolVLA's AutoProcessor stub
        # (pi0 builds from LeRobot's hard-coded sizes, which the tiny patches would shrink).
        with offline_vla_builds(vlm_dir) if args.size == "tiny" else offline_smolvla_processor():
            settings = {"off": [False], "on": [True], "both": [False, True]}[args.chain_checkpointing]
            for family, trainable, checkpointing in itertools.product(args.families, args.trainable, settings):
                try:
                    row = measure(family, args.size, trainable, args.precision, args.device, vlm_dir,
                                  args.rollout_batch, args.micro_batch, args.repeats, checkpointing)
                except torch.OutOfMemoryError as error:
                    row = dict(family=family, trainable=trainable, precision=args.precision,
                               checkpointing=checkpointing, error=f"out of memory: {str(error).splitlines()[0]}")
                    torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(f"rollout batch {args.rollout_batch}, PPO micro-batch {args.micro_batch}, median of {args.repeats}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
