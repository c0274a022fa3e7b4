"""(Dynamic) VGD as a LeRobot `RLAlgorithm` (online training through `RLTrainer` / the learner).

The critics live in `DynaVGDPolicy` and the loss is its `compute_loss()` (the same code lerobot-train
runs through `forward()`); the update loop, the optimizer and the state plumbing are
`SteeringAlgorithm`'s. What is VGD's own: only the critics train (each gradient step guides a decode
at s' for its TD target, or, with `td_bootstrap="value"`, a value network bootstraps it and trains beside them; `policy.update()` then moves the targets, the TD error average and the
warm-up counter), and the split between what actors need (the critic, which guides their decodes,
and the guidance state: TD error average and warm-up counter) and what is algorithm state (the
target critics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_steer.policies.dyna_vgd.modeling_dyna_vgd import DynaVGDPolicy

from .registry import register_algorithm
from .steering_algorithm import SteeringAlgorithm, SteeringAlgorithmConfig

_GUIDANCE_STATE = ("td_error_ema", "n_updates")


@RLAlgorithmConfig.register_subclass("dyna_vgd")
@dataclass
class DynaVGDAlgorithmConfig(SteeringAlgorithmConfig):
    """Online (Dynamic) VGD. Method hyperparameters (guidance, gamma, tau, critic lr,
    grad_clip_norm, ...) are the policy's (`DynaVGDConfig`), so that offline and online runs of the
    same policy agree.

    grad_steps_per_update: critic gradient steps per `update()` call, each on a fresh batch (see
        `SteeringAlgorithmConfig`; lerobot-steer-rl's update-to-data ratio is `--utd_ratio`).
    """


@register_algorithm("dyna_vgd")
class DynaVGDAlgorithm(SteeringAlgorithm):
    """Critic TD updates of a `DynaVGDPolicy` from chunk-level replay batches.

    Batches follow LeRobot's `ReplayBuffer` layout (see `transitions_from_replay` in
    policies/common/frozen_base.py); time-limit ends must be stored with done = 0.
    """

    config_class = DynaVGDAlgorithmConfig
    name = "dyna_vgd"
    policy: DynaVGDPolicy
    state_modules = ("critic_target", "value", "value_target")

    def optimizer_groups(self) -> dict[str, tuple[list[Tensor], float]]:
        groups = {"critic": (list(self.policy.critic.parameters()), self.policy.config.critic_lr)}
        if self.policy.value is not None:  # td_bootstrap="value"
            groups["value"] = (list(self.policy.value.parameters()), self.policy.config.critic_lr)
        return groups

    def get_weights(self) -> dict[str, Any]:
        """What actors need to guide: the online critic and the guidance state."""
        return {
            "critic": self.module_weights(self.policy.critic),
            "guidance": {name: getattr(self.policy, name).detach().cpu() for name in _GUIDANCE_STATE},
        }

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.policy.critic.load_state_dict({k: v.to(device) for k, v in weights["critic"].items()})
        with torch.no_grad():
            for name in _GUIDANCE_STATE:
                getattr(self.policy, name).copy_(weights["guidance"][name])
