"""`lerobot-steer-eval-real`: compare policies on a robot, episodes labelled by key, success with 95 % CI.

    lerobot-steer-eval-real --robot.type=so101_follower --robot.port=/dev/ttyACM0 --robot.id=my_follower \\
        --robot.cameras="{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}" \\
        --policy_paths='[outputs/train/a/checkpoints/last/pretrained_model,<hf_user>/policy_b]' \\
        --dataset.repo_id=<hf_user>/eval_so101 --dataset.root=outputs/eval_real/so101 \\
        --dataset.num_episodes=10 --dataset.episode_time_s=30 --reset.mode=countdown --reset.time_s=20 \\
        --dataset.single_task="Pick up the red block and place it in the blue bowl."

    # The sim, labelled by the sim itself (paired scenes: round i draws scene --seed + i for every checkpoint)
    lerobot-steer-eval-real --robot.type=so101_sim --robot.cameras={} --label_source=sim \\
        --policy_paths='[builtin:expert,<checkpoint>]' --dataset.repo_id=local/eval_sim ...

The config is `eval_config.EvalRealConfig` (`lerobot-steer-record`'s flags plus the checkpoints and the
session); the session is `evaluate.py`, the report `eval_report.py`. Keys: `--help`.
"""

# No `from __future__ import annotations`: LeRobot's parser.wrap reads the config class from the
# annotation of `evaluate_real`'s first parameter and needs the class, not its name as a string.
import os

from lerobot.configs import parser

from lerobot_steer.cli_errors import UserError, run_command

from .dataset import dataset_root
from .eval_config import EvalRealConfig
from .evaluate import evaluate_on_robot
from .keys import KeySource


class EvaluationInterrupted(UserError):
    """Ctrl-C: the finished episodes and the report are kept; exit 130 as for SIGINT."""

    exit_code = 130

    def report(self) -> str:
        return str(self)


@parser.wrap()
def evaluate_real(cfg: EvalRealConfig, key_source: KeySource | None = None) -> dict:
    try:
        return evaluate_on_robot(cfg, key_source=key_source)
    except KeyboardInterrupt:
        root = dataset_root(cfg)
        raise EvaluationInterrupted(
            f"Evaluation interrupted; every finished episode is saved in {root} (the one running is kept, labelled "
            "'interrupted' unless you labelled it, and is run again on resume) and the report of what was done is in "
            f"{cfg.output_dir or root / 'eval'}. To continue: the same command with --resume=true "
            f"--dataset.repo_id={cfg.dataset.repo_id} --dataset.root={root}"
        ) from None


def main() -> None:
    """User errors (bad flags, a checkpoint that does not fit the robot, a session that cannot be resumed)
    print `error: <message>` and exit 2; Ctrl-C prints where the episodes and the report are and exits 130."""
    from lerobot.utils.import_utils import register_third_party_plugins
    from lerobot.utils.utils import init_logging

    os.environ.setdefault("MUJOCO_GL", "egl")  # the so101_sim robot renders its cameras headless
    init_logging()
    register_third_party_plugins()  # other plugins' robots, teleoperators, cameras and policy types
    run_command(evaluate_real)


if __name__ == "__main__":
    main()
