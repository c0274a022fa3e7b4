"""Processors of a steering policy over a frozen base: the base's own saved pipelines, as they are.

The base denoises in its normalized action space and the critics read the same normalized
observations and chunks, so a steering policy must normalize exactly as the base was trained to.
Recomputing statistics from the RL dataset would shift both, so `dataset_stats` is ignored on
purpose: the pipelines (and their normalizer/unnormalizer stats) are loaded from the base checkpoint.
Their step names are LeRobot's standard ones (`rename_observations_processor`, `device_processor`,
`normalizer_processor`, `unnormalizer_processor`), so lerobot-eval / lerobot-rollout can override
them as for any policy; once saved with a checkpoint they are loaded by LeRobot's stock code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import (
    batch_to_transition,
    policy_action_to_transition,
    transition_to_batch,
    transition_to_policy_action,
)

from lerobot_steer.cli_errors import mark_user_error
from lerobot_steer.steering.base_adapter import (
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
    _pipeline_has_step,
    _resolve_checkpoint,
)

if TYPE_CHECKING:  # config.py imports this module (through base_provider.py)
    from .config import SteeringConfig


def base_pre_post_processors(config: SteeringConfig) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """The base checkpoint's pre/post processors, with the device set to `config.device`."""
    if config.base_policy_path is None:
        raise mark_user_error(
            ValueError(f"the {config.type} processors come from the base policy. {config.missing_base_message()}")
        )
    folder = _resolve_checkpoint(config.base_policy_path, revision=config.base_policy_revision, cache_dir=None, token=None)
    overrides = {}
    if _pipeline_has_step(folder / PREPROCESSOR_FILE, "device_processor"):
        overrides["device_processor"] = {"device": config.device}
    preprocessor = PolicyProcessorPipeline.from_pretrained(
        folder, config_filename=PREPROCESSOR_FILE, overrides=overrides,
        to_transition=batch_to_transition, to_output=transition_to_batch,
    )
    postprocessor = PolicyProcessorPipeline.from_pretrained(
        folder, config_filename=POSTPROCESSOR_FILE,
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action,
    )
    return preprocessor, postprocessor


def vla_rl_pre_post_processors(config, dataset_stats, stock_factory) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
    """Processors of an RL fine-tuned VLA (`pi0_rl`, `pi05_rl`, `smolvla_rl`): its base checkpoint's
    saved pipelines when it starts from one (`dataset_stats` ignored, as for the steering policies),
    else LeRobot's factory of the base type (`stock_factory(config, dataset_stats)`)."""
    if config.base_policy_path is not None:
        return base_pre_post_processors(config)
    return stock_factory(config, dataset_stats)
