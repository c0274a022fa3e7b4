"""PI0RLPolicy / PI05RLPolicy: LeRobot's PI0Policy / PI05Policy with the RL layer of `VLARLPolicyMixin`.

Everything LeRobot's classes do (building the PaliGemma + action expert model, the flow-matching
training loss, the action queue, saving) is theirs; this file only tells the mixin how a
normalized batch becomes `sample_actions` arguments (their own `_preprocess_images`,
`prepare_state`, language tokens) and where the VLM is.
"""

from __future__ import annotations

from torch import Tensor, nn

from lerobot.policies.pi0.modeling_pi0 import PI0Policy
from lerobot.policies.pi05.modeling_pi05 import PI05Policy
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from lerobot_steer.policies.common.vla_rl import VLARLPolicyMixin

from .configuration_pi0_rl import PI0RLConfig, PI05RLConfig


class _PaliGemmaRL(VLARLPolicyMixin):
    """What pi0 and pi05 share: the PaliGemma VLM, `num_inference_steps`, `predict_action_chunk` as the
    seam their `select_action` decodes through."""

    @property
    def vlm_module(self) -> nn.Module:
        return self.model.paligemma_with_expert

    @property
    def lora_module(self) -> nn.Module:
        return self.model.paligemma_with_expert.paligemma

    @property
    def prefix_width(self) -> int:
        return self.model.paligemma_with_expert.paligemma.config.text_config.hidden_size

    @property
    def num_denoise_steps(self) -> int:
        return self.config.num_inference_steps

    def _images_and_language(self, batch: dict[str, Tensor]) -> tuple:
        images, img_masks = self._preprocess_images(batch)
        return images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]

    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """(B, chunk_size, action_dim): a stochastic chain in training mode (or with
        `deterministic_eval=False`), else LeRobot's deterministic decode; `noise=` starts either."""
        with self._acting() as stochastic:
            if stochastic:
                return self._stochastic_chunk(batch, kwargs.get("noise"))
            return super().predict_action_chunk(batch, **kwargs)


class PI0RLPolicy(_PaliGemmaRL, PI0Policy):
    """pi0 with a stochastic, likelihood-tractable denoising chain and a value head (`pi0_rl`)."""

    config_class = PI0RLConfig
    name = "pi0_rl"
    base_policy_class = PI0Policy

    def model_inputs(self, batch: dict[str, Tensor]) -> tuple:
        return (*self._images_and_language(batch), self.prepare_state(batch))


class PI05RLPolicy(_PaliGemmaRL, PI05Policy):
    """pi05 with a stochastic, likelihood-tractable denoising chain and a value head (`pi05_rl`)."""

    config_class = PI05RLConfig
    name = "pi05_rl"
    base_policy_class = PI05Policy

    def model_inputs(self, batch: dict[str, Tensor]) -> tuple:
        return self._images_and_language(batch)  # pi05 tokenizes the state into the prompt
