"""The report of `lerobot-steer-eval-real`, computed from `meta/outcomes.jsonl` alone.

Every saved episode has a row there (its checkpoint, round, label, length, and on so101_sim the sim's
own outcome), so the report after any episode, after Ctrl-C or after `--resume=true` is the same
function of the same rows. It has the shape `lerobot-steer-eval` writes (`evaluation/report.py`'s
`write_outputs` draws the table and the chart from it), with:

* one `EpisodeResult`-like entry per counted episode: a label of `success`, `failure` or `partial`.
  `unlabelled` and `interrupted` episodes stay in the dataset but are not counted (a success rate
  over guesses is not one); they are listed per checkpoint under `not_counted`;
* `outcome`: `success`, the failure reason (`--outcome.failure_reasons`, by default the sim's
  taxonomy), `failure` (no reason given) or `partial`;
* steps to success: frames up to the success key (labels by keys) or to the first frame the sim
  reports success (`--label_source=sim`); `ret`: the label's score (1, 0, or N/10);
* `paired`: an exact McNemar test (`evaluation/stats.py`) for every pair of checkpoints, on the rounds
  both finished with a counted label (`paired_vs_first`: those against the first checkpoint).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from lerobot_steer.evaluation.report import seed_ranges, write_outputs
from lerobot_steer.evaluation.stats import paired_comparison, summarize

from .outcomes import FAILURE, INTERRUPTED, PARTIAL, SUCCESS, UNLABELLED

COUNTED = (SUCCESS, FAILURE, PARTIAL)


@dataclass
class ArmEpisode:
    """One counted episode, with the attributes `evaluation.stats.summarize` reads."""

    index: int  # the round
    seed: int | None  # so101_sim: the scene seed of the round
    success: bool
    outcome: str
    steps: int
    steps_to_success: int | None
    ret: float
    episode_index: int  # in the dataset
    label: str
    reason: str | None = None
    video: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["round"] = d.pop("index")
        d["return"] = d.pop("ret")
        return d


def episode_of(row: dict) -> ArmEpisode:
    label = row["label"]
    success = label == SUCCESS
    outcome = SUCCESS if success else PARTIAL if label == PARTIAL else (row.get("reason") or FAILURE)
    if success:
        to_success = row.get("sim_steps_to_success") if row.get("label_source") == "sim" else row["length"]
        to_success = to_success if to_success is not None else row["length"]
    else:
        to_success = None
    return ArmEpisode(index=row["round"], seed=row.get("scene_seed"), success=success, outcome=outcome,
                      steps=row["length"], steps_to_success=to_success, ret=float(row.get("score") or 0.0),
                      episode_index=row["episode_index"], label=label, reason=row.get("reason"))


def _counted_by_round(rows: list[dict], label: str) -> dict[int, ArmEpisode]:
    """Round -> the checkpoint's counted episode (the last one saved, if a round was run twice)."""
    return {row["round"]: episode_of(row) for row in rows if row.get("policy") == label and row["label"] in COUNTED}


def build_real_report(session: dict, rows: list[dict], dataset: dict) -> dict:
    """The report of a session (`session`: meta/eval_session.json) from its outcome rows."""
    labels = session["labels"]
    fps = session["fps"]
    by_label = {label: _counted_by_round(rows, label) for label in labels}
    checkpoints = []
    for label, path, policy_type in zip(labels, session["policy_paths"], session["policy_types"], strict=True):
        episodes = [by_label[label][r] for r in sorted(by_label[label])]
        mine = [row for row in rows if row.get("policy") == label]
        not_counted = {k: sum(row["label"] == k for row in mine) for k in (UNLABELLED, INTERRUPTED)}
        to_success = [e.steps_to_success for e in episodes if e.success and e.steps_to_success is not None]
        checkpoints.append({
            "label": label, "path": path, "policy_type": policy_type,
            "summary": summarize(episodes).to_dict(),
            "mean_seconds_to_success": statistics.fmean(to_success) / fps if to_success else None,
            "not_counted": not_counted, "videos": [], "episodes": [e.to_dict() for e in episodes],
        })
    paired = []
    for a, b in itertools.combinations(labels, 2):
        common = sorted(set(by_label[a]) & set(by_label[b]))
        test = paired_comparison([by_label[a][r].success for r in common], [by_label[b][r].success for r in common])
        paired.append({"reference": a, "candidate": b, "n_pairs": len(common), **test})
    rounds = sorted({row["round"] for row in rows if row.get("policy") in labels})
    is_sim = session["is_sim"]
    seeds = [session["seed"] + r for r in rounds] if is_sim else []
    n = max((c["summary"]["n_episodes"] for c in checkpoints), default=0)
    where = f", scene seeds {seed_ranges(seeds)}" if seeds else ""
    title = (f"Evaluation on {session['robot_type']} ({n} episodes per checkpoint, {session['order']} order"
             f"{where}; labels: {'the sim' if session['label_source'] == 'sim' else 'keys'})")
    return {
        "env": {"type": session["robot_type"], "robot_id": session.get("robot_id"), "task": session["task"],
                "fps": fps, "label_source": session["label_source"], "reset_mode": session["reset_mode"],
                "max_relative_target": session.get("max_relative_target")},
        "title": title,
        "order": session["order"],
        "seed": session["seed"],
        "n_episodes": n,
        "seeds": seeds,
        "rounds": rounds,
        "dataset": dataset,
        "checkpoints": checkpoints,
        "paired_vs_first": [p for p in paired if p["reference"] == labels[0]],
        "paired": paired,
        "notes": _notes(session, checkpoints, dataset),
    }


def _notes(session: dict, checkpoints: list[dict], dataset: dict) -> list[str]:
    fps = session["fps"]
    if session["label_source"] == "sim":
        how = "the first frame the sim reports success"
    else:
        how = "the frame the success key ended the episode"
    times = ", ".join(f"{c['label']} {c['mean_seconds_to_success']:.1f} s" if c["mean_seconds_to_success"] is not None
                      else f"{c['label']} –" for c in checkpoints)
    notes = [f"Steps to success: frames at {fps} fps up to {how}. Mean time to success: {times}."]
    skipped = [f"{c['label']}: " + ", ".join(f"{n} {k}" for k, n in c["not_counted"].items() if n)
               for c in checkpoints if any(c["not_counted"].values())]
    if skipped:
        notes.append("Not counted (kept in the dataset): " + "; ".join(skipped) + ".")
    cap = session.get("max_relative_target")
    notes.append(f"Robot: {session['robot_type']}, resets: {session['reset_mode']}, max_relative_target: "
                 f"{cap if cap is not None else 'none'}.")
    notes.append(f"Episodes: {dataset['root']} (repo_id {dataset['repo_id']}); one row each in meta/outcomes.jsonl.")
    return notes


def write_real_report(session: dict, rows: list[dict], dataset: dict, output_dir: Path) -> tuple[dict, dict]:
    """Build the report and write eval_report.json, results.md and success_rates.png; returns both."""
    report = build_real_report(session, rows, dataset)
    return report, write_outputs(report, Path(output_dir))
