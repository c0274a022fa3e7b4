"""Processors of the `dyna_vgd` policy: the base policy's own saved pipelines, reused as they are
(the critics read the base's normalized observations and chunks; `dataset_stats` is ignored on
purpose, see lerobot_steer/policies/common/processors.py)."""

from __future__ import annotations

from typing import Any

from lerobot.processor import PolicyProcessorPipeline

from lerobot_steer.policies.common.processors import base_pre_post_processors

from .configuration_dyna_vgd import DynaVGDConfig


def make_dyna_vgd_pre_post_processors(
    config: DynaVGDConfig,
    dataset_stats: dict[str, dict[str, Any]] | None = None,  # noqa: ARG001  (see module docstring)
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """The base checkpoint's pre/post processors, with the device set to `config.device`."""
    config.check_base_mode()
    return base_pre_post_processors(config)
