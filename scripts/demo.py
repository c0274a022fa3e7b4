"""`make demo`: the main job on the built-in SO-101 sim, end to end on a CPU.

1. the scripted expert writes demonstrations as a LeRobot dataset (`lerobot-steer-generate`),
2. LeRobot's own `lerobot-train` trains a small diffusion policy on them,
3. LeRobot's own `lerobot-eval --env.type=so101_sim` evaluates the checkpoint,
4. `lerobot-steer-rl` fine-tunes it online in the sim with DSRL (an actor over the base's noise),
5. `lerobot-steer-eval` evaluates the base (as LeRobot samples it, and on its free zero, tanh and
   executed-steps noises) and the fine-tuned policy on the same seeds (Wilson CI, paired McNemar
   test, failure taxonomy, videos, chart), and a summary prints the table.

Every stage writes under `outputs/demo/` and is skipped when its output already exists, so a rerun
resumes where an interrupted one stopped; `--fresh` starts over. The flags below scale the job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV_FLAGS = ["--env.type=so101_sim", "--env.obs_type=state"]


def run(cmd: list[str], log: Path, show: tuple[str, ...] = ("step:", "Expert:", "pc_success"),
        env: dict[str, str] | None = None) -> None:
    """Run a CLI with its full output in `log`; echo the lines that show progress (LeRobot's
    periodic `step:` lines, the generator's summary) so a long stage is never silent. `env`: extra
    environment variables for the command."""
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env={**os.environ, **(env or {})})
        for line in proc.stdout:
            f.write(line)
            f.flush()  # the full log stays readable (tail -f) while the stage runs
            for part in line.rstrip("\n").split("\r"):  # tqdm redraws with carriage returns
                if any(key in part for key in show):
                    print("   ", part.strip()[:160], flush=True)
        proc.wait()
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        sys.exit(f"Command failed (exit {proc.returncode}); last lines of {log}:\n" + "\n".join(tail))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--episodes", type=int, default=100, help="expert demonstrations to generate")
    parser.add_argument("--train_steps", type=int, default=5000)
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--rl_steps", type=int, default=40000, help="online env steps of DSRL fine-tuning")
    parser.add_argument("--rl_eval_episodes", type=int, default=10,
                        help="episodes of each periodic evaluation during fine-tuning (4 in a run)")
    parser.add_argument("--compare_episodes", type=int, default=50, help="episodes of the base vs fine-tuned comparison")
    parser.add_argument("--episode_length", type=int, default=None,
                        help="env steps per evaluation / fine-tuning episode (default: the sim's own); the "
                             "expert demonstrations always run to their end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete earlier demo outputs first")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    # Only the stages that run the policy get a shorter episode: the expert's demonstrations must finish.
    env_flags = [*ENV_FLAGS, *([f"--env.episode_length={args.episode_length}"] if args.episode_length else [])]
    out = Path(args.output_dir)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data, train, evaluation, online, compare = out / "data", out / "train", out / "eval", out / "rl_dsrl", out / "compare"
    t0 = time.perf_counter()

    print(f"[1/5] Expert demonstrations -> {data}")
    if not (data / "generation_report.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        run([str(BIN / "lerobot-steer-generate"), "--repo_id=local/so101_sim_demo", f"--root={data}",
             f"--num_episodes={args.episodes}", f"--seed={args.seed}", "--env.obs_type=state"], out / "generate.log")
    report = json.loads((data / "generation_report.json").read_text())

    print(f"[2/5] lerobot-train --policy.type=diffusion ({args.train_steps} steps) -> {train}")
    checkpoint = train / "checkpoints" / "last" / "pretrained_model"
    if not checkpoint.exists():
        shutil.rmtree(train, ignore_errors=True)
        run([str(BIN / "lerobot-train"), "--policy.type=diffusion", "--dataset.repo_id=local/so101_sim_demo",
             f"--dataset.root={data}", "--dataset.video_backend=pyav", "--policy.device=cpu",
             "--policy.push_to_hub=false", "--policy.pretrained_backbone_weights=null",
             "--policy.horizon=16", "--policy.n_action_steps=8", "--policy.n_obs_steps=2",
             "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=10",
             "--policy.down_dims=[64,128,256]", "--policy.scheduler_warmup_steps=100",
             "--policy.optimizer_lr=5e-4", "--batch_size=32", f"--steps={args.train_steps}",
             f"--save_freq={args.train_steps}", "--log_freq=100", "--num_workers=2", "--env_eval_freq=0", f"--seed={args.seed}",
             f"--output_dir={train}", "--wandb.enable=false"], out / "train.log",
            # Two data workers feed one training process on 2 cores; with 2 OpenMP threads each the
            # cores are oversubscribed and training ran at 2.3 steps/s instead of 4 (measured).
            env={"OMP_NUM_THREADS": "1"})

    print(f"[3/5] lerobot-eval --env.type=so101_sim ({args.eval_episodes} episodes) -> {evaluation}")
    shutil.rmtree(evaluation, ignore_errors=True)
    run([str(BIN / "lerobot-eval"), f"--policy.path={checkpoint}", *env_flags, "--policy.device=cpu",
         f"--eval.n_episodes={args.eval_episodes}", f"--eval.batch_size={min(args.eval_episodes, 10)}",
         "--eval.use_async_envs=false",
         f"--seed={args.seed}", f"--output_dir={evaluation}"], out / "eval.log")
    overall = json.loads((evaluation / "eval_info.json").read_text())["overall"]

    print(f"[4/5] lerobot-steer-rl --policy.type=dsrl ({args.rl_steps} env steps) -> {online}")
    tuned = online / "checkpoints" / "last" / "pretrained_model"
    rl_done = online / "checkpoints" / "last" / "training_state" / "training_step.json"
    if not (rl_done.exists() and json.loads(rl_done.read_text())["env_steps"] >= args.rl_steps):
        # Defaults (policy type, base, env, budget) except a prefill scaled to the demo's short budget.
        resume = ["--resume=true", f"--output_dir={online}", f"--steps={args.rl_steps}"] if rl_done.exists() else [
            "--policy.type=dsrl", f"--policy.base_policy_path={checkpoint}", "--policy.device=cpu", *env_flags,
            f"--steps={args.rl_steps}", f"--prefill_steps={min(5000, args.rl_steps // 4)}",
            f"--eval.freq={max(args.rl_steps // 4, 1)}", f"--eval.n_episodes={args.rl_eval_episodes}",
            f"--log_freq={max(args.rl_steps // 8, 1)}", f"--save_freq={max(args.rl_steps // 4, 1)}",
            f"--seed={args.seed}", "--progress=false", f"--output_dir={online}"]
        run([str(BIN / "lerobot-steer-rl"), *resume], out / "rl.log", show=("env_steps:", "checkpoint:", "Resuming"))
    from lerobot_steer.rl.plots import plot_learning_curves, run_curves

    curve = plot_learning_curves({"DSRL-SAC": {"run": run_curves(online)}}, online / "learning_curve.png",
                                 references={"base (lerobot-eval)": (overall["pc_success"] / 100, float("nan"))},
                                 title="make demo: online DSRL fine-tuning of the diffusion base")

    print(f"[5/5] lerobot-steer-eval base vs fine-tuned ({args.compare_episodes} episodes, same seeds) -> {compare}")
    shutil.rmtree(compare, ignore_errors=True)
    # The free baselines of the same checkpoint come along: a gain only counts if it beats them too. The
    # fine-tuned policy goes first: the report's paired McNemar tests are each baseline against it.
    paths = [str(tuned), str(checkpoint), f"noise:zero:{checkpoint}", f"noise:tanh:{checkpoint}",
             f"noise:executed:{checkpoint}"]
    run([str(BIN / "lerobot-steer-eval"), f"--policy_paths=[{','.join(paths)}]", *env_flags[1:],
         f"--n_episodes={args.compare_episodes}", f"--seed={args.seed + 10_000}", "--videos.first=1", "--videos.trails=true",
         "--progress=false", f"--output_dir={compare}"], out / "compare.log", show=("Report:",))

    minutes = (time.perf_counter() - t0) / 60
    print("\n=== lerobot-steer demo: SO-101 pick-and-place sim ===")
    print(f"expert demonstrations : {report['episodes_saved']} episodes, {report['frames']} frames, "
          f"expert success {report['expert_success_rate']:.0%} ({report['episodes_per_minute']} episodes/min)")
    print(f"diffusion policy      : {args.train_steps} training steps -> {checkpoint}")
    print(f"policy success        : {overall['pc_success']:.0f}% over {overall['n_episodes']} episodes "
          f"(videos in {evaluation / 'videos'})")
    print(f"online DSRL           : {args.rl_steps} env steps -> {tuned} (curve {curve}, metrics {online / 'metrics.csv'})")
    print(f"base vs fine-tuned    : {compare / 'results.md'} (chart {compare / 'success_rates.png'}, videos {compare / 'videos'})")
    print(f"total                 : {minutes:.1f} min\n")
    print((compare / "results.md").read_text())


if __name__ == "__main__":
    main()
