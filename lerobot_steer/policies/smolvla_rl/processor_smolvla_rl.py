"""Processors of `smolvla_rl`: the base checkpoint's own saved pipelines when the policy starts from one,
else LeRobot's SmolVLA factory for the same config."""

from __future__ import annotations

from typing import Any

from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
from lerobot.processor import PolicyProcessorPipeline

from lerobot_steer.policies.common.processors import vla_rl_pre_post_processors

from .configuration_smolvla_rl import SmolVLARLConfig


def make_smolvla_rl_pre_post_processors(
    config: SmolVLARLConfig, dataset_stats: dict[str, dict[str, Any]] | None = None
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    return vla_rl_pre_post_processors(config, dataset_stats, make_smolvla_pre_post_processors)
