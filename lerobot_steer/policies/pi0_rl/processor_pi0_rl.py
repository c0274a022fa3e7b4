"""Processors of `pi0_rl` / `pi05_rl`: the base checkpoint's own saved pipelines when the policy starts
from one (the RL policy must normalize exactly as its base was trained), else LeRobot's pi0 / pi05
factory for the same config (PaliGemma tokenizer, normalization from `dataset_stats`)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors
from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors
from lerobot.processor import PolicyProcessorPipeline

from lerobot_steer.policies.common.processors import vla_rl_pre_post_processors

from .configuration_pi0_rl import PI0RLConfig, PI05RLConfig


def make_pi0_rl_pre_post_processors(
    config: PI0RLConfig, dataset_stats: dict[str, dict[str, Any]] | None = None
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    return vla_rl_pre_post_processors(config, dataset_stats, make_pi0_pre_post_processors)


def make_pi05_rl_pre_post_processors(
    config: PI05RLConfig, dataset_stats: dict[str, dict[str, Any]] | None = None
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    return vla_rl_pre_post_processors(config, dataset_stats, make_pi05_pre_post_processors)
