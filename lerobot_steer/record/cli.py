"""`lerobot-steer-record`: record teleoperated episodes with an outcome label each.

    lerobot-steer-record --robot.type=so101_sim --teleop.type=so101_sim_expert \\
        --dataset.repo_id=local/so101_labelled --dataset.root=outputs/data/labelled --dataset.no_stamp=true \\
        --dataset.num_episodes=10 --dataset.episode_time_s=10 --dataset.reset_time_s=2 \\
        --dataset.single_task="Pick up the red block and place it in the blue bowl." --play_sounds=false

Every flag of `lerobot-record` works as there (LeRobot's RecordConfig), plus `--outcome.*`; the keys
are in `--help` (`keys.KEYS`). A real arm: `--robot.type=so101_follower --robot.port=... --robot.id=...
--teleop.type=so101_leader --teleop.port=... --teleop.id=...`, calibrated as for lerobot-record.
"""

# No `from __future__ import annotations`: LeRobot's parser.wrap reads the config class from the
# annotation of `record`'s first parameter and needs the class, not its name as a string.
import os

from lerobot.configs import parser
from lerobot.datasets import LeRobotDataset

from lerobot_steer.cli_errors import UserError, run_command

from .config import LabelledRecordConfig
from .dataset import dataset_root
from .keys import KeySource
from .recorder import record_labelled


class RecordingInterrupted(UserError):
    """Ctrl-C: the episodes so far (the current one included) are saved; exit 130 as for SIGINT."""

    exit_code = 130

    def report(self) -> str:
        return str(self)


@parser.wrap()
def record(cfg: LabelledRecordConfig, key_source: KeySource | None = None) -> LeRobotDataset:
    try:
        return record_labelled(cfg, key_source=key_source)
    except KeyboardInterrupt:
        raise RecordingInterrupted(
            f"Recording interrupted; every episode so far is saved in {dataset_root(cfg)} (the last one labelled "
            "'interrupted' unless you labelled it). To add more: the same command with --resume=true "
            f"--dataset.repo_id={cfg.dataset.repo_id} --dataset.root={dataset_root(cfg)}"
        ) from None


def main() -> None:
    """User errors (bad flags, a dataset that cannot be resumed) print `error: <message>` and exit 2;
    Ctrl-C prints where the episodes are and exits 130."""
    from lerobot.utils.import_utils import register_third_party_plugins
    from lerobot.utils.utils import init_logging

    os.environ.setdefault("MUJOCO_GL", "egl")  # the so101_sim robot renders its cameras headless
    init_logging()  # also what lets the so101_sim robot hear LeRobot's episode announcements
    register_third_party_plugins()  # other plugins' robots, teleoperators and cameras, as lerobot-record
    run_command(record)


if __name__ == "__main__":
    main()
