"""Policy types `pi0_rl` and `pi05_rl`: LeRobot's pi0 / pi05 with a stochastic denoising chain whose
log-likelihood is exact (Flow-Noise or Flow-SDE, as pi_RL), a value head, and an export back to a
stock `pi0` / `pi05` checkpoint. Both live here, as pi0 and pi05 share everything the RL layer adds.
"""

from lerobot_steer.policies.common.vla_rl import VLAChain, export_to_base

from .configuration_pi0_rl import PI0RLConfig, PI05RLConfig
from .modeling_pi0_rl import PI0RLPolicy, PI05RLPolicy
from .processor_pi0_rl import make_pi0_rl_pre_post_processors, make_pi05_rl_pre_post_processors

__all__ = [
    "PI0RLConfig", "PI05RLConfig", "PI0RLPolicy", "PI05RLPolicy", "make_pi0_rl_pre_post_processors",
    "make_pi05_rl_pre_post_processors", "export_to_base", "VLAChain",
]
