"""The config of `lerobot-steer-record`: LeRobot's `RecordConfig`, plus `--outcome.*`.

Everything `lerobot-record` takes (`--robot.*`, `--teleop.*`, `--dataset.*`, `--display_data`,
`--play_sounds`, `--resume`) means the same here, because it is LeRobot's own dataclass. Two
differences: `--dataset.push_to_hub` defaults to false (a labelled recording is usually looked at
before it is shared; LeRobot's default uploads on exit), and the `--outcome.*` group below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.dataset import DatasetRecordConfig
from lerobot.scripts.lerobot_record import RecordConfig

from lerobot_steer.config_error import ConfigError

from .keys import KEYS
from .outcomes import SIM_FAILURE_REASONS, SUCCESS, UNLABELLED

DIGIT_MODES = ("reason", "score")
DEFAULT_LABELS = (UNLABELLED, SUCCESS, "failure")


@dataclass
class OutcomeConfig:
    # What digit keys mean: 'reason' (failure with reason N of failure_reasons) or 'score' (N/10).
    digits: str = "reason"
    # Failure reasons of keys 1-9, in order; default: the so101_sim failure taxonomy.
    failure_reasons: list[str] = field(default_factory=lambda: list(SIM_FAILURE_REASONS))
    # Label of an episode saved with no label key pressed: 'unlabelled' (no reward), or 'success' /
    # 'failure' when you vouch for every such episode (e.g. scripted demonstrations, no keyboard).
    default_label: str = UNLABELLED
    # A label key pressed during the episode also ends it (as right arrow / n does).
    label_ends_episode: bool = True
    # After an unlabelled episode (and its reset period), wait this many seconds for a label key
    # before saving it as default_label (only when a keyboard is available; right arrow / n skips).
    label_wait_s: float = 10.0

    def __post_init__(self):
        if self.digits not in DIGIT_MODES:
            raise ConfigError(f"--outcome.digits={self.digits}: one of {DIGIT_MODES}.")
        self.failure_reasons = list(self.failure_reasons)
        if len(self.failure_reasons) > 9 or len(set(self.failure_reasons)) != len(self.failure_reasons):
            raise ConfigError(f"--outcome.failure_reasons={self.failure_reasons}: at most 9 distinct reasons "
                              "(keys 1-9).")
        if self.default_label not in DEFAULT_LABELS:
            raise ConfigError(f"--outcome.default_label={self.default_label}: one of {DEFAULT_LABELS}.")
        if not self.label_wait_s >= 0:
            raise ConfigError(f"--outcome.label_wait_s={self.label_wait_s}: a number of seconds >= 0.")


@dataclass
class LabelledDatasetRecordConfig(DatasetRecordConfig):
    # Upload the dataset to the Hugging Face Hub when recording ends (off by default, unlike lerobot-record).
    push_to_hub: bool = False


@dataclass
class LabelledRecordConfig(RecordConfig):
    dataset: LabelledDatasetRecordConfig
    outcome: OutcomeConfig = field(default_factory=OutcomeConfig)


# `--help` prints the config class's docstring: the keys are what an operator needs first.
LabelledRecordConfig.__doc__ = (
    "lerobot-steer-record: lerobot-record with an outcome label per episode (next.reward, next.success, "
    "next.done per frame; meta/outcomes.jsonl per episode).\n\n" + KEYS
)
