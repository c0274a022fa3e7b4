"""The config of `lerobot-steer-eval-real`: `lerobot-steer-record`'s, plus the policies and the session.

It is `LabelledRecordConfig` (so `--robot.*`, `--teleop.*`, `--dataset.*`, `--outcome.*`, `--display_data`,
`--play_sounds`, `--resume` mean what they mean for `lerobot-record` and `lerobot-steer-record`) with:

* `--policy_paths`: the checkpoints (folders, Hub ids, `builtin:hold`, `builtin:expert` on so101_sim,
  `noise:<kind>:<checkpoint>`), loaded as `lerobot-steer-eval` loads them;
* `--dataset.num_episodes`: episodes *per checkpoint* (rounds); every round runs each checkpoint once;
* `--reset.*`: how the scene and the arm get back to the start between episodes;
* `--label_source`, `--order`, `--seed`, `--max_relative_target`, `--device`, `--output_dir`, `--realtime`,
  `--return_to_start`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lerobot_steer.config_error import ConfigError
from lerobot_steer.sim.robot import SO101SimConfig

from .config import LabelledDatasetRecordConfig, LabelledRecordConfig
from .keys import KEYS

RESET_MODES = ("countdown", "start_pose", "teleop")
LABEL_SOURCES = ("keys", "sim")
ORDERS = ("interleaved", "random")
# Largest change of a joint target from the present position per action, in the robot's units (degrees
# for the SO-101 arm joints with LeRobot's default use_degrees=true, percent of the range for the gripper).
# 10 per step is 300 deg/s at 30 fps: a trained policy's targets stay well inside it, a policy that
# jumps (bad normalization stats, another robot's joint order) is slowed to a motion one can stop.
DEFAULT_MAX_RELATIVE_TARGET = 10.0


@dataclass
class ResetConfig:
    # countdown: the operator resets the scene by hand during a countdown of time_s (right arrow / n
    # starts the next episode early). start_pose: the arm first moves slowly (move_time_s, capped per step
    # by the robot's max_relative_target) to start_pose, then the countdown. teleop: the leader arm
    # (--teleop.*) drives the follower for time_s, as in lerobot-record's reset period.
    mode: str = "countdown"
    # Seconds of each reset period (skipped after the last episode); default: --dataset.reset_time_s.
    time_s: float | None = None
    # start_pose: joint targets, e.g. "{shoulder_pan.pos: 0, shoulder_lift.pos: -90, ...}" (keys with or
    # without '.pos'; joints left out keep their present position). Default: the pose the arm had when the
    # session started (saved with the session, so --resume returns to the same pose).
    start_pose: dict[str, float] | None = None
    # start_pose: seconds of the move to start_pose.
    move_time_s: float = 3.0

    def __post_init__(self):
        if self.mode not in RESET_MODES:
            raise ConfigError(f"--reset.mode={self.mode}: one of {RESET_MODES}.")
        if self.time_s is not None and not (math.isfinite(self.time_s) and self.time_s >= 0):
            raise ConfigError(f"--reset.time_s={self.time_s}: seconds >= 0.")
        if not (math.isfinite(self.move_time_s) and self.move_time_s > 0):
            raise ConfigError(f"--reset.move_time_s={self.move_time_s}: seconds > 0.")


@dataclass
class EvalDatasetConfig(LabelledDatasetRecordConfig):
    # Episodes per checkpoint: every round runs each checkpoint once (the session records
    # num_episodes x len(policy_paths) episodes).
    num_episodes: int = 10


@dataclass
class EvalRealConfig(LabelledRecordConfig):
    dataset: EvalDatasetConfig
    # Checkpoints to compare: folders (.../pretrained_model) or Hub ids, any policy type; builtin:hold
    # (the arm stays put); builtin:expert (so101_sim only: the scripted expert, an oracle ceiling).
    policy_paths: list[str] = field(default_factory=list)
    reset: ResetConfig = field(default_factory=ResetConfig)
    # keys: the operator's label keys. sim (so101_sim only): the sim's own success signal and failure
    # taxonomy; an episode ends at the first success.
    label_source: str = "keys"
    # interleaved: every round runs the checkpoints in the order given; random: a seeded shuffle per round.
    # Either way every checkpoint meets round i's scene (so101_sim: the same seeded scene), and drift in
    # the scene or the arm affects them all alike.
    order: str = "interleaved"
    # Blind labelling: the console never names the checkpoint of an episode (nor the per-checkpoint counts)
    # until the session ends, so the operator's labels cannot favour one; the episodes run in a seeded
    # random order (--order=random is implied). The dataset and the report record which ran, as always.
    blind: bool = False
    # Seed of the random order and, on so101_sim, of the scenes: round i draws scene seed + i.
    seed: int = 1000
    # Applied to a real robot whose config has a max_relative_target field left unset (None: no cap).
    # Not applied to so101_sim (its results then match lerobot-steer-eval); set --robot.max_relative_target
    # there to try a cap.
    max_relative_target: float | None = DEFAULT_MAX_RELATIVE_TARGET
    # Inference device; default: cuda if available, else cpu.
    device: str | None = None
    # Where eval_report.json, results.md and success_rates.png go (rewritten after every episode).
    # Default: <dataset root>/eval.
    output_dir: str | None = None
    # Pace the control loop at --dataset.fps in wall-clock time. Default: on for real robots; off on
    # so101_sim, whose clock only advances with each action (episodes then last episode_time_s x fps frames).
    realtime: bool | None = None
    # Move the arm to the start pose (--reset.start_pose, or the pose at the start) when the session
    # ends, before the robot disconnects and, on so101_follower, its motors go limp, as lerobot-rollout's
    # --return_to_initial_position. Default: on for real robots, off on so101_sim.
    return_to_start: bool | None = None

    def __post_init__(self):
        # Not RecordConfig's check (a teleoperator is required there): here it is optional.
        if not self.policy_paths:
            raise ConfigError("give at least one checkpoint: --policy_paths='[<dir>/pretrained_model,...]'")
        if not self.dataset.repo_id:
            raise ConfigError("--dataset.repo_id is required (e.g. local/eval_so101 or <hf_user>/eval_so101).")
        if self.dataset.num_episodes < 1:
            raise ConfigError(f"--dataset.num_episodes={self.dataset.num_episodes}: episodes per checkpoint, >= 1.")
        if self.label_source not in LABEL_SOURCES:
            raise ConfigError(f"--label_source={self.label_source}: one of {LABEL_SOURCES}.")
        if self.label_source == "sim" and not isinstance(self.robot, SO101SimConfig):
            raise ConfigError(f"--label_source=sim needs --robot.type=so101_sim (the robot is {self.robot.type}); "
                              "label a real arm's episodes with keys (--label_source=keys).")
        if self.order not in ORDERS:
            raise ConfigError(f"--order={self.order}: one of {ORDERS}.")
        if self.blind and self.order == "interleaved" and len(self.policy_paths) > 1:
            self.order = "random"  # an interleaved order would tell the operator which checkpoint runs
        if self.reset.mode == "teleop" and self.teleop is None:
            raise ConfigError("--reset.mode=teleop needs a leader arm: --teleop.type=so101_leader --teleop.port=... "
                              "--teleop.id=...")
        if self.teleop is not None and self.reset.mode != "teleop":
            raise ConfigError(f"--teleop.* is only used by --reset.mode=teleop (the mode is {self.reset.mode}); "
                              "drop it or choose --reset.mode=teleop.")
        if self.max_relative_target is not None and not self.max_relative_target > 0:
            raise ConfigError(f"--max_relative_target={self.max_relative_target}: > 0, or null for no cap.")
        if self.is_sim and self.robot.fps != self.dataset.fps:
            raise ConfigError(f"--robot.fps={self.robot.fps} and --dataset.fps={self.dataset.fps}: the sim robot "
                              "advances 1/robot.fps per action, so the dataset's timestamps need the same rate.")
        if self.reset.time_s is None:
            self.reset.time_s = float(self.dataset.reset_time_s)
        if not self.dataset.episode_time_s * self.dataset.fps >= 1:
            raise ConfigError(f"--dataset.episode_time_s={self.dataset.episode_time_s}: seconds, at least one frame "
                              f"at --dataset.fps={self.dataset.fps}.")

    @property
    def is_sim(self) -> bool:
        return isinstance(self.robot, SO101SimConfig)

    def return_to_start_at_end(self, is_sim: bool) -> bool:
        return self.return_to_start if self.return_to_start is not None else not is_sim

    def apply_safety_defaults(self) -> float | dict | None:
        """Set `--max_relative_target` on a real robot's config that has the field unset; returns the cap
        the robot will use (None: none)."""
        if not hasattr(self.robot, "max_relative_target"):
            return None
        if self.robot.max_relative_target is None and not self.is_sim and self.max_relative_target is not None:
            self.robot.max_relative_target = float(self.max_relative_target)
        return self.robot.max_relative_target


EvalRealConfig.__doc__ = (
    "lerobot-steer-eval-real: compare policies on a LeRobot robot (so101_follower, or so101_sim), episodes "
    "interleaved across checkpoints, each labelled by key (or by the sim), recorded as a LeRobot dataset, with "
    "success rates, 95 % Wilson intervals and paired McNemar tests.\n\n" + KEYS
)
