"""What an evaluation leaves behind: `eval_report.json` (everything, per episode), `results.md` (the
comparison table a person reads or pastes into a PR) and `success_rates.png` (success with 95 %
intervals, one bar per checkpoint).

The chart is drawn with Pillow, which every LeRobot install has; matplotlib is not a dependency.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lerobot_steer.sim.pick_place_env import OUTCOMES, SUCCESS

from .stats import paired_comparison, summarize

FAILURES = [o for o in OUTCOMES if o != SUCCESS]


def build_report(runs: list[dict], env_options: dict, seeds: list[int]) -> dict:
    """`runs`: one dict per checkpoint with label, path, policy_type, episodes (EpisodeResult list)."""
    checkpoints = []
    for run in runs:
        episodes = run["episodes"]
        entry = {k: run[k] for k in ("label", "path", "policy_type")}
        entry["summary"] = summarize(episodes).to_dict()
        entry["videos"] = [e.video for e in episodes if e.video]
        entry["episodes"] = [e.to_dict() for e in episodes]
        checkpoints.append(entry)
    paired = []
    if len(runs) > 1:
        ref = [e.success for e in runs[0]["episodes"]]
        for run in runs[1:]:
            test = paired_comparison(ref, [e.success for e in run["episodes"]])
            paired.append({"reference": runs[0]["label"], "candidate": run["label"], **test})
    return {
        "env": {"type": "so101_sim", **env_options},
        "n_episodes": len(seeds),
        "seeds": list(seeds),
        "checkpoints": checkpoints,
        "paired_vs_first": paired,
    }


def _fmt(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def seed_ranges(seeds: list[int]) -> str:
    """"200000–200099, 400000–400099": the runs of consecutive seeds (a pooled report has several)."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ", ".join(f"{a}–{b}" if a != b else str(a) for a, b in runs)


def outcome_columns(report: dict) -> list[str]:
    """The failure columns: the sim's taxonomy, then any other outcome a checkpoint has (a real-arm
    evaluation's own failure reasons, `failure` without a reason, `partial`)."""
    extra = sorted({o for c in report["checkpoints"] for o, n in c["summary"]["outcomes"].items()
                    if n and o != SUCCESS and o not in FAILURES})
    return [*FAILURES, *extra]


def markdown_table(report: dict) -> str:
    """The comparison table (also printed to the console).

    Optional report keys (`lerobot-steer-eval-real`): `title`, `paired` (every pair of checkpoints, with
    `n_pairs`, instead of `paired_vs_first`) and `notes` (lines after the table)."""
    failures = outcome_columns(report)
    head = ["checkpoint", "success", "95 % CI", *failures, "steps to success (mean / median)", "mean return"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in report["checkpoints"]:
        s = c["summary"]
        lo, hi = s["ci95"]
        rows.append("| " + " | ".join([
            c["label"],
            f"{_fmt(100 * s['success_rate'] if s['n_episodes'] else None)} % ({s['successes']}/{s['n_episodes']})",
            f"{100 * lo:.1f}–{100 * hi:.1f} %",
            *[str(s["outcomes"].get(o, 0)) for o in failures],
            f"{_fmt(s['mean_steps_to_success'])} / {_fmt(s['median_steps_to_success'])}",
            _fmt(s["mean_return"], 3),
        ]) + " |")
    title = report.get("title") or (
        f"Evaluation on so101_sim ({report['n_episodes']} episodes, seeds "
        f"{seed_ranges(report['seeds'])}, the same for every checkpoint)")
    lines = [f"# {title}", "", *rows]
    if report.get("paired"):
        lines += ["", "Paired on rounds (exact McNemar test, every pair; the rounds both finished with a label):", ""]
        for p in report["paired"]:
            lines.append(f"- {p['candidate']} vs {p['reference']} ({p['n_pairs']} rounds): succeeds on {p['gained']} "
                         f"where it fails, fails on {p['lost']} where it succeeds; p = {p['p_value']:.3g}")
    elif report["paired_vs_first"]:
        lines += ["", "Paired on seeds (exact McNemar test against the first checkpoint):", ""]
        for p in report["paired_vs_first"]:
            lines.append(f"- {p['candidate']} vs {p['reference']}: succeeds on {p['gained']} seeds where it "
                         f"fails, fails on {p['lost']} where it succeeds; p = {p['p_value']:.3g}")
    videos = [v for c in report["checkpoints"] for v in c["videos"]]
    if videos:
        lines += ["", f"Videos: {len(videos)} under `videos/`."]
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def success_chart(report: dict, path: Path) -> None:
    """Bar chart of success rates with 95 % Wilson error bars, as a PNG."""
    checkpoints = report["checkpoints"]
    bar_w, gap, left, top, plot_h, bottom = 70, 40, 60, 40, 260, 90
    width = left + len(checkpoints) * (bar_w + gap) + gap
    height = top + plot_h + bottom
    img = Image.new("RGB", (max(width, 320), height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    draw.text((left, 10), f"Success rate, 95 % Wilson CI (n = {report['n_episodes']})", fill="black", font=font)

    def y(rate: float) -> float:
        return top + plot_h * (1 - rate)

    for tick in range(0, 101, 20):
        draw.line([(left - 4, y(tick / 100)), (img.width - 10, y(tick / 100))], fill=(225, 225, 225))
        draw.text((left - 36, y(tick / 100) - 7), f"{tick}%", fill="black", font=font)
    draw.line([(left, top), (left, top + plot_h)], fill="black")
    for k, c in enumerate(checkpoints):
        s = c["summary"]
        x0 = left + gap + k * (bar_w + gap)
        xc = x0 + bar_w / 2
        label = c["label"] if len(c["label"]) <= 14 else c["label"][:13] + "…"
        draw.text((x0, y(0) + 6), label, fill="black", font=font)
        if not s["n_episodes"]:  # no episode yet (a real-arm session interrupted early): no bar
            draw.text((x0, y(0) + 22), "–", fill="black", font=font)
            continue
        draw.rectangle([x0, y(s["success_rate"]), x0 + bar_w, y(0)], fill=(70, 130, 180))
        lo, hi = s["ci95"]
        draw.line([(xc, y(lo)), (xc, y(hi))], fill="black", width=2)
        for cap in (lo, hi):
            draw.line([(xc - 8, y(cap)), (xc + 8, y(cap))], fill="black", width=2)
        draw.text((x0, y(0) + 22), f"{100 * s['success_rate']:.0f} %", fill="black", font=font)
    img.save(path)


def write_outputs(report: dict, output_dir: Path) -> dict[str, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "eval_report.json",
        "markdown": output_dir / "results.md",
        "chart": output_dir / "success_rates.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    paths["markdown"].write_text(markdown_table(report))
    success_chart(report, paths["chart"])
    return paths
