"""Tiny LeRobot base policies built offline from config (random weights), shared by test files.

The builders live in `lerobot_steer.steering.tiny_bases` so that the benchmark scripts time exactly
the bases the tests check; this module re-exports them under the names the tests import.
VLA builds need `offline_vla_builds()` active while the policy is constructed.
"""

from __future__ import annotations

from lerobot_steer.steering.tiny_bases import (
    ACTION,
    CAMERA,
    ENV,
    STATE,
    TOKEN_MASK,
    TOKENS,
    batch_maker,
    offline_vla_builds,
    save_base,
    stats_for,
    tiny_diffusion,
    tiny_vla,
)

__all__ = [
    "ACTION", "CAMERA", "ENV", "STATE", "TOKENS", "TOKEN_MASK", "batch_maker", "offline_vla_builds", "save_base",
    "stats_for", "tiny_diffusion", "tiny_vla",
]
