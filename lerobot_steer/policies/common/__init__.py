"""Shared by the steering policy types (dsrl, dyna_vgd): config fields, where the base comes from
(`BaseProvider`), base binding, the chunk-level MDP from datasets and replay, checkpoints that carry
the base, processors."""

from .base_provider import FROZEN_BASE, BaseProvider, FrozenBase
from .config import FrozenBaseConfig, SteeringConfig
from .frozen_base import ChunkTransitions, FrozenBasePolicyMixin, ObservationCritic, SteeringPolicyMixin
from .processors import base_pre_post_processors

__all__ = [
    "FROZEN_BASE", "BaseProvider", "ChunkTransitions", "FrozenBase", "FrozenBaseConfig", "FrozenBasePolicyMixin",
    "ObservationCritic", "SteeringConfig", "SteeringPolicyMixin", "base_pre_post_processors",
]
