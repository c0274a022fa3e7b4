"""What an episode's outcome label is, and the per-frame columns it becomes.

The columns are the ones `lerobot-steer-generate` writes in the sim and our offline training reads
(`policies/common/frozen_base.py`: `next.reward`, `next.success` per episode, `next.done`), with the
same names, dtypes and shapes, so a labelled recording from a real arm trains like a generated one.

A human labels an episode once, at its end, and does not say at which frame success was reached.
So the label is written on the last frame only:

* `next.reward`: sparse, the episode's score on its last frame and 0 elsewhere (success 1.0,
  failure 0.0, a partial score its value; unlabelled and interrupted episodes pay nothing). One
  reward per episode is what `--policy.reward_from_success` would derive from success, and keeps the
  return of an episode equal to its score.
* `next.success`: True on the last frame of a successful episode only. The generator marks every
  frame from the first success on (it knows when the block landed); here the last frame is the
  only one the operator vouched for. `episode_success()` (success anywhere in the episode) reads
  both the same way; `first_success_frames()` sees success at the last frame, so offline mixing cuts
  nothing from a labelled episode.
* `next.done`: True on the last frame of every saved episode, whatever its label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lerobot_steer.sim.pick_place_env import OUTCOMES, SUCCESS

REWARD, DONE, SUCCESS_COLUMN = "next.reward", "next.done", "next.success"

# The columns, exactly as lerobot_steer/sim/generate.py declares them.
OUTCOME_FEATURES: dict[str, dict] = {
    REWARD: {"dtype": "float32", "shape": (1,), "names": None},
    SUCCESS_COLUMN: {"dtype": "bool", "shape": (1,), "names": None},
    DONE: {"dtype": "bool", "shape": (1,), "names": None},
}

# Labels. `success` is the sim's own label (evaluation reports use the same word).
FAILURE = "failure"
PARTIAL = "partial"  # a score strictly between 0 and 1 (`--outcome.digits=score`)
UNLABELLED = "unlabelled"  # saved with no label key pressed (and --outcome.default_label=unlabelled)
INTERRUPTED = "interrupted"  # saved because Ctrl-C or an error ended the recording mid-episode
LABELS = (SUCCESS, FAILURE, PARTIAL, UNLABELLED, INTERRUPTED)

# The sim's failure taxonomy (`info["failure"]` of the so101_sim env, lerobot-steer-eval's report),
# the default reasons of the digit keys: 1 never_picked_up, 2 dropped_during_transport, 3 missed_bowl,
# 4 timeout.
SIM_FAILURE_REASONS: tuple[str, ...] = tuple(o for o in OUTCOMES if o != SUCCESS)


@dataclass(frozen=True)
class Outcome:
    """One episode's label. `score` is the reward its last frame pays (None: no reward, 0 is written)."""

    label: str
    reason: str | None = None
    score: float | None = None

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"unknown outcome label '{self.label}'; one of {LABELS}")
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"outcome score {self.score} is outside [0, 1]")

    @property
    def success(self) -> bool:
        return self.label == SUCCESS

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_success(cls) -> Outcome:
        return cls(SUCCESS, None, 1.0)

    @classmethod
    def of_failure(cls, reason: str | None = None) -> Outcome:
        return cls(FAILURE, reason, 0.0)

    @classmethod
    def of_score(cls, score: float) -> Outcome:
        """A graded episode: 1 is a success, 0 a failure, anything between `partial`."""
        if score >= 1.0:
            return cls.of_success()
        if score <= 0.0:
            return cls.of_failure()
        return cls(PARTIAL, None, float(score))

    @classmethod
    def unlabelled(cls) -> Outcome:
        return cls(UNLABELLED)

    @classmethod
    def interrupted(cls, error: BaseException) -> Outcome:
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__
        return cls(INTERRUPTED, reason)


def frame_defaults() -> dict[str, np.ndarray]:
    """The outcome columns of every frame while the episode runs (what all but the last frame keep)."""
    return {
        REWARD: np.zeros(1, dtype=np.float32),
        SUCCESS_COLUMN: np.zeros(1, dtype=bool),
        DONE: np.zeros(1, dtype=bool),
    }


def last_frame_columns(outcome: Outcome) -> dict[str, np.ndarray]:
    """The outcome columns of an episode's last frame under `outcome`."""
    return {
        REWARD: np.array([outcome.score or 0.0], dtype=np.float32),
        SUCCESS_COLUMN: np.array([outcome.success]),
        DONE: np.array([True]),
    }
