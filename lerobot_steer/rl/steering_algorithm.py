"""What the online steering algorithms (`dsrl`, `dyna_vgd`) share on LeRobot's `RLAlgorithm` seam.

The networks live in the policy and the losses in its `compute_loss()` (the code lerobot-train runs
through `forward()`); an algorithm only says which networks it optimizes, which of the policy's
tensors are algorithm state and what actors need. This base class owns the rest: one Adam per
network, the update loop (zero_grad, backward, per-network clip, step, `policy.update()` for the
targets and counters, metrics to `TrainingStats`) and the in-place `load_state_dict`.

The two settings every online update reads have one meaning each:

* `grad_steps_per_update` (algorithm config): gradient steps one `update()` call makes, each on a
  fresh batch. LeRobot's SAC calls this count `utd_ratio` because its learner calls `update()` once
  per env step; here the update-to-data ratio is `lerobot-steer-rl --utd_ratio` (gradient steps per
  collected chunk transition), and the training loop calls `update()` as often as that ratio asks.
* `grad_clip_norm` (policy config, not the algorithm's): the gradient norm clip, the same value
  lerobot-train uses offline; None or 0 turns clipping off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Adam, Optimizer

from lerobot.configs.policies import PreTrainedConfig
from lerobot.rl.algorithms.base import RLAlgorithm
from lerobot.rl.algorithms.configs import RLAlgorithmConfig, TrainingStats

from lerobot_steer.steering.losses import metrics_to_floats


@dataclass
class SteeringAlgorithmConfig(RLAlgorithmConfig):
    """Options of an online steering algorithm. The method's hyperparameters (gamma, tau, lrs,
    grad_clip_norm, ...) are the policy's, so that offline and online runs of one policy agree.

    grad_steps_per_update: gradient steps per `update()` call, each on a fresh batch (>= 1). Not an
        update-to-data ratio: lerobot-steer-rl's `--utd_ratio` decides how many gradient steps
        follow each collected chunk transition and calls `update()` accordingly.
    """

    grad_steps_per_update: int = 1
    policy_config: PreTrainedConfig | None = None

    @classmethod
    def from_policy_config(cls, policy_cfg) -> SteeringAlgorithmConfig:
        return cls(policy_config=policy_cfg)


def clip_and_measure(params: list[Tensor], max_norm: float | None) -> Tensor:
    """Clip the gradients of `params` to a total 2-norm of `max_norm` (None or 0: no clipping) and
    return their norm before clipping, as lerobot-train does offline."""
    if max_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def copy_state_in_place(name: str, own: dict[str, Tensor], state_dict: dict[str, Tensor]) -> None:
    """`RLAlgorithm.load_state_dict` of algorithm `name` whose `state_dict()` is `own` (the live tensors):
    each copied in place (`copy_`, on its own device and dtype), so optimizers and Polyak averaging keep
    their references. A key of `own` missing from `state_dict` raises KeyError (naming up to five)."""
    missing = sorted(set(own) - set(state_dict))
    if missing:
        raise KeyError(f"{name} algorithm state is missing {missing[:5]}")
    with torch.no_grad():
        for key, target in own.items():
            target.copy_(state_dict[key].to(device=target.device, dtype=target.dtype))


class SteeringAlgorithm(RLAlgorithm):
    """Gradient steps on a steering policy from chunk-level replay batches.

    Batches follow LeRobot's `ReplayBuffer` layout; `policy.transitions_from_replay` turns them into
    chunk transitions. Subclasses set `state_modules` / `state_tensors` and implement
    `optimizer_groups`, `get_weights` and `load_weights`.
    """

    config_class = SteeringAlgorithmConfig
    # The policy's submodules and tensors (by attribute name) that are algorithm state: checkpointed
    # by the learner, not pushed to actors. A module that is None on the policy is skipped.
    state_modules: ClassVar[tuple[str, ...]] = ()
    state_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, policy, config: SteeringAlgorithmConfig):
        if config.grad_steps_per_update < 1:
            raise ValueError(
                f"--algorithm.grad_steps_per_update must be >= 1, got {config.grad_steps_per_update} "
                "(the update-to-data ratio is --utd_ratio)"
            )
        self.policy = policy
        self.config = config
        self.optimizers: dict[str, Optimizer] = {}
        self._optimization_step = 0

    # ------------------------------------------------------------------------------ what differs

    def optimizer_groups(self) -> dict[str, tuple[list[Tensor], float]]:
        """Network name -> (its parameters, its learning rate); one Adam each."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ optimization

    def make_optimizers_and_scheduler(self) -> dict[str, Optimizer]:
        self.optimizers = {name: Adam(params, lr=lr) for name, (params, lr) in self.optimizer_groups().items()}
        return self.optimizers

    def get_optimizers(self) -> dict[str, Optimizer]:
        return self.optimizers

    def update(self, batch_iterator: Iterator[dict]) -> TrainingStats:
        """`grad_steps_per_update` gradient steps, each: the policy's losses on a fresh batch, every
        network's gradient clipped to the policy's `grad_clip_norm` and stepped by its own Adam,
        then `policy.update()` (Polyak targets and the policy's per-step counters). Returns the
        last step's losses (`*_loss`), other metrics, and each network's gradient norm before clipping."""
        if not self.optimizers:
            self.make_optimizers_and_scheduler()
        if not self.policy.training:  # train() walks every module of the base: not once per update
            self.policy.train()
        clip = self.policy.config.grad_clip_norm
        metrics: dict[str, Tensor] = {}
        grad_norms: dict[str, Tensor] = {}
        for _ in range(self.config.grad_steps_per_update):
            loss, metrics = self.policy.compute_loss(self.policy.transitions_from_replay(next(batch_iterator)))
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name, optimizer in self.optimizers.items():
                params = [p for group in optimizer.param_groups for p in group["params"]]
                grad_norms[name] = clip_and_measure(params, clip)
                optimizer.step()
            self.policy.update()
            self._optimization_step += 1
        floats = metrics_to_floats(metrics)
        return TrainingStats(
            losses={k: v for k, v in floats.items() if k.endswith("_loss")},
            grad_norms=metrics_to_floats(grad_norms),
            extra={k: v for k, v in floats.items() if not k.endswith("_loss")},
        )

    # ------------------------------------------------------------------------------ algorithm state

    def state_dict(self) -> dict[str, Tensor]:
        tensors = {name: getattr(self.policy, name).detach() for name in self.state_tensors}
        for name in self.state_modules:
            module = getattr(self.policy, name)
            if module is not None:
                tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return tensors

    def load_state_dict(self, state_dict: dict[str, Tensor], device: str | torch.device = "cpu") -> None:
        """In place (`copy_`), so the optimizers keep their parameter references and Polyak
        averaging keeps updating the policy's own target modules."""
        copy_state_in_place(self.name, self.state_dict(), state_dict)

    # ------------------------------------------------------------------------------ helpers for actors

    @staticmethod
    def module_weights(module: torch.nn.Module) -> dict[str, Any]:
        """A module's tensors on the CPU, detached (what crosses to actor processes)."""
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
