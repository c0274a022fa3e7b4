"""Learning-curve PNGs from `lerobot-steer-rl` runs: eval success and eval return vs env steps.

Used by `scripts/learning_curves.py` (several methods x seeds) and `make demo` (one run). Each curve
is the mean over its runs with the min-max band; references (e.g. the base alone) are flat lines.
"""

import json
import statistics
from pathlib import Path

Curve = list[tuple[int, float]]


def eval_curve(run_dir: Path, key: str = "eval/success_rate") -> Curve:
    """(env steps, value) of every evaluation row in a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["env_steps"], r[key]) for r in rows if key in r]


def run_curves(run_dir: Path) -> tuple[Curve, Curve]:
    """(success curve, return curve) of one run."""
    return eval_curve(run_dir), eval_curve(run_dir, "eval/mean_return")


def plot_learning_curves(curves: dict[str, dict], path: Path, *, references: dict[str, tuple[float, float]] | None = None,
                         ylabel_suffix: str = "", reward_type: str = "", title: str | None = None) -> Path:
    """curves: {label: {run name: (success curve, return curve)}}; references: {label: (success, return)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=120)
    panels = ((axes[0], 0, "eval success rate"), (axes[1], 1, f"eval return ({reward_type} reward)" if reward_type else "eval return"))
    styles = iter(("--", ":", "-."))
    ref_styles = {label: next(styles, "--") for label in (references or {})}
    for ax, index, ylabel in panels:
        for label, value in (references or {}).items():
            if value is not None:
                ax.axhline(value[index], color="grey" if ref_styles[label] == "--" else "black",
                           linestyle=ref_styles[label], label=f"{label} ({value[index]:.2g})")
        for label, by_run in curves.items():
            series = [c[index] for c in by_run.values() if c[index]]
            steps = sorted(set.intersection(*(set(s for s, _ in c) for c in series))) if series else []
            if not steps:
                continue
            values = [[dict(c)[s] for c in series] for s in steps]
            mean = [statistics.fmean(v) for v in values]
            runs = f" ({len(series)} seeds)" if len(series) > 1 else ""
            line = ax.plot(steps, mean, marker="o", markersize=3, label=f"{label}{runs}")[0]
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.15)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{ylabel}, {ylabel_suffix}" if ylabel_suffix else ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle(title or "SO-101 sim pick-and-place: online fine-tuning (mean, min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
