"""DSRL as a LeRobot `RLAlgorithm` (online training through `RLTrainer` / the learner).

The networks live in `DSRLPolicy` (so that `lerobot-train`, `save_pretrained` and `--resume` see
them) and the losses in `steering/losses.py`; this class owns the online parts: one Adam per
network, the update-to-data loop over replay batches, the target update, and the split between
what is pushed to actors (the noise actor only; the frozen base never crosses the wire) and what is
checkpointed as algorithm state (critics, target critic, noise critic, temperature).
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

from lerobot_steer.policies.dsrl.modeling_dsrl import DSRLPolicy
from lerobot_steer.steering.losses import metrics_to_floats

from .registry import register_algorithm

# Networks whose tensors are algorithm state (everything trained except the actor, which the policy
# checkpoint and the actor processes carry).
_ALGORITHM_MODULES = ("critic", "critic_target", "noise_critic")


@RLAlgorithmConfig.register_subclass("dsrl")
@dataclass
class DSRLAlgorithmConfig(RLAlgorithmConfig):
    """Online DSRL. Method hyperparameters (variant, gamma, tau, lrs, ...) are the policy's
    (`DSRLConfig`), so that offline and online runs of the same policy agree.

    utd_ratio: gradient steps per `update()` call, each on a fresh batch (reference: 20).
    grad_clip_norm: per-network gradient norm clip (None: no clipping).
    """

    utd_ratio: int = 1
    grad_clip_norm: float | None = None
    policy_config: PreTrainedConfig | None = None

    @classmethod
    def from_policy_config(cls, policy_cfg) -> DSRLAlgorithmConfig:
        return cls(policy_config=policy_cfg)


@register_algorithm("dsrl")
class DSRLAlgorithm(RLAlgorithm):
    """DSRL-NA / DSRL-SAC updates of a `DSRLPolicy` from chunk-level replay batches.

    Batches follow LeRobot's `ReplayBuffer` layout (see `DSRLPolicy.transitions_from_replay`).
    """

    config_class = DSRLAlgorithmConfig
    name = "dsrl"

    def __init__(self, policy: DSRLPolicy, config: DSRLAlgorithmConfig):
        self.policy = policy
        self.config = config
        self.optimizers: dict[str, Optimizer] = {}
        self._optimization_step = 0

    def _groups(self) -> dict[str, list]:
        p, c = self.policy, self.policy.config
        groups = {
            "actor": (list(p.actor.parameters()), c.actor_lr),
            "critic": (list(p.critic.parameters()), c.critic_lr),
            "temperature": ([p.log_alpha], c.temperature_lr),
        }
        if p.noise_critic is not None:
            groups["noise_critic"] = (list(p.noise_critic.parameters()), c.noise_critic_lr)
        return groups

    def make_optimizers_and_scheduler(self) -> dict[str, Optimizer]:
        self.optimizers = {name: Adam(params, lr=lr) for name, (params, lr) in self._groups().items()}
        return self.optimizers

    def get_optimizers(self) -> dict[str, Optimizer]:
        return self.optimizers

    def update(self, batch_iterator: Iterator[dict]) -> TrainingStats:
        """`utd_ratio` gradient steps, each: all DSRL losses on a fresh batch, then the target update."""
        if not self.optimizers:
            self.make_optimizers_and_scheduler()
        if not self.policy.training:  # train() walks every module of the base: not once per update
            self.policy.train()
        metrics: dict[str, torch.Tensor] = {}
        grad_norms: dict[str, float] = {}
        for _ in range(self.config.utd_ratio):
            transitions = self.policy.transitions_from_replay(next(batch_iterator))
            loss, metrics = self.policy.compute_loss(transitions)
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name, optimizer in self.optimizers.items():
                if self.config.grad_clip_norm is not None:
                    params = [p for group in optimizer.param_groups for p in group["params"]]
                    grad_norms[name] = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm))
                optimizer.step()
            self.policy.update()  # Polyak target
            self._optimization_step += 1
        floats = metrics_to_floats(metrics)
        losses = {k: v for k, v in floats.items() if k.endswith("_loss")}
        extra = {k: v for k, v in floats.items() if not k.endswith("_loss")}
        return TrainingStats(losses=losses, grad_norms=grad_norms, extra=extra)

    # ------------------------------------------------------------------------------ weights/state

    def get_weights(self) -> dict[str, Any]:
        """What actors need to act: the noise actor (the base is loaded once from the checkpoint)."""
        return {"actor": {k: v.detach().cpu() for k, v in self.policy.actor.state_dict().items()}}

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.policy.actor.load_state_dict({k: v.to(device) for k, v in weights["actor"].items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = {"log_alpha": self.policy.log_alpha.detach()}
        for name in _ALGORITHM_MODULES:
            module = getattr(self.policy, name)
            if module is not None:
                tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return tensors

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> None:
        """In place (`copy_`), so the optimizers keep their parameter references."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        if missing:
            raise KeyError(f"DSRL algorithm state is missing {missing[:5]}")
        with torch.no_grad():
            for key, target in own.items():
                target.copy_(state_dict[key].to(device=target.device, dtype=target.dtype))
