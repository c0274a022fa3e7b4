"""Shared by the steering policy types over a frozen base (dsrl, dyna_vgd): config fields, base
binding, the chunk-level MDP from datasets and replay, checkpoints that carry the base, processors."""

from .config import FrozenBaseConfig
from .frozen_base import ChunkTransitions, FrozenBasePolicyMixin, ObservationCritic
from .processors import base_pre_post_processors

__all__ = ["ChunkTransitions", "FrozenBaseConfig", "FrozenBasePolicyMixin", "ObservationCritic", "base_pre_post_processors"]
