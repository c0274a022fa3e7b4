"""`lerobot-steer-rl-robot` configuration: online steering on a LeRobot robot, parsed by draccus.

    lerobot-steer-rl-robot --robot.type=so101_follower --robot.port=/dev/ttyACM0 --robot.id=arm \
        --robot.cameras="{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}" \
        --policy.path=outputs/rl/dsrl_offline/checkpoints/last/pretrained_model \
        --task="Pick up the red block and place it in the blue bowl." --episodes=40 --output_dir=outputs/rl_robot/run1

The learner's options (`--policy.*`, `--algorithm.*`, `--utd_ratio`, `--batch_size`, `--buffer_capacity`)
mean what they mean for `lerobot-steer-rl`; the robot side (`--robot.*`, `--teleop.*`, `--reset.*`,
`--label_source`, `--outcome.*`, `--max_relative_target`) what it means for `lerobot-steer-eval-real`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.configs.policies import PreTrainedConfig
from lerobot.rl.algorithms.configs import RLAlgorithmConfig
from lerobot.robots import RobotConfig
from lerobot.teleoperators import TeleoperatorConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.config import COUNT, NON_NEGATIVE, POSITIVE, check_fields
from lerobot_steer.record.config import LabelledDatasetRecordConfig, OutcomeConfig
from lerobot_steer.record.eval_config import DEFAULT_MAX_RELATIVE_TARGET, LABEL_SOURCES, ResetConfig
from lerobot_steer.sim.robot import SO101SimConfig

from .config import (
    STEERING_TYPES,
    RayClusterConfig,
    check_runtime,
    default_utd_ratio,
    resolve_output_dir,
    resolve_policy_path,
)

UPDATE_MODES = ("between_episodes", "background")
INTERVENTION_KEYS = ("space", "i")

KEYS_HELP = """\
Keys (in the terminal running the command, or anywhere on an X11 desktop):
  s          success: reward 1 on the episode's last chunk; ends the episode
  f, 1-9     failure (1-9: with reason N of --outcome.failure_reasons): reward 0; ends the episode
  space / i  intervene: the arm stops at once and holds its position; the episode ends, marked
             "intervened" (reward 0, never a success)
  right / n  end the episode (or the reset) now; label it with s / f before the next one starts
  left / r   discard the episode (its transitions are not stored) and run it again
  esc / q    stop after this episode (it is stored, the run saved)
  d          discard this episode and stop
  Ctrl-C     stop now: the arm holds, the current episode is dropped, the run is saved
An unlabelled episode waits --outcome.label_wait_s for a label, then counts as --outcome.default_label
(unlabelled counts as a failure: reward 0)."""


@dataclass
class RobotRLConfig:
    """Online steering (DSRL-SAC, dyna_vgd) on one LeRobot robot, episode by episode.

    robot / teleop: the arm (`--robot.type=so101_follower ...`, or `so101_sim`) and, for
        `--reset.mode=teleop`, its leader arm.
    policy / algorithm: as in lerobot-steer-rl: `--policy.type=dsrl --policy.base_policy_path=<base>`
        (fresh) or `--policy.path=<dsrl/dyna_vgd checkpoint>` (e.g. trained offline on demonstrations).
    task: the task string given to the policy (language-conditioned bases need it).
    fps / episode_time_s: control rate and episode length (the chunk loop is paced to 1/fps).
    episodes: episodes in total, prefill included. prefill_episodes: episodes acting with the base on
        its own N(0, I) noise before any update.
    updates: between_episodes (after each episode is stored, while the arm waits) or background
        (a thread updates during the episodes; the arm acts with a copy of the weights, refreshed
        after every update). Either way the control loop never waits for a gradient step.
    utd_ratio: gradient steps per stored chunk transition (default: the method's, as lerobot-steer-rl).
    reset / label_source / outcome: as lerobot-steer-eval-real (`--label_source=sim` on so101_sim).
    max_relative_target: the per-step joint cap applied to a real robot whose config leaves it unset.
    realtime: pace the loop in wall-clock time (default: on for real robots, off on so101_sim).
    dataset: also record every episode as a labelled LeRobot dataset (`--dataset.repo_id=<id>
        [--dataset.root=<dir>]`, LeRobot's recording options; the outcome columns and
        meta/outcomes.jsonl as `lerobot-steer-record` writes them): the arm's episodes as they were
        played, steered, for evaluation or offline training. Its fps, task and episode length are the
        run's; `--resume=true` appends to it. Off by default.
    runtime: "local" (the arm, the keys and the learner in this process) or "ray": the arm's side
        (robot, keys, leader arm, recording, acting copy of the policy) in a Ray actor placed by
        `--ray.node_label` on the machine wired to the arm, the learner (updates, buffer, checkpoints)
        here, e.g. on a GPU machine; each episode goes out with the newest weights and comes back as
        its chunk transitions. `--ray.address=auto` joins a running cluster. Checkpoints are the same,
        so either runtime resumes the other's run. A worker that dies is restarted by Ray (the arm
        reconnects) and the episode it was playing is lost and counted.
    resume: continue the run in --output_dir from its last checkpoint (the episode in progress at a
        crash is lost, every stored one is kept).
    """

    robot: RobotConfig
    teleop: TeleoperatorConfig | None = None
    policy: PreTrainedConfig | None = None
    algorithm: RLAlgorithmConfig | None = None
    task: str = "Pick up the red block and place it in the blue bowl."
    fps: int = 30
    episode_time_s: float = 20.0
    episodes: int = 50
    prefill_episodes: int = 5
    updates: str = "between_episodes"
    utd_ratio: float | None = None
    batch_size: int = 256
    buffer_capacity: int = 100_000
    reset: ResetConfig = field(default_factory=ResetConfig)
    dataset: LabelledDatasetRecordConfig | None = None
    label_source: str = "keys"
    outcome: OutcomeConfig = field(default_factory=lambda: OutcomeConfig(default_label="failure", label_wait_s=10.0))
    max_relative_target: float | None = DEFAULT_MAX_RELATIVE_TARGET
    realtime: bool | None = None
    device: str | None = None
    play_sounds: bool = True
    seed: int = 1000
    output_dir: Path | None = None
    job_name: str | None = None
    resume: bool = False
    runtime: str = "local"
    ray: RayClusterConfig = field(default_factory=RayClusterConfig)

    def validate(self) -> None:
        """Resolve `--policy.path`, check the numbers, pick the output folder. Errors name the flag."""
        resolve_policy_path(self)
        if self.policy is None:
            raise ConfigError("no policy: pass --policy.type=dsrl --policy.base_policy_path=<base checkpoint>, or "
                              "--policy.path=<a dsrl/dyna_vgd checkpoint> (e.g. trained offline) to continue from it")
        if self.policy.type not in STEERING_TYPES:
            raise ConfigError(f"--policy.type={self.policy.type}: lerobot-steer-rl-robot fine-tunes {STEERING_TYPES}; "
                              f"steer a {self.policy.type} base with --policy.type=dsrl --policy.base_policy_path=<it>")
        if self.algorithm is None:
            self.algorithm = RLAlgorithmConfig.get_choice_class(self.policy.type)()
        elif self.algorithm.type != self.policy.type:
            raise ConfigError(f"--algorithm.type={self.algorithm.type} does not train a {self.policy.type} policy: "
                              f"use --algorithm.type={self.policy.type}")
        if self.device:
            self.policy.device = self.device
        if self.policy.type == "dsrl":
            self.policy.resolve_variant("sac")
            self.policy.resolve_na_learning(online=True)
        else:
            self.policy.resolve_td_bootstrap(online=True)
        if self.utd_ratio is None:
            self.utd_ratio = default_utd_ratio(self.policy)
        if self.updates not in UPDATE_MODES:
            raise ConfigError(f"--updates={self.updates}: one of {UPDATE_MODES}.")
        if self.label_source not in LABEL_SOURCES:
            raise ConfigError(f"--label_source={self.label_source}: one of {LABEL_SOURCES}.")
        if self.label_source == "sim" and not self.is_sim:
            raise ConfigError(f"--label_source=sim needs --robot.type=so101_sim (the robot is {self.robot.type}).")
        if self.reset.mode == "teleop" and self.teleop is None:
            raise ConfigError("--reset.mode=teleop needs a leader arm: --teleop.type=so101_leader --teleop.port=...")
        if self.is_sim and self.robot.fps != self.fps:
            raise ConfigError(f"--robot.fps={self.robot.fps} and --fps={self.fps}: the sim robot advances 1/robot.fps "
                              "per action; give both the same rate.")
        if self.max_relative_target is not None and not self.max_relative_target > 0:
            raise ConfigError(f"--max_relative_target={self.max_relative_target}: > 0, or null for no cap.")
        if self.reset.time_s is None:
            self.reset.time_s = 10.0
        if not (math.isfinite(self.episode_time_s) and self.episode_time_s * self.fps >= 1):
            raise ConfigError(f"--episode_time_s={self.episode_time_s}: at least one frame at --fps={self.fps}.")
        check_fields(self, {"fps": COUNT, "episodes": COUNT, "prefill_episodes": NON_NEGATIVE, "utd_ratio": POSITIVE,
                            "batch_size": COUNT, "buffer_capacity": COUNT, "seed": NON_NEGATIVE}, prefix="--")
        if hasattr(self.algorithm, "grad_steps_per_update"):
            check_fields(self.algorithm, {"grad_steps_per_update": COUNT}, prefix="--algorithm.")
        if self.dataset is not None:
            if not self.dataset.repo_id:
                raise ConfigError("--dataset.* given without --dataset.repo_id (e.g. local/so101_steered): name the "
                                  "dataset the episodes are recorded into, or drop --dataset.* to record none")
            # One clock and one task for the robot, the learner and the recording.
            self.dataset.fps, self.dataset.episode_time_s = self.fps, self.episode_time_s
            self.dataset.single_task = self.dataset.single_task or self.task
            self.dataset.num_episodes = self.episodes
        check_runtime(self.runtime, self.ray)
        if not self.job_name:
            self.job_name = f"{self.robot.type}_{self.policy.type}"
        resolve_output_dir(self, "outputs/rl_robot")

    @property
    def is_sim(self) -> bool:
        return isinstance(self.robot, SO101SimConfig)

    @property
    def is_realtime(self) -> bool:
        return self.realtime if self.realtime is not None else not self.is_sim

    @classmethod
    def __get_path_fields__(cls) -> list[str]:
        return ["policy"]


RobotRLConfig.__doc__ = (RobotRLConfig.__doc__ or "") + "\n" + KEYS_HELP
