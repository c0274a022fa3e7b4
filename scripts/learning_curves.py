"""Learning curves and final scores: steering methods against every free baseline of the same base.

From one base checkpoint (a diffusion policy trained by lerobot-train on expert sim data):

1. the free baselines, one `lerobot-steer-eval` on the final evaluation seeds: the base on N(0, I)
   noise (what LeRobot runs), on zero noise, on tanh(N(0, I)) noise and on N(0, I) noise on the
   executed steps only (`noise:<kind>:<base>`);
2. each method, each seed: `lerobot-steer-rl` with its **defaults** (only the policy type, the base,
   the env, the budget and the evaluation schedule are passed), evaluated every `--eval_every` env
   steps on `--eval_episodes` fixed episodes;
3. each run's final checkpoint on the final evaluation seeds, in both modes (sampled: the policy as
   it acts in lerobot-eval; deterministic: the actor's mean noise, dsrl only), with Wilson 95 %
   intervals and a paired McNemar test against each free baseline.

Training envs use seeds from `--seed`; the periodic evaluation seeds start at 100000 and the final
ones at `--final_seed` (default 200000), so no score comes from an episode a method trained on.

Writes `learning_curves.png` (success vs env steps and vs wall-clock minutes), `results.md`,
`results.json`. An interrupted script resumes its runs and skips finished work.

    python scripts/learning_curves.py --base <pretrained_model> --methods dsrl vgd dyna_vgd --seeds 0 1 2
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lerobot_steer.evaluation.stats import paired_comparison, wilson_interval
from lerobot_steer.rl.plots import eval_curve, plot_learning_curves, run_curves

BIN = Path(sys.executable).parent
METHODS = ("dsrl", "dsrl_na", "vgd", "dyna_vgd")
BASELINES = ("gaussian", "zero", "tanh", "executed")
LABELS = {"dsrl": "DSRL-SAC", "dsrl_na": "DSRL-NA", "vgd": "VGD", "dyna_vgd": "Dynamic VGD",
          "gaussian": "base, N(0, I) noise", "zero": "base, zero noise", "tanh": "base, tanh(N(0, I)) noise",
          "executed": "base, N(0, I) on executed steps"}
POLICY_FLAGS = {"dsrl": ["--policy.type=dsrl", "--policy.variant=sac"], "dsrl_na": ["--policy.type=dsrl", "--policy.variant=na"],
                "vgd": ["--policy.type=dyna_vgd", "--policy.guidance_mode=fixed"], "dyna_vgd": ["--policy.type=dyna_vgd", "--policy.guidance_mode=dynamic"]}


def run_method(method: str, seed: int, args, out: Path) -> Path:
    run_dir = out / method / f"seed{seed}"
    last = run_dir / "checkpoints" / "last" / "training_state" / "training_step.json"
    if last.is_file() and json.loads(last.read_text())["env_steps"] >= args.steps:
        return run_dir
    if last.is_file():
        cmd = [str(BIN / "lerobot-steer-rl"), "--resume=true", f"--output_dir={run_dir}", f"--steps={args.steps}"]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [str(BIN / "lerobot-steer-rl"), *POLICY_FLAGS[method], f"--policy.base_policy_path={args.base}",
               "--policy.device=cpu", "--env.type=so101_sim", "--env.obs_type=state", f"--steps={args.steps}",
               f"--eval.freq={args.eval_every}", f"--eval.n_episodes={args.eval_episodes}",
               f"--eval.batch_size={args.eval_episodes}", f"--log_freq={args.eval_every}",
               f"--save_freq={args.eval_every}", f"--seed={seed}", "--progress=false", f"--output_dir={run_dir}",
               *args.extra]
    print(f"{method} seed {seed}: $ {shlex.join(cmd)}", flush=True)
    with open(out / f"{method}_seed{seed}.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return run_dir


def deterministic_copy(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint with `deterministic_actions: true` (links to the weights, a new config.json)."""
    if not folder.exists():
        folder.mkdir(parents=True)
        for item in checkpoint.iterdir():
            if item.name != "config.json":
                (folder / item.name).symlink_to(item.resolve())
        config = json.loads((checkpoint / "config.json").read_text())
        config["deterministic_actions"] = True
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def evaluate(paths: dict[str, str], args, folder: Path) -> dict[str, list[bool]]:
    """Per-episode successes of each labelled policy on the final evaluation seeds (one lerobot-steer-eval)."""
    report = folder / "eval_report.json"
    if not report.is_file():
        cmd = [str(BIN / "lerobot-steer-eval"), f"--policy_paths=[{','.join(paths.values())}]", "--env.obs_type=state",
               f"--n_episodes={args.final_episodes}", f"--batch_size={min(args.final_episodes, 50)}",
               f"--seed={args.final_seed}", "--videos.first=0", "--progress=false", f"--output_dir={folder}"]
        print(f"final evaluation: $ {shlex.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    checkpoints = json.loads(report.read_text())["checkpoints"]
    return {label: [bool(e["success"]) for e in c["episodes"]] for label, c in zip(paths, checkpoints, strict=True)}


def describe(successes: list[bool]) -> dict:
    n, k = len(successes), sum(successes)
    lo, hi = wilson_interval(k, n)
    return {"success_rate": k / n, "successes": k, "n": n, "ci95": [lo, hi]}


def first_reaching(curve: list[tuple[float, float]], level: float) -> float | None:
    """The first x (env steps or minutes) at which the curve reaches `level`."""
    return next((x for x, y in curve if y >= level), None)


def wall_curve(run_dir: Path, success_curve) -> list[tuple[float, float]]:
    """The success curve against the run's training wall-clock minutes instead of env steps."""
    minutes = dict(eval_curve(Path(run_dir), "wall_minutes"))
    return [(minutes[s], v) for s, v in success_curve if s in minutes]


def plot_existing(args, out: Path) -> None:
    """`--plot_runs label=dir ...`: the curves of finished or stopped runs against the free baselines."""
    curves: dict[str, dict] = {}
    wall: dict[str, dict] = {}
    for spec in args.plot_runs:
        label, _, run_dir = spec.partition("=")
        success, returns = run_curves(Path(run_dir))
        curves.setdefault(label, {})[run_dir] = (success, returns)
        wall.setdefault(label, {})[run_dir] = (wall_curve(Path(run_dir), success), [])
    refs = {}
    for report in args.baselines_report or []:
        for c in json.loads(Path(report).read_text())["checkpoints"]:
            if c["path"].startswith("noise:"):  # the reports may hold other checkpoints too
                kind = c["path"].split(":")[1]
                refs[f"{LABELS[kind]} (held-out)"] = (c["summary"]["success_rate"], None)
    path = plot_learning_curves(curves, out / "learning_curves.png", references=refs, wall=wall,
                                ylabel_suffix=f"{args.eval_episodes} episodes",
                                title="SO-101 sim: online fine-tuning vs the base's free baselines")
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="diffusion checkpoint (pretrained_model folder)")
    parser.add_argument("--output_dir", default="outputs/learning_curves")
    parser.add_argument("--methods", nargs="+", default=["dsrl", "vgd", "dyna_vgd"], choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--eval_every", type=int, default=10_000)
    parser.add_argument("--eval_episodes", type=int, default=20, help="episodes of each periodic evaluation")
    parser.add_argument("--final_episodes", type=int, default=100, help="held-out episodes of the final evaluation")
    parser.add_argument("--final_seed", type=int, default=200_000)
    parser.add_argument("--plot_runs", nargs="+", default=None, metavar="LABEL=RUN_DIR",
                        help="only plot existing lerobot-steer-rl runs (no training, no final evaluation), "
                             "with the free baselines of --baselines_report")
    parser.add_argument("--baselines_report", nargs="+", default=None, help="eval_report.json files of "
                        "lerobot-steer-eval runs holding noise:<kind>:<base> baselines (with --plot_runs)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to every lerobot-steer-rl run")
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_runs:
        plot_existing(args, out)
        return

    finals = evaluate({LABELS[k]: f"noise:{k}:{args.base}" for k in BASELINES}, args, out / "final_eval" / "baselines")
    curves: dict[str, dict] = {}
    wall: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    for method in args.methods:
        for seed in args.seeds:
            run_dir = run_method(method, seed, args, out)
            curves.setdefault(LABELS[method], {})[seed] = run_curves(run_dir)
            curve = wall_curve(run_dir, curves[LABELS[method]][seed][0])
            wall.setdefault(LABELS[method], {})[seed] = (curve, [])
            minutes = eval_curve(run_dir, "wall_minutes")
            last = run_dir / "checkpoints" / "last" / "pretrained_model"
            paths = {"sampled": str(last)}
            if method.startswith("dsrl"):
                paths["deterministic"] = str(deterministic_copy(last, run_dir / "deterministic_model"))
            scores = evaluate(paths, args, out / "final_eval" / f"{method}_seed{seed}")
            rows[f"{method}/{seed}"] = {
                "method": method, "seed": seed, "modes": {m: describe(s) for m, s in scores.items()},
                "vs_baselines": {b: paired_comparison(finals[LABELS[b]], scores["sampled"]) for b in BASELINES},
                "env_steps_to_90": first_reaching(curves[LABELS[method]][seed][0], 0.9),
                "minutes_to_90": first_reaching(curve, 0.9),
                "minutes": minutes[-1][1] if minutes else None,
            }

    refs = {LABELS[b]: (describe(finals[LABELS[b]])["success_rate"], None) for b in BASELINES}
    plot_learning_curves(curves, out / "learning_curves.png", references=refs, wall=wall,
                         ylabel_suffix=f"{args.eval_episodes} episodes",
                         title="SO-101 sim: online fine-tuning at default settings vs the base's free baselines")
    lines = [f"Held-out final evaluation: {args.final_episodes} episodes (seeds {args.final_seed}+), Wilson 95 % "
             f"intervals; runs of {args.steps} env steps at default settings; McNemar p against each free baseline.", "",
             "| policy | seed | success (sampled) | 95 % CI | success (deterministic) | p vs N(0,I) / zero / tanh / executed | "
             "env steps to 90 % | minutes to 90 % | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for b in BASELINES:
        d = describe(finals[LABELS[b]])
        lines.append(f"| {LABELS[b]} | - | {d['success_rate']:.0%} ({d['successes']}/{d['n']}) | "
                     f"[{d['ci95'][0]:.0%}, {d['ci95'][1]:.0%}] | - | - | - | - | - |")
    for row in rows.values():
        s, det = row["modes"]["sampled"], row["modes"].get("deterministic")
        ps = " / ".join(f"{row['vs_baselines'][b]['p_value']:.1g}" for b in BASELINES)
        fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if isinstance(v, int) else f"{v:.1f}")  # noqa: E731
        lines.append(f"| {LABELS[row['method']]} | {row['seed']} | {s['success_rate']:.0%} ({s['successes']}/{s['n']}) | "
                     f"[{s['ci95'][0]:.0%}, {s['ci95'][1]:.0%}] | {'-' if det is None else f'{det['success_rate']:.0%}'} | "
                     f"{ps} | {fmt(row['env_steps_to_90'])} | {fmt(row['minutes_to_90'])} | {fmt(row['minutes'])} |")
    command = shlex.join([sys.executable, *sys.argv])
    lines += ["", f"Command: `{command}`"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"command": command, "baselines": {b: describe(finals[LABELS[b]]) for b in BASELINES},
                                                  "runs": rows}, indent=2))
    print("\n".join(lines))
    print(f"\nplot: {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
