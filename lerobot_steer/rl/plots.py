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


def plot_learning_curves(curves: dict[str, dict], path: Path, *, references: dict[str, tuple] | None = None,
                         ylabel_suffix: str = "", reward_type: str = "", title: str | None = None,
                         wall: dict[str, dict] | None = None) -> Path:
    """curves: {label: {run name: (success curve, return curve)}}; references: {label: (success, return
    or None)}, flat lines. With `wall` ({label: {run: (success vs wall minutes, [])}}) the second panel
    is success against wall-clock minutes instead of the eval return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=120)
    second = (axes[1], 0, "eval success rate", "wall-clock minutes (training)", wall) if wall is not None else (
        axes[1], 1, f"eval return ({reward_type} reward)" if reward_type else "eval return", "env steps", curves)
    panels = ((axes[0], 0, "eval success rate", "env steps", curves), second)
    styles = iter(("--", ":", "-."))
    ref_styles = {label: next(styles, "--") for label in (references or {})}
    for ax, index, ylabel, xlabel, data in panels:
        for label, value in (references or {}).items():
            if value is not None and value[index] is not None:
                ax.axhline(value[index], color="grey" if ref_styles[label] == "--" else "black",
                           linestyle=ref_styles[label], label=f"{label} ({value[index]:.2g})")
        for label, by_run in data.items():
            series = [c[index] for c in by_run.values() if c[index]]
            if not series:
                continue
            runs = f" ({len(series)} seeds)" if len(series) > 1 else ""
            if data is wall:  # x differs per run: one line per run
                color = None
                for i, c in enumerate(series):
                    line = ax.plot(*zip(*c, strict=True), marker="o", markersize=3, color=color,
                                   label=f"{label}{runs}" if i == 0 else None)[0]
                    color = line.get_color()
                continue
            steps = sorted(set.intersection(*({s for s, _ in c} for c in series)))
            if not steps:
                continue
            values = [[dict(c)[s] for c in series] for s in steps]
            mean = [statistics.fmean(v) for v in values]
            line = ax.plot(steps, mean, marker="o", markersize=3, label=f"{label}{runs}")[0]
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{ylabel}, {ylabel_suffix}" if ylabel_suffix else ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        if index == 0:
            ax.set_ylim(-0.02, 1.02)
    fig.suptitle(title or "SO-101 sim pick-and-place: online fine-tuning (mean, min-max over seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
