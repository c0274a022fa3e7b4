"""Configuration of `smolvla_rl`: LeRobot's SmolVLAConfig plus the RL fields of `VLARLConfigMixin`
(stochastic chain, noise and value heads, what trains, the base checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

from lerobot_steer.policies.common.vla_rl_config import VLARLConfigMixin


@PreTrainedConfig.register_subclass("smolvla_rl")
@dataclass
class SmolVLARLConfig(VLARLConfigMixin, SmolVLAConfig):
    """SmolVLA with an RL layer. Every SmolVLAConfig field keeps LeRobot's meaning; the RL fields are
    documented on `VLARLConfigMixin`."""

    base_config_class = SmolVLAConfig
