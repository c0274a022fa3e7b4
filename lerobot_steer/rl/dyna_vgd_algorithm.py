"""(Dynamic) VGD as a LeRobot `RLAlgorithm` (online training through `RLTrainer` / the learner).

The critics live in `DynaVGDPolicy` and the loss is its `compute_loss()` (the same code lerobot-train
runs through `forward()`); this class owns the online parts: the critic optimizer, the
update-to-data loop over replay batches, and the split between what actors need (the critic, which
guides their decodes, and the guidance state: TD error average and warm-up counter) and what is
algorithm state (the target critics).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Adam, Optimizer

from lerobot.configs.policies import PreTrainedConfig
from lerobot.rl.algorithms.base import RLAlgorithm
from lerobot.rl.algorithms.configs import RLAlgorithmConfig, TrainingStats

from lerobot_steer.policies.dyna_vgd.modeling_dyna_vgd import DynaVGDPolicy
from lerobot_steer.steering.losses import metrics_to_floats

from .registry import register_algorithm

_GUIDANCE_STATE = ("td_error_ema", "n_updates")


@RLAlgorithmConfig.register_subclass("dyna_vgd")
@dataclass
class DynaVGDAlgorithmConfig(RLAlgorithmConfig):
    """Online (Dynamic) VGD. Method hyperparameters (guidance, gamma, tau, critic lr, ...) are the
    policy's (`DynaVGDConfig`), so that offline and online runs of the same policy agree.

    utd_ratio: critic gradient steps per `update()` call, each on a fresh batch (reference: 20).
    grad_clip_norm: critic gradient norm clip (None: the policy's `grad_clip_norm`; 0: none).
    """

    utd_ratio: int = 1
    grad_clip_norm: float | None = None
    policy_config: PreTrainedConfig | None = None

    @classmethod
    def from_policy_config(cls, policy_cfg) -> DynaVGDAlgorithmConfig:
        return cls(policy_config=policy_cfg)


@register_algorithm("dyna_vgd")
class DynaVGDAlgorithm(RLAlgorithm):
    """Critic TD updates of a `DynaVGDPolicy` from chunk-level replay batches.

    Batches follow LeRobot's `ReplayBuffer` layout (see `transitions_from_replay` in
    policies/common/frozen_base.py); time-limit ends must be stored with done = 0.
    """

    config_class = DynaVGDAlgorithmConfig
    name = "dyna_vgd"

    def __init__(self, policy: DynaVGDPolicy, config: DynaVGDAlgorithmConfig):
        self.policy = policy
        self.config = config
        self.optimizer: Optimizer | None = None
        self._optimization_step = 0

    def make_optimizers_and_scheduler(self) -> dict[str, Optimizer]:
        self.optimizer = Adam(self.policy.critic.parameters(), lr=self.policy.config.critic_lr)
        return self.get_optimizers()

    def get_optimizers(self) -> dict[str, Optimizer]:
        return {} if self.optimizer is None else {"critic": self.optimizer}

    def update(self, batch_iterator: Iterator[dict]) -> TrainingStats:
        """`utd_ratio` critic steps; each guides a decode at s' for its TD target, then updates the
        targets, the TD error average and the warm-up counter (`policy.update()`)."""
        if self.optimizer is None:
            self.make_optimizers_and_scheduler()
        clip = self.config.grad_clip_norm if self.config.grad_clip_norm is not None else self.policy.config.grad_clip_norm
        if not self.policy.training:  # train() walks every module of the base: not once per update
            self.policy.train()
        grad_norms: dict[str, float] = {}
        for _ in range(self.config.utd_ratio):
            loss, metrics = self.policy.compute_loss(self.policy.transitions_from_replay(next(batch_iterator)))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                grad_norms["critic"] = float(torch.nn.utils.clip_grad_norm_(self.policy.critic.parameters(), clip))
            self.optimizer.step()
            self.policy.update()
            self._optimization_step += 1
        floats = metrics_to_floats(metrics)
        return TrainingStats(
            losses={"critic_loss": floats.pop("critic_loss")}, grad_norms=grad_norms, extra=floats
        )

    # ------------------------------------------------------------------------------ weights/state

    def get_weights(self) -> dict[str, Any]:
        """What actors need to guide: the online critic and the guidance state."""
        return {
            "critic": {k: v.detach().cpu() for k, v in self.policy.critic.state_dict().items()},
            "guidance": {name: getattr(self.policy, name).detach().cpu() for name in _GUIDANCE_STATE},
        }

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.policy.critic.load_state_dict({k: v.to(device) for k, v in weights["critic"].items()})
        with torch.no_grad():
            for name in _GUIDANCE_STATE:
                getattr(self.policy, name).copy_(weights["guidance"][name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"critic_target.{k}": v for k, v in self.policy.critic_target.state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> None:
        """In place, so the policy's target critics stay the modules Polyak averaging updates."""
        prefix = "critic_target."
        self.policy.critic_target.load_state_dict(
            {k[len(prefix):]: v.to(device) for k, v in state_dict.items() if k.startswith(prefix)}
        )
