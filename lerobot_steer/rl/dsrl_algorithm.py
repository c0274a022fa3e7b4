"""DSRL as a LeRobot `RLAlgorithm` (online training through `RLTrainer` / the learner).

The networks live in `DSRLPolicy` (so that `lerobot-train`, `save_pretrained` and `--resume` see
them) and the losses in `steering/losses.py`; the update loop, the optimizers and the state plumbing
are `SteeringAlgorithm`'s. What is DSRL's own: one Adam per network (actor, critic, temperature and,
for DSRL-NA, the noise critic), and the split between what is pushed to actors (the noise actor only;
the frozen base never crosses the wire) and what is checkpointed as algorithm state (critics, target
critic, noise critic, temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_steer.policies.dsrl.modeling_dsrl import DSRLPolicy

from .registry import register_algorithm
from .steering_algorithm import SteeringAlgorithm, SteeringAlgorithmConfig


@RLAlgorithmConfig.register_subclass("dsrl")
@dataclass
class DSRLAlgorithmConfig(SteeringAlgorithmConfig):
    """Online DSRL. Method hyperparameters (variant, gamma, tau, lrs, grad_clip_norm, ...) are the
    policy's (`DSRLConfig`), so that offline and online runs of the same policy agree.

    grad_steps_per_update: gradient steps per `update()` call, each on a fresh batch (see
        `SteeringAlgorithmConfig`; lerobot-steer-rl's update-to-data ratio is `--utd_ratio`).
    """


@register_algorithm("dsrl")
class DSRLAlgorithm(SteeringAlgorithm):
    """DSRL-NA / DSRL-SAC updates of a `DSRLPolicy` from chunk-level replay batches.

    Batches follow LeRobot's `ReplayBuffer` layout (see `DSRLPolicy.transitions_from_replay`); each
    gradient step runs all DSRL losses on one batch, then the Polyak target update.
    """

    config_class = DSRLAlgorithmConfig
    name = "dsrl"
    policy: DSRLPolicy
    # Everything trained except the actor, which the policy checkpoint and the actor processes carry.
    state_modules = ("critic", "critic_target", "noise_critic", "noise_critic_target")
    state_tensors = ("log_alpha",)

    def optimizer_groups(self) -> dict[str, tuple[list[Tensor], float]]:
        p, c = self.policy, self.policy.config
        groups = {
            "actor": (list(p.actor.parameters()), c.actor_lr),
            "critic": (list(p.critic.parameters()), c.critic_lr),
            "temperature": ([p.log_alpha], c.temperature_lr),
        }
        if p.noise_critic is not None:
            groups["noise_critic"] = (list(p.noise_critic.parameters()), c.noise_critic_lr)
        return groups

    def get_weights(self) -> dict[str, Any]:
        """What actors need to act: the noise actor (the base is loaded once from the checkpoint)."""
        return {"actor": self.module_weights(self.policy.actor)}

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.policy.actor.load_state_dict({k: v.to(device) for k, v in weights["actor"].items()})
