"""Configurations of `pi0_rl` and `pi05_rl`: LeRobot's PI0Config / PI05Config plus the RL fields of
`VLARLConfigMixin` (stochastic chain, noise and value heads, what trains, the base checkpoint).

pi05 gets its own type rather than a `base_type` switch on pi0_rl: LeRobot's PI05Config is not a
PI0Config (different tokenizer length, quantile normalization, no state input to the model), so
each RL config extends exactly the stock config its base checkpoint holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi05.configuration_pi05 import PI05Config

from lerobot_steer.policies.common.vla_rl_config import VLARLConfigMixin


@PreTrainedConfig.register_subclass("pi0_rl")
@dataclass
class PI0RLConfig(VLARLConfigMixin, PI0Config):
    """pi0 with an RL layer. Every PI0Config field keeps LeRobot's meaning; the RL fields are
    documented on `VLARLConfigMixin`."""

    base_config_class = PI0Config


@PreTrainedConfig.register_subclass("pi05_rl")
@dataclass
class PI05RLConfig(VLARLConfigMixin, PI05Config):
    """pi05 with an RL layer. Every PI05Config field keeps LeRobot's meaning; the RL fields are
    documented on `VLARLConfigMixin`."""

    base_config_class = PI05Config
