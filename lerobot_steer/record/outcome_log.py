"""`meta/outcomes.jsonl`: one row per saved episode, and the status line printed after each.

The per-frame columns are what training reads; this table is what a person reads (and what a
success rate is computed from without opening parquet files): episode index, label, failure reason,
score, length and when it was saved. It lives in the dataset's `meta/` folder, next to LeRobot's own
episode metadata, and `--resume=true` appends to it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from .keys import describe
from .outcomes import FAILURE, INTERRUPTED, LABELS, PARTIAL, SUCCESS, UNLABELLED, Outcome

logger = logging.getLogger(__name__)

OUTCOMES_FILE = "meta/outcomes.jsonl"


def read_outcomes(root: str | Path) -> list[dict]:
    """The rows of `<root>/meta/outcomes.jsonl` (none if the file does not exist)."""
    path = Path(root) / OUTCOMES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OutcomeLog:
    """Appends rows to `<root>/meta/outcomes.jsonl` and keeps the running counts of this dataset."""

    def __init__(self, root: str | Path, total_episodes: int):
        self.path = Path(root) / OUTCOMES_FILE
        rows = read_outcomes(root)
        if len(rows) != total_episodes:
            logger.warning(
                "%s lists %d episodes but the dataset has %d (recorded partly by another tool?): the counts "
                "below cover the listed ones only", self.path, len(rows), total_episodes)
        self.counts = Counter(row["label"] for row in rows)
        self.discarded = 0

    def add(self, episode_index: int, outcome: Outcome, length: int, task: str, extra: dict | None = None) -> dict:
        """Append one row; `extra` adds columns (lerobot-steer-eval-real: the policy, round and scene)."""
        row = {"episode_index": episode_index, **outcome.as_dict(), "success": outcome.success,
               "length": length, "task": task, **(extra or {}),
               "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.counts[outcome.label] += 1
        return row

    def status(self, episode_index: int, outcome: Outcome, length: int) -> str:
        """One terminal line: the episode just saved, then the dataset's running counts."""
        c = self.counts
        others = ", ".join(f"{c[label]} {label}" for label in (PARTIAL, UNLABELLED, INTERRUPTED) if c[label])
        line = (f"episode {episode_index}: {describe(outcome)}, {length} frames | "
                f"{c[SUCCESS]} success, {c[FAILURE]} failure")
        if others:
            line += f", {others}"
        if self.discarded:
            line += f" | {self.discarded} discarded"
        return line


def dataset_card_description(root: str | Path) -> str:
    """The "Dataset Description" of the dataset card a push writes (LeRobot's card template): what the
    outcome columns mean and the label counts of meta/outcomes.jsonl, with the success rate and its
    Wilson 95 % interval over the labelled episodes."""
    from lerobot_steer.evaluation.stats import wilson_interval

    rows = read_outcomes(root)
    counts = Counter(row["label"] for row in rows)
    reasons = Counter(row.get("reason") for row in rows if row["label"] == FAILURE and row.get("reason"))
    labelled = sum(counts[label] for label in (SUCCESS, FAILURE, PARTIAL))
    lines = [
        "Episodes recorded with outcome labels by lerobot-steer (the `lerobot_policy_steer` package): each episode "
        "was labelled "
        "when it ended (a key, or the simulation's own success signal). Per frame, `next.reward` is the "
        "episode's reward on its last frame (1 success, 0 failure, the score for partial) and 0 before, "
        "`next.success` marks a successful last frame and `next.done` the last frame. `meta/outcomes.jsonl` "
        "lists every episode's label, failure reason, score and length.",
        "",
        "| label | episodes |",
        "|---|---|",
        *(f"| {label} | {counts[label]} |" for label in LABELS if counts[label]),
    ]
    if labelled:
        low, high = wilson_interval(counts[SUCCESS], labelled)
        lines += ["", f"Success rate over the {labelled} labelled episodes: {counts[SUCCESS] / labelled:.1%} "
                      f"(Wilson 95 % interval {low:.1%} - {high:.1%})."]
    if reasons:
        lines += ["", "Failure reasons: " + ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()) + "."]
    return "\n".join(lines)
