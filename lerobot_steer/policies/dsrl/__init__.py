"""Policy type `dsrl`: Diffusion Steering via RL (Wagenmaker et al., CoRL 2025).

A frozen LeRobot diffusion or flow-matching base policy is steered through its initial noise: a
small tanh-Gaussian actor picks the noise, the base denoises it into the executed action chunk.
"""

from .configuration_dsrl import DSRLConfig
from .modeling_dsrl import DSRLPolicy
from .processor_dsrl import make_dsrl_pre_post_processors

__all__ = ["DSRLConfig", "DSRLPolicy", "make_dsrl_pre_post_processors"]
