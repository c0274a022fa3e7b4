"""Check a checkpoint against the sim's observations before any rollout, and say how to fix it.

The evaluation bugs that cost the most (near-0 % results that look like a bad policy) are a policy
that never sees the inputs it was trained on: cameras with other names, a state-only policy on a
camera env, images at another resolution. `env_feature_problems` compares the policy's features
with what `--env.*` will produce, and every line it returns names the `--env.` flag that fixes it.
"""

from __future__ import annotations

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.envs.utils import env_to_policy_features
from lerobot.utils.constants import OBS_ENV_STATE, OBS_IMAGES

from lerobot_steer.sim.pick_place_env import CAMERAS
from lerobot_steer.steering.features import FeatureMismatchError, feature_mismatches

__all__ = ["FeatureMismatchError", "check_policy_matches_env", "env_feature_problems", "resizes_images"]


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
