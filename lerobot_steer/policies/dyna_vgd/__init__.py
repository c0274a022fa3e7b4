"""Policy type `dyna_vgd`: value-guided denoising (VGD, Ye 2025) with uncertainty-adaptive strength
(Dynamic VGD).

A critic ensemble on executed action chunks shifts a frozen LeRobot base's denoising towards higher
value; the strength lambda = lambda_base * w_local * w_global shrinks where the critics disagree or
their TD error is high, so an unsure critic leaves the base in charge.
"""

from .configuration_dyna_vgd import DynaVGDConfig
from .modeling_dyna_vgd import DynaVGDPolicy
from .processor_dyna_vgd import make_dyna_vgd_pre_post_processors

__all__ = ["DynaVGDConfig", "DynaVGDPolicy", "make_dyna_vgd_pre_post_processors"]
