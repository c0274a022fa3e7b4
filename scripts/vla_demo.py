"""SFT -> RL -> evaluation of a SmolVLA on the built-in sim, end to end on a CPU with no download.

1. the scripted expert writes demonstrations with the front camera and the joints (`lerobot-steer-generate`),
2. LeRobot's own `lerobot-train --policy.type=smolvla` trains a tiny SmolVLA on them (a 4-layer, 64-wide
   SmolVLM built from config, random initial weights: `lerobot_steer.steering.tiny_vla_cli`),
3. `lerobot-steer-ppo` fine-tunes it as `smolvla_rl`, once with PPO (Flow-Noise chain, value head) and once
   with GRPO (groups reset to one seed),
4. `lerobot-steer-rl --policy.type=dsrl` steers the same frozen base through its initial noise instead,
5. `lerobot-steer-eval` scores the three and the base (N(0, I), zero and tanh noise) on the same seeds
   (Wilson CI, paired McNemar tests against PPO).

The tiny VLM is what makes this run on a CPU in minutes; a full-size SmolVLA takes the same commands
without the `tiny_vla_cli` wrapper (`--policy.path=lerobot/smolvla_base`, a GPU: see the README). Every
stage writes under `--output_dir` and is skipped when its output exists, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, run  # noqa: E402  (the same stage runner as `make demo`)

TINY_VLA = [sys.executable, "-m", "lerobot_steer.steering.tiny_vla_cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/vla_demo")
    parser.add_argument("--episodes", type=int, default=100, help="expert demonstrations to generate")
    parser.add_argument("--image_size", type=int, default=32, help="camera height and width")
    parser.add_argument("--train_steps", type=int, default=3000)
    parser.add_argument("--rl_steps", type=int, default=20000, help="online env steps of each of PPO and GRPO")
    parser.add_argument("--rl_chunks", type=int, default=16, help="PPO rollout length in chunks per env")
    parser.add_argument("--rl_lr", type=float, default=1e-4, help="learning rate of PPO and GRPO")
    parser.add_argument("--n_envs", type=int, default=8)
    parser.add_argument("--compare_episodes", type=int, default=50)
    parser.add_argument("--episode_length", type=int, default=None, help="env steps per RL / evaluation episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--privileged_state", action="store_true",
                        help="append the block and bowl poses to observation.state (--env.state_includes_objects): "
                             "a tiny VLA learns the task from minutes of CPU training")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["LEROBOT_STEER_TINY_VLM_DIR"] = str(out / "tiny_smolvlm")  # read by tiny_vla_cli
    data, train, compare = out / "data", out / "train", out / "compare"
    size = args.image_size
    camera = ["--env.obs_type=pixels", "--env.cameras=[front]", f"--env.image_height={size}", f"--env.image_width={size}"]
    if args.privileged_state:
        camera.append("--env.state_includes_objects=true")
    episode = [f"--env.episode_length={args.episode_length}"] if args.episode_length else []
    t0 = time.perf_counter()

    print(f"[1/6] Expert demonstrations (front camera {size} x {size} + joints) -> {data}")
    if not (data / "generation_report.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        run([str(BIN / "lerobot-steer-generate"), "--repo_id=local/so101_sim_vla", f"--root={data}",
             f"--num_episodes={args.episodes}", f"--seed={args.seed}", *camera], out / "generate.log")

    print(f"[2/6] lerobot-train --policy.type=smolvla, tiny VLM ({args.train_steps} steps) -> {train}")
    base = train / "checkpoints" / "last" / "pretrained_model"
    if not base.exists():
        shutil.rmtree(train, ignore_errors=True)
        run([*TINY_VLA, "lerobot-train", "--policy.type=smolvla", f"--policy.vlm_model_name={out / 'tiny_smolvlm'}",
             "--policy.load_vlm_weights=false", "--policy.num_vlm_layers=4", "--policy.resize_imgs_with_padding=[64,64]",
             "--policy.chunk_size=16", "--policy.n_action_steps=8", "--policy.num_steps=5",
             "--policy.optimizer_lr=5e-4", "--policy.scheduler_warmup_steps=100",
             f"--policy.scheduler_decay_steps={args.train_steps}",  # annealed to its end (see the README's round 8)
             "--policy.device=cpu", "--policy.push_to_hub=false", "--dataset.repo_id=local/so101_sim_vla",
             f"--dataset.root={data}", "--dataset.video_backend=pyav", "--batch_size=32", f"--steps={args.train_steps}",
             f"--save_freq={args.train_steps}", f"--log_freq={max(args.train_steps // 20, 1)}", "--num_workers=1",
             "--env_eval_freq=0", f"--seed={args.seed}", f"--output_dir={train}", "--wandb.enable=false"],
            out / "train.log", env={"OMP_NUM_THREADS": "1"})

    sim = ["--env.type=so101_sim", *camera, *episode, "--env.reward_type=dense", f"--n_envs={args.n_envs}",
           "--policy.device=cpu", f"--seed={args.seed}", "--progress=false"]
    budget = [f"--steps={args.rl_steps}", f"--log_freq={max(args.rl_steps // 10, 1)}",
              f"--save_freq={args.rl_steps}", "--eval.freq=0"]
    # The on-policy lr default (5e-6) is sized for full-size VLAs; this 0.2M-parameter expert was trained
    # at 5e-4, and at 5e-6 a few hundred PPO steps would leave it where it is.
    lr = [f"--algorithm.lr={args.rl_lr}"]
    algorithms = {
        "ppo": ["--algorithm.type=ppo", f"--algorithm.rollout_chunks={args.rl_chunks}", *lr],
        # one group per rollout of n_envs envs, reset to the same seed
        "grpo": ["--algorithm.type=grpo", f"--algorithm.group_size={args.n_envs}", *lr],
    }
    tuned = {}
    for step, (name, flags) in enumerate(algorithms.items(), start=3):
        run_dir = out / f"rl_{name}"
        tuned[name] = run_dir / "checkpoints" / "last" / "pretrained_model"
        state = run_dir / "checkpoints" / "last" / "training_state" / "training_step.json"
        print(f"[{step}/6] lerobot-steer-ppo {flags[0]} ({args.rl_steps} env steps) -> {run_dir}")
        if state.exists() and json.loads(state.read_text())["env_steps"] >= args.rl_steps:
            continue
        resume = ["--resume=true", f"--steps={args.rl_steps}"] if state.exists() else [
            "--policy.type=smolvla_rl", f"--policy.base_policy_path={base}", *flags, *sim, *budget]
        run([*TINY_VLA, "lerobot-steer-ppo", *resume, f"--output_dir={run_dir}"], out / f"rl_{name}.log",
            show=("env_steps:", "checkpoint:", "Resuming"))

    # DSRL on the same base, same budget: the frozen SmolVLA steered through its initial noise, at
    # lerobot-steer-rl's defaults but for the prefill (scaled to the budget, as in `make demo`) and the batch.
    run_dir = out / "rl_dsrl"
    tuned["dsrl"] = run_dir / "checkpoints" / "last" / "pretrained_model"
    state = run_dir / "checkpoints" / "last" / "training_state" / "training_step.json"
    print(f"[5/6] lerobot-steer-rl --policy.type=dsrl ({args.rl_steps} env steps) -> {run_dir}")
    if not (state.exists() and json.loads(state.read_text())["env_steps"] >= args.rl_steps):
        resume = ["--resume=true", f"--steps={args.rl_steps}"] if state.exists() else [
            "--policy.type=dsrl", f"--policy.base_policy_path={base}", *sim, *budget,
            # batch 64, not the default 256: the critics encode the camera, and at 256 the loop ran 7 env
            # steps/s on 2 shared cores (measured), a 20k-step budget 50 minutes
            f"--prefill_steps={min(5000, args.rl_steps // 4)}", f"--batch_size={min(64, max(args.rl_steps // 16, 4))}"]
        run([*TINY_VLA, "lerobot-steer-rl", *resume, f"--output_dir={run_dir}"], out / "rl_dsrl.log",
            show=("env_steps:", "checkpoint:", "Resuming"))

    print(f"[6/6] lerobot-steer-eval PPO, GRPO, DSRL and the base's free modes ({args.compare_episodes} episodes, same seeds) -> {compare}")
    shutil.rmtree(compare, ignore_errors=True)
    # the base as LeRobot samples it (N(0, I)) and on its free zero and tanh(N(0, I)) noises
    paths = [str(tuned["ppo"]), str(tuned["grpo"]), str(tuned["dsrl"]), str(base), f"noise:zero:{base}",
             f"noise:tanh:{base}"]
    run([*TINY_VLA, "lerobot-steer-eval", f"--policy_paths=[{','.join(paths)}]", *camera, *episode,
         f"--n_episodes={args.compare_episodes}", f"--seed={args.seed + 10_000}", "--videos.first=1",
         "--progress=false", f"--output_dir={compare}"], out / "compare.log", show=("Report:",))

    print(f"\n=== lerobot-steer VLA demo: tiny SmolVLA, SFT -> PPO / GRPO / DSRL ({(time.perf_counter() - t0) / 60:.1f} min) ===")
    print((compare / "results.md").read_text())


if __name__ == "__main__":
    main()
