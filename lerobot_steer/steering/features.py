"""Compare a base policy's features with a dataset's or an environment's, before training starts.

A base trained on other cameras or another robot fails late and obscurely (an einops error deep in
the diffusion encoder, a silently padded state in pi0). `feature_mismatches` lists every difference
at once so the user can fix the rename map, the dataset or the base in one go.
"""

from __future__ import annotations

from collections.abc import Mapping

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION

from lerobot_steer.cli_errors import UserError

_KIND = {
    FeatureType.VISUAL: "camera",
    FeatureType.STATE: "state",
    FeatureType.ENV: "environment state",
    FeatureType.ACTION: "action",
}


class FeatureMismatchError(UserError, ValueError):
    """The base policy's inputs/outputs do not match the dataset's or environment's features."""


def to_policy_features(features) -> dict[str, PolicyFeature]:
    """LeRobot policy features from what users have at hand.

    Accepts a dict of `PolicyFeature`, a LeRobot dataset features dict (`dataset.meta.features`,
    entries with "dtype"/"shape"), a `LeRobotDataset` or its metadata, or an `EnvConfig`
    (its `features` are renamed with `features_map`, as LeRobot does for evaluation).
    """
    from lerobot.utils.feature_utils import dataset_to_policy_features

    if hasattr(features, "features_map") and hasattr(features, "features"):  # EnvConfig
        from lerobot.envs.utils import env_to_policy_features

        return env_to_policy_features(features)
    if hasattr(features, "meta") and hasattr(features.meta, "features"):  # LeRobotDataset
        features = features.meta.features
    elif not isinstance(features, Mapping) and hasattr(features, "features"):  # LeRobotDatasetMetadata
        features = features.features
    if not isinstance(features, Mapping):
        raise TypeError(
            "expected a dict of PolicyFeature, a dataset features dict, a LeRobotDataset(/Metadata) or "
            f"an EnvConfig, got {type(features).__name__}"
        )
    if all(isinstance(ft, PolicyFeature) for ft in features.values()):
        return dict(features)
    return dataset_to_policy_features(dict(features))


def feature_mismatches(
    config: PreTrainedConfig,
    features: Mapping[str, PolicyFeature],
    *,
    resizes_images: bool = False,
) -> list[str]:
    """Every difference between the base's expected features and `features`, as readable lines.

    Only what the base consumes is checked: extra dataset keys are fine. Placeholder cameras that
    pi0/pi05/smolvla add themselves (`empty_cameras`) are not expected from the data. Camera frames
    must have the base's channel count, and its height and width unless the base resizes them.
    """
    problems = []
    expected = {
        key: ft
        for key, ft in {**config.input_features, **config.output_features}.items()
        if ft.type in _KIND and "empty_camera" not in key
    }
    for key, want in expected.items():
        kind = _KIND[want.type]
        got = features.get(key)
        if got is None:
            problems.append(f"missing {kind} '{key}' (the base expects shape {tuple(want.shape)})")
            continue
        if got.type is not want.type:
            problems.append(f"'{key}' is a {got.type.value} feature, the base expects {want.type.value}")
            continue
        want_shape, got_shape = tuple(want.shape), tuple(got.shape)
        if want.type is FeatureType.VISUAL:
            if got_shape[:1] != want_shape[:1] or (not resizes_images and got_shape != want_shape):
                problems.append(
                    f"camera '{key}' has shape {got_shape}, the base expects {want_shape} (channels, height, width)"
                )
        elif got_shape != want_shape:
            what = "action dim" if key == ACTION else f"{kind} dim"
            problems.append(f"wrong {what} for '{key}': the base expects {want_shape}, got {got_shape}")
    return problems
