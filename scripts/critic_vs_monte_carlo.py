"""How right is a run's critic? Q against the Monte-Carlo returns of the episodes it was trained on.

Reads a `lerobot-steer-rl` checkpoint (`<run>/checkpoints/<step>`): the policy and the replay buffer,
whose rows are stored in collection order (one row per env per loop step). For every episode that
ended by termination (success) inside the buffer, the discounted learning return of each chunk
(r - reward_offset per env step, gamma per chunk, as the critics learn it) is exact; for episodes
cut by the time limit it is a truncated sum (no bootstrap), shown separately. Prints, per part of the
run, the critic's mean (min over heads) against the mean MC return, their correlation, and the bias,
and writes a scatter PNG next to the checkpoint.

    python scripts/critic_vs_monte_carlo.py <run>/checkpoints/last [--n_envs 8]

Works for dsrl (critic on the stored noise for SAC, on the executed chunk for NA) and dyna_vgd.
"""

import argparse
import json
from pathlib import Path

import torch

from lerobot.policies.factory import make_pre_post_processors

import lerobot_steer  # noqa: F401  (registers the policy types)
from lerobot_steer.policies.common.frozen_base import observations
from lerobot_steer.rl.replay_buffer import ChunkReplayBuffer


def load(checkpoint: Path):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class

    model = checkpoint / "pretrained_model"
    config = PreTrainedConfig.from_pretrained(model)
    config.device = "cpu"
    policy = get_policy_class(config.type).from_pretrained(model, config=config)
    pre, _ = make_pre_post_processors(config, pretrained_path=str(model),
                                      preprocessor_overrides={"device_processor": {"device": "cpu"}})
    buffer = ChunkReplayBuffer.load(checkpoint / "training_state" / "replay_buffer.safetensors")
    return policy.eval(), pre, buffer


def mc_returns(reward, n_steps, done, truncated, n_envs: int, gamma: float, offset: float, n_exec: int):
    """Per row: discounted learning return to the episode end (rows are env-interleaved)."""
    rows = len(reward)
    ret = torch.full((rows,), float("nan"))
    exact = torch.zeros(rows, dtype=torch.bool)
    for env in range(n_envs):
        idx = list(range(env, rows, n_envs))
        g, closed, ends_in_success = 0.0, False, False
        for i in reversed(idx):
            if done[i] or truncated[i]:
                g, closed, ends_in_success = 0.0, True, bool(done[i])
            if not closed:
                continue  # the episode still running at the checkpoint: no return yet
            learn = float(reward[i]) - offset * float(n_steps[i])
            g = learn + gamma ** (float(n_steps[i]) / n_exec) * g
            ret[i], exact[i] = g, ends_in_success
    return ret, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--n_envs", type=int, default=8)
    args = parser.parse_args()
    policy, pre, buffer = load(args.checkpoint)
    st = buffer.storage
    n = len(buffer)
    c = policy.config
    ret, exact = mc_returns(st["reward"][:n], st["complementary_info.n_steps"][:n], st["done"][:n].bool(),
                            st["truncated"][:n].bool(), args.n_envs, c.discount, c.reward_offset, c.n_exec)
    batch = pre({k.removeprefix("state."): v[:n].float() for k, v in st.items() if k.startswith("state.")})
    obs = observations(batch)
    action = st["complementary_info.noise"][:n] if getattr(c, "variant", None) == "sac" else st["action"][:n].reshape(n, -1)
    with torch.no_grad():
        q = torch.cat([policy.critic({k: v[i:i + 512] for k, v in obs.items()}, action[i:i + 512]).min(0).values
                       for i in range(0, n, 512)])
    report = {}
    thirds = torch.arange(n) * 3 // n
    for name, mask in (("successful episodes", exact), ("time-limited episodes (truncated sums)", ~exact & ~ret.isnan())):
        for part in range(3):
            m = mask & (thirds == part)
            if m.sum() < 10:
                continue
            qs, rs = q[m], ret[m]
            corr = float(torch.corrcoef(torch.stack([qs, rs]))[0, 1])
            report[f"{name}, part {part + 1}/3 of the run"] = {
                "transitions": int(m.sum()), "q_mean": float(qs.mean()), "mc_return_mean": float(rs.mean()),
                "bias": float((qs - rs).mean()), "correlation": corr}
    for k, v in report.items():
        print(f"{k}: " + ", ".join(f"{a}={b:.3g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items()))
    (args.checkpoint / "critic_vs_monte_carlo.json").write_text(json.dumps(report, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    ok = ~ret.isnan()
    ax.scatter(ret[ok & exact], q[ok & exact], s=3, alpha=0.4, label="episodes that succeeded (exact return)")
    ax.scatter(ret[ok & ~exact], q[ok & ~exact], s=3, alpha=0.4, label="time-limited (truncated sum)")
    lo = float(min(ret[ok].min(), q[ok].min()))
    ax.plot([lo, 0], [lo, 0], "k--", lw=1, label="Q = return")
    ax.set_xlabel("Monte-Carlo learning return")
    ax.set_ylabel("critic Q (min over heads)")
    ax.legend(fontsize=7)
    ax.set_title(f"critic vs Monte-Carlo, {args.checkpoint.parent.parent.name}")
    fig.tight_layout()
    fig.savefig(args.checkpoint / "critic_vs_monte_carlo.png")
    print(f"plot: {args.checkpoint / 'critic_vs_monte_carlo.png'}")


if __name__ == "__main__":
    main()
