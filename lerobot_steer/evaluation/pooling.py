"""Pool several `lerobot-steer-eval` reports of the same checkpoints over disjoint seed sets.

A held-out claim needs a few hundred episodes; they are run as separate evaluations (e.g. seeds
200000+ and 400000+, 100 each) so that each stays short and resumable. Pooling concatenates each
checkpoint's episodes across the reports (checkpoints matched by position, as they were passed to
`--policy_paths`, or by path, when a later call evaluated more checkpoints on the same seeds) and recomputes what a single evaluation would have reported: Wilson intervals,
failure counts and exact McNemar tests on the paired seeds. Because a gain only counts when it beats
every free trick of the base, each steered checkpoint is also tested against every free baseline in
the pool: the base itself and the base on a chosen noise (`noise:<kind>:<base>`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from .stats import paired_comparison, summarize

STEERING_TYPES = ("dsrl", "dyna_vgd")


def is_free_baseline(checkpoint: dict) -> bool:
    """A base as it is (any non-steering policy) or on a chosen initial noise: nothing trained."""
    return str(checkpoint["path"]).startswith("noise:") or checkpoint["policy_type"] not in STEERING_TYPES


def _episode(d: dict) -> SimpleNamespace:
    """An `EpisodeResult`-like view of a report's episode dict (its `return` is `ret` there)."""
    return SimpleNamespace(**{("ret" if k == "return" else k): v for k, v in d.items()})


MATCHES = ("position", "path")


def pool_reports(reports: list[dict], labels: list[str] | None = None, match: str = "position") -> dict:
    """One report (the shape `lerobot-steer-eval` writes) over the union of the reports' episodes.

    match "position": the reports were run with the same `--policy_paths` list on disjoint seed sets;
    checkpoint k of every report is the same checkpoint. match "path": checkpoints are matched by their
    path, in order of first appearance, and their episodes merged by seed, so a checkpoint evaluated
    in a later call on the same seeds (a run that finished after its baselines were evaluated) joins
    the table and is paired with the baselines seed by seed.

    Raises ValueError when pooling would count an episode twice (shared seeds by position, the same
    checkpoint twice on one seed by path: the intervals would shrink without new evidence) or when
    the checkpoints do not end up on the same seeds (the table and its paired tests assume they do).
    """
    if not reports:
        raise ValueError("pool_reports needs at least one eval_report.json")
    if match not in MATCHES:
        raise ValueError(f"match={match!r}: use one of {MATCHES}")
    merged = _merge_by_position(reports) if match == "position" else _merge_by_path(reports)
    seeds = sorted(next(iter(merged.values()))[1])
    for path, (_, by_seed) in merged.items():
        if sorted(by_seed) != seeds:
            missing = sorted(set(seeds) - set(by_seed))[:5] or sorted(set(by_seed) - set(seeds))[:5]
            raise ValueError(f"{path} was not evaluated on the same seeds as the others (e.g. {missing}): "
                             "pool reports whose checkpoints cover the same seed sets")
    labels = labels or [first["label"] for first, _ in merged.values()]
    if len(labels) != len(merged):
        raise ValueError(f"{len(labels)} labels for {len(merged)} checkpoints")
    checkpoints = []
    for label, (first, by_seed) in zip(labels, merged.values(), strict=True):
        episodes = [by_seed[s] for s in seeds]
        checkpoints.append({"label": label, "path": first["path"], "policy_type": first["policy_type"],
                            "free_baseline": is_free_baseline(first),
                            "summary": summarize([_episode(e) for e in episodes]).to_dict(), "videos": [],
                            "episodes": episodes})
    successes = {c["label"]: [e["success"] for e in c["episodes"]] for c in checkpoints}
    paired_vs_first = [{"reference": labels[0], "candidate": label, **paired_comparison(successes[labels[0]], s)}
                       for label, s in list(successes.items())[1:]]
    free = [c["label"] for c in checkpoints if c["free_baseline"]]
    paired_vs_free = [{"reference": ref, "candidate": label, **paired_comparison(successes[ref], s)}
                      for label, s in successes.items() if label not in free for ref in free]
    return {"env": reports[0]["env"], "n_episodes": len(seeds), "seeds": seeds, "checkpoints": checkpoints,
            "paired_vs_first": paired_vs_first, "paired_vs_free_baselines": paired_vs_free,
            "pooled_from": len(reports)}


def _merge_by_position(reports: list[dict]) -> dict[str, tuple[dict, dict[int, dict]]]:
    """{key: (first checkpoint entry, {seed: episode})}, checkpoint k of every report as one."""
    counts = {len(r["checkpoints"]) for r in reports}
    if len(counts) != 1:
        raise ValueError(f"the reports hold different numbers of checkpoints {sorted(counts)}: pool evaluations "
                         "run with the same --policy_paths list, or match checkpoints by path (--match path)")
    seeds = [s for r in reports for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError("the reports share seeds: pool evaluations on disjoint seed sets (e.g. --seed=200000 "
                         "and --seed=400000), or match checkpoints by path (--match path)")
    merged = {}
    for k, first in enumerate(reports[0]["checkpoints"]):
        episodes = [e for r in reports for e in r["checkpoints"][k]["episodes"]]
        merged[f"#{k} {first['path']}"] = (first, {e["seed"]: e for e in episodes})
    return merged


def _merge_by_path(reports: list[dict]) -> dict[str, tuple[dict, dict[int, dict]]]:
    """{path: (first entry with that path, {seed: episode})} over every report."""
    merged: dict[str, tuple[dict, dict[int, dict]]] = {}
    for report in reports:
        for entry in report["checkpoints"]:
            _, by_seed = merged.setdefault(str(entry["path"]), (entry, {}))
            for e in entry["episodes"]:
                if e["seed"] in by_seed:
                    raise ValueError(f"{entry['path']} was evaluated twice on seed {e['seed']}: pool each "
                                     "checkpoint's episodes once (drop the repeated report)")
                by_seed[e["seed"]] = e
    return merged


def free_baseline_lines(report: dict) -> list[str]:
    """Markdown lines: each steered checkpoint against each free baseline, and whether its Wilson
    interval clears every baseline's."""
    by_label = {c["label"]: c["summary"] for c in report["checkpoints"]}
    free = [c["label"] for c in report["checkpoints"] if c.get("free_baseline")]
    lines = []
    for p in report.get("paired_vs_free_baselines", []):
        lines.append(f"- {p['candidate']} vs {p['reference']}: +{p['gained']} / -{p['lost']} seeds, "
                     f"p = {p['p_value']:.2g}")
    for label, s in by_label.items():
        if label in free or not free:
            continue
        best = max(free, key=lambda f: by_label[f]["ci95"][1])
        top = by_label[best]["ci95"][1]
        verdict = ("clears every free baseline's" if s["ci95"][0] > top
                   else f"does not clear {best}'s")  # an interval can overlap the best and clear the rest
        lines.append(f"- {label}: interval {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f} % {verdict} "
                     f"(highest upper bound {100 * top:.1f} %)")
    return lines


def load_reports(paths: list[Path]) -> list[dict]:
    """The reports at `paths` (an `eval_report.json` or the folder holding one)."""
    reports = []
    for path in map(Path, paths):
        file = path / "eval_report.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no eval_report.json there; pass the --output_dir of a "
                                    "lerobot-steer-eval run or its eval_report.json")
        reports.append(json.loads(file.read_text()))
    return reports
