"""Learning curves: base only vs `dsrl` vs fixed-lambda VGD vs `dyna_vgd`, same seeds, same env budget.

From one base diffusion checkpoint (trained by lerobot-train on expert sim data), each method is
fine-tuned online by `lerobot-steer-rl` for `--steps` env steps with every seed, evaluated every
`--eval_every` env steps on the same fixed evaluation seeds, and the script writes:

* `learning_curves.png`: eval success rate vs env steps, mean over seeds with the min-max band;
* `results.md` / `results.json`: the final success rate per method (mean, std over seeds, each
  seed's value) and the command line that produced them.

"base only" is the base policy itself (LeRobot's own DiffusionPolicy, N(0, I) noise) evaluated on the
same evaluation episodes: it does not learn, so it is a flat reference line. A second flat line, "base,
zero noise", decodes every chunk from the all-zero initial noise. It separates two effects in DSRL's
curve: DSRL evaluates with its actor's mean noise, which starts near zero, and a weak diffusion base
is often much better from its noise distribution's mode than from random draws.

Methods (all over the same frozen base; see README for the flags):
* dsrl: DSRL-SAC (critic on the noise; the online variant of the paper), actor and critics 3 x 256;
* vgd: dyna_vgd with --policy.guidance_mode=fixed (value-guided denoising at strength lambda_base);
* dyna_vgd: dyna_vgd with the uncertainty-adaptive strength.

Each run is a normal `lerobot-steer-rl` run (its own metrics.csv and checkpoints under
`<output_dir>/<method>/seed<k>/`); an interrupted script resumes the runs that have a checkpoint
and skips those that finished.

    python scripts/learning_curves.py --base <pretrained_model> [--seeds 0 1 2] [--steps 20000]
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lerobot_steer.rl.plots import plot_learning_curves, run_curves

BIN = Path(sys.executable).parent
METHODS = ("base", "dsrl", "vgd", "dyna_vgd")
LABELS = {"base": "base only", "base_zero_noise": "base, zero noise", "dsrl": "DSRL (SAC)", "vgd": "VGD (fixed lambda)", "dyna_vgd": "Dynamic VGD"}


def method_flags(method: str, args) -> list[str]:
    if method == "dsrl":
        return ["--policy.type=dsrl", "--policy.variant=sac", f"--utd_ratio={args.dsrl_utd}",
                f"--batch_size={args.dsrl_batch}"]
    guidance = ["--policy.type=dyna_vgd", f"--policy.guidance_scale={args.guidance_scale}",
                f"--utd_ratio={args.vgd_utd}", f"--batch_size={args.vgd_batch}"]
    return guidance + ["--policy.guidance_mode=" + ("fixed" if method == "vgd" else "dynamic")]


def run_method(method: str, seed: int, args, out: Path) -> None:
    run_dir = out / method / f"seed{seed}"
    last = run_dir / "checkpoints" / "last" / "training_state" / "training_step.json"
    if last.is_file() and json.loads(last.read_text())["env_steps"] >= args.steps:
        print(f"{method} seed {seed}: done earlier", flush=True)
        return
    common = [f"--policy.base_policy_path={args.base}", "--policy.device=cpu", "--env.type=so101_sim",
              "--env.obs_type=state", f"--env.reward_type={args.reward_type}", f"--n_envs={args.n_envs}",
              f"--steps={args.steps}", f"--prefill_steps={args.prefill}", f"--eval.freq={args.eval_every}",
              f"--eval.n_episodes={args.eval_episodes}", f"--eval.batch_size={args.eval_episodes}",
              f"--log_freq={args.eval_every}", f"--save_freq={args.eval_every}", f"--seed={seed}", "--progress=false"]
    if last.is_file():
        cmd = [str(BIN / "lerobot-steer-rl"), "--resume=true", f"--output_dir={run_dir}", f"--steps={args.steps}"]
    else:
        cmd = [str(BIN / "lerobot-steer-rl"), *method_flags(method, args), *common, f"--output_dir={run_dir}"]
    print(f"{method} seed {seed}: $ {shlex.join(cmd)}", flush=True)
    with open(out / f"{method}_seed{seed}.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def base_success(args, out: Path) -> float:
    """The base alone on the evaluation episodes (seeds 100000, ... as the runs' evaluations), through
    lerobot-steer-eval. It does not learn and its evaluation is seeded, so one evaluation is the line."""
    report = out / "base" / "eval_report.json"
    if not report.is_file():
        cmd = [str(BIN / "lerobot-steer-eval"), f"--policy_paths=[{args.base}]", "--env.obs_type=state",
               f"--env.reward_type={args.reward_type}", f"--n_episodes={args.eval_episodes}",
               f"--batch_size={args.eval_episodes}", "--seed=100000", "--videos.first=0", "--progress=false",
               f"--output_dir={report.parent}"]
        print(f"base: $ {shlex.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads(report.read_text())["checkpoints"][0]["summary"]
    return float(summary["success_rate"]), float(summary["mean_return"])


def base_zero_noise(args, out: Path) -> tuple[float, float]:
    """The base decoding every chunk from zero initial noise, on the same evaluation episodes."""
    result = out / "base_zero_noise.json"
    if not result.is_file():
        import torch

        from lerobot_steer.evaluation.loading import load_policy
        from lerobot_steer.evaluation.rollout import run_episodes
        from lerobot_steer.evaluation.stats import summarize
        from lerobot_steer.sim.env_config import SO101SimEnvConfig

        env = SO101SimEnvConfig(obs_type="state", reward_type=args.reward_type)
        put = load_policy(args.base, env, "cpu", label="base, zero noise")
        base = put.policy

        class ZeroNoise:
            """select_action of the base with `noise=0` (LeRobot's ActionSelectKwargs)."""

            def reset(self):
                base.reset()

            def select_action(self, batch):
                n = next(v for k, v in batch.items() if k.startswith("observation.")).shape[0]
                c = base.config
                return base.select_action(batch, noise=torch.zeros(n, c.horizon, c.action_feature.shape[0]))

        put.policy = ZeroNoise()
        episodes = run_episodes(put, env, list(range(100_000, 100_000 + args.eval_episodes)),
                                batch_size=args.eval_episodes, progress=False)
        summary = summarize(episodes)
        result.write_text(json.dumps({"success_rate": summary.success_rate, "mean_return": summary.mean_return}))
    data = json.loads(result.read_text())
    return data["success_rate"], data["mean_return"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="diffusion checkpoint (pretrained_model folder)")
    parser.add_argument("--output_dir", default="outputs/learning_curves")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per run")
    parser.add_argument("--prefill", type=int, default=2_000)
    parser.add_argument("--eval_every", type=int, default=4_000)
    parser.add_argument("--eval_episodes", type=int, default=20)
    parser.add_argument("--n_envs", type=int, default=8)
    parser.add_argument("--reward_type", default="sparse", choices=["sparse", "dense"])
    parser.add_argument("--dsrl_utd", type=float, default=0.5)
    parser.add_argument("--dsrl_batch", type=int, default=256)
    parser.add_argument("--vgd_utd", type=float, default=0.125, help="VGD updates decode at s': costlier")
    parser.add_argument("--vgd_batch", type=int, default=64)
    parser.add_argument("--guidance_scale", type=float, default=0.1)
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    curves: dict[str, dict[int, tuple[list, list]]] = {}
    base = base_success(args, out) if "base" in args.methods else None
    zero = base_zero_noise(args, out) if "base" in args.methods else None
    for method in args.methods:
        for seed in args.seeds if method != "base" else []:
            run_method(method, seed, args, out)
            run_dir = out / method / f"seed{seed}"
            curves.setdefault(method, {})[seed] = run_curves(run_dir)

    refs = {}
    if base is not None:
        refs = {LABELS["base"]: base, LABELS["base_zero_noise"]: zero}
    plot_learning_curves({LABELS[m]: c for m, c in curves.items()}, out / "learning_curves.png", references=refs,
                         ylabel_suffix=f"{args.eval_episodes} episodes", reward_type=args.reward_type)
    table = {"command": shlex.join([sys.executable, *sys.argv]), "methods": {}}
    lines = [f"Final eval success rate after {args.steps} env steps ({args.eval_episodes} eval episodes, seeds "
             f"{args.seeds}, {args.reward_type} reward):", "",
             "| method | success mean | std | per seed | eval return mean |", "|---|---|---|---|---|"]
    finals = {"base": ([base[0]], [base[1]]), "base_zero_noise": ([zero[0]], [zero[1]])} if base else {}
    for method, by_seed in curves.items():
        runs = [c for c in by_seed.values() if c[0]]
        finals[method] = ([c[0][-1][1] for c in runs], [c[1][-1][1] for c in runs])
    for method, (values, returns) in finals.items():
        if not values:
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        table["methods"][method] = {"mean": statistics.fmean(values), "std": std, "per_seed": values,
                                    "eval_return_mean": statistics.fmean(returns)}
        lines.append(f"| {LABELS[method]} | {statistics.fmean(values):.0%} | {std:.0%} | "
                     f"{', '.join(f'{v:.0%}' for v in values)} | {statistics.fmean(returns):.2f} |")
    lines += ["", f"Command: `{table['command']}`"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(table, indent=2))
    print("\n".join(lines))
    print(f"\nplot: {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
