"""What the steering methods share: the frozen base-policy adapter (noise in, action chunk out)."""

from .base_adapter import BasePolicyAdapter, CheckpointError
from .denoisers import DenoiseStep, Guide, UnsupportedBasePolicyError
from .features import FeatureMismatchError

__all__ = [
    "BasePolicyAdapter",
    "CheckpointError",
    "DenoiseStep",
    "FeatureMismatchError",
    "Guide",
    "UnsupportedBasePolicyError",
]
