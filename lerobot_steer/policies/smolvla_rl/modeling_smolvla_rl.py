"""SmolVLARLPolicy: LeRobot's SmolVLAPolicy with the RL layer of `VLARLPolicyMixin`.

SmolVLA's `select_action` and `predict_action_chunk` both decode through `_get_action_chunk` (after
filling the observation queues), so that is where the stochastic chain is switched in; the rest
(model, training loss, queues, saving) is LeRobot's.
"""

from __future__ import annotations

from torch import Tensor, nn

from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from lerobot_steer.policies.common.vla_rl import VLARLPolicyMixin

from .configuration_smolvla_rl import SmolVLARLConfig


class SmolVLARLPolicy(VLARLPolicyMixin, SmolVLAPolicy):
    """SmolVLA with a stochastic, likelihood-tractable denoising chain and a value head (`smolvla_rl`)."""

    config_class = SmolVLARLConfig
    name = "smolvla_rl"
    base_policy_class = SmolVLAPolicy

    @property
    def vlm_module(self) -> nn.Module:
        return self.model.vlm_with_expert

    @property
    def lora_module(self) -> nn.Module:
        return self.model.vlm_with_expert.vlm

    @property
    def prefix_width(self) -> int:
        return self.model.vlm_with_expert.config.text_config.hidden_size

    @property
    def num_denoise_steps(self) -> int:
        return self.config.num_steps

    def model_inputs(self, batch: dict[str, Tensor]) -> tuple:
        images, img_masks = self.prepare_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        return images, img_masks, tokens, masks, self.prepare_state(batch)

    def predict_action_chunk(self, batch: dict[str, Tensor], *args, **kwargs) -> Tensor:
        """LeRobot's predict_action_chunk; stochastic in training mode (see `_get_action_chunk`)."""
        with self._acting():
            return super().predict_action_chunk(batch, *args, **kwargs)

    def _get_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        if self._act_stochastic:
            return self._stochastic_chunk(batch, noise)
        return super()._get_action_chunk(batch, noise, **kwargs)
