"""How far can steering the initial noise take a base? Per-state success over many noise draws.

Noise steering never changes what the base can decode; it only chooses among the chunks the base
produces for some noise. This script measures that room before any RL: for `--states` initial
states (block and bowl placements), it runs the base `--draws` times with fresh noise of each
`--kinds` (see `lerobot_steer.evaluation.noise_baselines`) and reports

* mean: the success rate of the noise kind itself (a free baseline);
* reach: the share of states where at least one draw succeeded, a lower bound of what a policy
  that picks the noise once per episode could reach (per-chunk steering can reach more);
* never: the states no draw solved, where the base itself has to improve.

    python scripts/steering_ceiling.py --base <base>/pretrained_model --states 25 --draws 8 \
        --kinds zero executed tanh gaussian

Seeds start at `--seed` (default 300000, apart from training and evaluation seeds). Writes
`steering_ceiling.json` and a per-state PNG into `--output_dir`.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a base checkpoint (pretrained_model folder or Hub id)")
    parser.add_argument("--states", type=int, default=25)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--kinds", nargs="+", default=["zero", "executed", "tanh", "gaussian"])
    parser.add_argument("--seed", type=int, default=300_000)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/steering_ceiling"))
    args = parser.parse_args()

    import numpy as np
    import torch

    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    from lerobot_steer.evaluation.loading import load_policy
    from lerobot_steer.evaluation.rollout import run_episodes
    from lerobot_steer.sim.env_config import SO101SimEnvConfig

    env = SO101SimEnvConfig(obs_type="state")
    seeds = [args.seed + s for s in range(args.states)]
    report = {}
    for kind in args.kinds:
        draws = 1 if kind == "zero" else args.draws  # zero noise is deterministic
        put = load_policy(f"noise:{kind}:{args.base}", env, "cpu")
        torch.manual_seed(0)
        results = run_episodes(put, env, seeds * draws, batch_size=args.states, progress=False)
        success = np.array([r.success for r in results], dtype=float).reshape(draws, args.states)
        report[kind] = {"draws": draws, "mean": success.mean(), "reach": success.max(0).mean(),
                        "never": int((success.max(0) == 0).sum()), "per_state": success.mean(0).round(3).tolist()}
        print(f"{kind:>9}: mean {report[kind]['mean']:.1%}  reach {report[kind]['reach']:.1%}  "
              f"never solved {report[kind]['never']}/{args.states} states ({draws} draws each)", flush=True)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "steering_ceiling.json").write_text(json.dumps({"base": args.base, "seeds": seeds, **report}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, args.states * 0.3), 3.2))
    width = 0.8 / len(report)
    for i, (kind, row) in enumerate(report.items()):
        ax.bar(np.arange(args.states) + i * width, row["per_state"], width, label=f"{kind} ({row['mean']:.0%})")
    ax.set_xlabel("initial state (seed offset)")
    ax.set_ylabel("success over draws")
    ax.set_title("Per-state success of the base under each noise kind")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output_dir / "steering_ceiling.png", dpi=120)
    print(f"Wrote {args.output_dir / 'steering_ceiling.json'} and steering_ceiling.png")


if __name__ == "__main__":
    main()
