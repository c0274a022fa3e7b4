"""LeRobot env type `so101_sim`: `lerobot-eval --env.type=so101_sim --policy.path=...`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_IMAGES, OBS_STATE

from lerobot_steer.sim import pick_place_env  # registers the gym id (also inside async workers)
from lerobot_steer.sim.pick_place_env import PickPlaceConfig

GYM_PACKAGE, GYM_TASK = pick_place_env.GYM_ID.split("/")


@EnvConfig.register_subclass("so101_sim")
@dataclass
class SO101SimEnvConfig(EnvConfig):
    """The SO-101 pick-and-place sim. Every option of `PickPlaceConfig` is a `--env.<name>` flag."""

    task: str | None = GYM_TASK
    fps: int = 30
    obs_type: str = "pixels"  # state | pixels | pixels_state
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    image_height: int = 96
    image_width: int = 128
    episode_length: int = 300
    physics_substeps: int = 16
    block_x_range: tuple[float, float] = (0.16, 0.26)
    block_y_range: tuple[float, float] = (0.05, 0.15)
    block_yaw_range: tuple[float, float] = (-0.5, 0.5)
    bowl_x_range: tuple[float, float] = (0.16, 0.26)
    bowl_y_range: tuple[float, float] = (-0.16, -0.08)
    reward_type: str = "sparse"
    terminate_on_success: bool = True
    render_height: int = 240
    render_width: int = 320
    render_camera: str = "front"
    shadows: bool = False
    arm_mjcf_path: str | None = None
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        cfg = self.sim_config()  # validates every option, naming the bad one
        self.features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(6,)),
                         "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(6,))}
        self.features_map = {ACTION: ACTION, "agent_pos": OBS_STATE}
        if cfg.uses_env_state:
            self.features["environment_state"] = PolicyFeature(type=FeatureType.ENV, shape=(10,))
            self.features_map["environment_state"] = OBS_ENV_STATE
        if cfg.uses_pixels:
            for cam in cfg.cameras:
                # Keyed by the policy-side name so `--eval.recording=true` can write them ('/' is not allowed).
                key = f"{OBS_IMAGES}.{cam}"
                self.features[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(self.image_height, self.image_width, 3))
                self.features_map[key] = key

    @property
    def package_name(self) -> str:
        return GYM_PACKAGE

    def sim_config(self) -> PickPlaceConfig:
        return PickPlaceConfig(
            obs_type=self.obs_type,
            cameras=tuple(self.cameras),
            image_height=self.image_height,
            image_width=self.image_width,
            fps=self.fps,
            physics_substeps=self.physics_substeps,
            episode_length=self.episode_length,
            block_x_range=self.block_x_range,
            block_y_range=self.block_y_range,
            block_yaw_range=self.block_yaw_range,
            bowl_x_range=self.bowl_x_range,
            bowl_y_range=self.bowl_y_range,
            reward_type=self.reward_type,
            terminate_on_success=self.terminate_on_success,
            render_height=self.render_height,
            render_width=self.render_width,
            render_camera=self.render_camera,
            shadows=self.shadows,
            arm_mjcf_path=self.arm_mjcf_path,
        )

    @property
    def gym_kwargs(self) -> dict:
        return pick_place_env.config_as_kwargs(self.sim_config())
