"""Processors of the `dyna_vgd` policy, from its base's provider (`config.base_provider`).

* frozen mode: the base policy's own saved pipelines, reused as they are (the critics read the
  base's normalized observations and chunks; `dataset_stats` is ignored on purpose, see
  lerobot_steer/policies/common/processors.py).
* bc mode: the base is trained here, so the pipelines are built like LeRobot's diffusion ones
  (`make_default_pre_post_processors`) from the dataset stats, with the diffusion config's
  normalization mapping (`config.normalization_mapping`, MIN_MAX state and action by default). The
  base learns in that space and the critics read the same normalized observations and chunks.

Step names are LeRobot's standard ones either way, so lerobot-eval / lerobot-rollout can override
them, and once saved with a checkpoint they are loaded by LeRobot's stock code.
"""

from __future__ import annotations

from typing import Any

from lerobot.processor import PolicyProcessorPipeline

from .configuration_dyna_vgd import DynaVGDConfig


def make_dyna_vgd_pre_post_processors(
    config: DynaVGDConfig,
    dataset_stats: dict[str, dict[str, Any]] | None = None,
) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """frozen mode: the base checkpoint's pre/post processors, with the device set to
    `config.device` (`dataset_stats` ignored). bc mode: normalizers over `dataset_stats` with the
    diffusion base's normalization mapping, as LeRobot builds them for `--policy.type=diffusion`."""
    config.check_base_mode()
    return config.base_provider.make_processors(config, dataset_stats)
