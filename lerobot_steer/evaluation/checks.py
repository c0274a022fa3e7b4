"""Check a checkpoint against the sim's observations before any rollout, and say how to fix it.

The evaluation bugs that cost the most (near-0 % results that look like a bad policy) are a policy
that never sees the inputs it was trained on: cameras with other names, a state-only policy on a
camera env, images at another resolution. `env_feature_problems` compares the policy's features
with what `--env.*` will produce, and every line it returns names the `--env.` flag that fixes it.
`robot_feature_problems` does the same against a LeRobot robot (`lerobot-steer-eval-real`), before it moves.
"""

from __future__ import annotations

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.envs.utils import env_to_policy_features
from lerobot.utils.constants import OBS_ENV_STATE, OBS_IMAGES

from lerobot_steer.sim.pick_place_env import CAMERAS
from lerobot_steer.steering.features import FeatureMismatchError, feature_mismatches, to_policy_features

__all__ = [
    "FeatureMismatchError", "check_policy_matches_env", "check_policy_matches_robot", "env_feature_problems",
    "resizes_images", "robot_feature_problems",
]


def resizes_images(config: PreTrainedConfig) -> bool:
    """Whether the policy resizes camera frames itself (then only the channel count must match)."""
    return any(
        getattr(config, name, None) is not None
        for name in ("resize_shape", "resize_imgs_with_padding", "image_resolution")
    )


def _fix(key: str, config: PreTrainedConfig) -> str | None:
    """The `--env.*` flags that would give the policy input `key`, or None if the sim cannot."""
    wants_env_state = OBS_ENV_STATE in config.input_features
    cams = sorted(k.removeprefix(f"{OBS_IMAGES}.") for k, ft in config.input_features.items()
                  if ft.type is FeatureType.VISUAL)
    obs_type = ("pixels_state" if wants_env_state else "pixels") if cams else "state"
    cams_flag = f" --env.cameras=[{','.join(cams)}]" if cams else ""
    if key == OBS_ENV_STATE or (key.startswith(f"{OBS_IMAGES}.") and key.removeprefix(f"{OBS_IMAGES}.") in CAMERAS):
        return f"--env.obs_type={obs_type}{cams_flag}"
    if key.startswith(OBS_IMAGES):
        return (f"the sim has cameras {list(CAMERAS)} (keys '{OBS_IMAGES}.<camera>'): this policy was "
                "trained on other camera names; retrain on sim data or rename its input features")
    return None  # e.g. observation.state: the sim's joints are always (6,); another robot's policy cannot run here


def env_feature_problems(config: PreTrainedConfig, env_cfg) -> list[str]:
    """Every mismatch between the policy's features and the env's, each with its fix."""
    env_features = env_to_policy_features(env_cfg)
    problems = feature_mismatches(config, env_features, resizes_images=resizes_images(config))
    lines = []
    for problem in problems:
        key = problem.split("'")[1] if "'" in problem else ""
        fix = None
        if problem.startswith("missing"):
            fix = _fix(key, config)
        elif problem.startswith("camera"):
            want = config.input_features[key].shape
            fix = f"--env.image_height={want[1]} --env.image_width={want[2]}"
        lines.append(f"{problem}; fix: {fix}" if fix else problem)
    return lines


def check_policy_matches_env(config: PreTrainedConfig, env_cfg, label: str = "policy") -> None:
    """Raise FeatureMismatchError naming every mismatch (and its fix) before anything runs."""
    problems = env_feature_problems(config, env_cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise FeatureMismatchError(
            f"checkpoint '{label}' ({config.type}) does not match the so101_sim env "
            f"(obs_type={env_cfg.obs_type}, cameras={list(env_cfg.cameras)}, "
            f"image {env_cfg.image_height}x{env_cfg.image_width}):\n{lines}"
        )


# ------------------------------------------------------------------------------ robots


def _robot_fix(key: str, config: PreTrainedConfig, cameras: list[str]) -> str | None:
    """What gives the policy input `key` on a robot with `cameras`, or why nothing can."""
    if key == OBS_ENV_STATE:
        return ("observation.environment_state is the sim's privileged block and bowl pose, which no robot "
                "measures: evaluate a policy trained without it (e.g. on lerobot-steer-generate --env.obs_type=pixels "
                "data, or on episodes recorded on the arm)")
    if key.startswith(f"{OBS_IMAGES}."):
        name = key.removeprefix(f"{OBS_IMAGES}.")
        want = config.input_features[key].shape
        return (f"give the robot a camera named '{name}' ({want[1]}x{want[2]}), e.g. --robot.cameras='{{{name}: "
                f"{{..., height: {want[1]}, width: {want[2]}}}}}' (the robot has cameras {cameras}; the names must "
                "be those the policy was trained on)")
    return None


def robot_feature_problems(config: PreTrainedConfig, dataset_features: dict) -> list[str]:
    """Every mismatch between the policy's features and a robot's, each with its fix.

    `dataset_features`: what LeRobot records for the robot (`observation.state`, `observation.images.<cam>`,
    `action`), e.g. `record.dataset.recording_features`."""
    robot_features = to_policy_features({k: v for k, v in dataset_features.items()
                                         if k.startswith("observation.") or k == "action"})
    cameras = sorted(k.removeprefix(f"{OBS_IMAGES}.") for k, ft in robot_features.items()
                     if ft.type is FeatureType.VISUAL)
    problems = feature_mismatches(config, robot_features, resizes_images=resizes_images(config))
    lines = []
    for problem in problems:
        key = problem.split("'")[1] if "'" in problem else ""
        fix = None
        if problem.startswith("missing"):
            fix = _robot_fix(key, config, cameras)
        elif problem.startswith("camera"):
            want = config.input_features[key].shape
            name = key.removeprefix(f"{OBS_IMAGES}.")
            fix = f"--robot.cameras.{name}.height={want[1]} --robot.cameras.{name}.width={want[2]}"
        elif problem.startswith("wrong"):
            fix = "the policy was trained for another robot (other joints); evaluate it on that robot"
        lines.append(f"{problem}; fix: {fix}" if fix else problem)
    return lines


def check_policy_matches_robot(config: PreTrainedConfig, dataset_features: dict, robot_type: str,
                               label: str = "policy") -> None:
    """Raise FeatureMismatchError naming every mismatch (and its fix) before the robot moves."""
    problems = robot_feature_problems(config, dataset_features)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise FeatureMismatchError(
            f"checkpoint '{label}' ({config.type}) does not match the robot {robot_type}; nothing was moved:\n{lines}"
        )
