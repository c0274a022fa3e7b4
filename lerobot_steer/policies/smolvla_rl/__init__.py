"""Policy type `smolvla_rl`: LeRobot's SmolVLA with a stochastic denoising chain whose log-likelihood is
exact (Flow-Noise or Flow-SDE, as pi_RL), a value head, and an export back to a stock `smolvla`
checkpoint."""

from lerobot_steer.policies.common.vla_rl import VLAChain, export_to_base

from .configuration_smolvla_rl import SmolVLARLConfig
from .modeling_smolvla_rl import SmolVLARLPolicy
from .processor_smolvla_rl import make_smolvla_rl_pre_post_processors

__all__ = ["SmolVLARLConfig", "SmolVLARLPolicy", "make_smolvla_rl_pre_post_processors", "export_to_base", "VLAChain"]
