"""LeRobot env type `so101_sim`: `lerobot-eval --env.type=so101_sim --policy.path=...`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_IMAGES, OBS_STATE

from lerobot_steer.sim import pick_place_env  # registers the gym id (also inside async workers)
from lerobot_steer.sim.pick_place_env import ENV_STATE_DIM, PickPlaceConfig

GYM_PACKAGE, GYM_TASK = pick_place_env.GYM_ID.split("/")


@EnvConfig.register_subclass("so101_sim")
@dataclass
class SO101SimEnvConfig(EnvConfig, PickPlaceConfig):
    """The SO-101 pick-and-place sim. Every `PickPlaceConfig` option is a `--env.<name>` flag
    (e.g. `--env.obs_type=state`, `--env.image_height=480 --env.image_width=640`)."""

    task: str | None = GYM_TASK  # the gym task id; the language instruction is `task_description`
    fps: int = 30
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.validate()
        self.features = {
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(6,)),
            "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(self.state_dim,)),
        }
        self.features_map = {ACTION: ACTION, "agent_pos": OBS_STATE}
        if self.uses_env_state:
            self.features["environment_state"] = PolicyFeature(type=FeatureType.ENV, shape=(ENV_STATE_DIM,))
            self.features_map["environment_state"] = OBS_ENV_STATE
        if self.uses_pixels:
            for cam in self.cameras:
                # Keyed by the policy-side name so `--eval.recording=true` can write them ('/' is not allowed).
                key = f"{OBS_IMAGES}.{cam}"
                shape = (self.image_height, self.image_width, 3)
                self.features[key] = PolicyFeature(type=FeatureType.VISUAL, shape=shape)
                self.features_map[key] = key

    @property
    def package_name(self) -> str:
        return GYM_PACKAGE

    @property
    def gym_kwargs(self) -> dict:
        return pick_place_env.config_as_kwargs(self)
