"""Chunk-level PPO and GRPO for the RL fine-tunable VLAs, on LeRobot's `RLAlgorithm` seam.

The policy is any policy with the `pi0_rl` / `pi05_rl` / `smolvla_rl` interface
(`policies/common/vla_rl.py`): `sample_actions_with_log_prob(batch)` acts, `evaluate_chain(batch,
chain)` re-evaluates a stored chain under the current weights (log-likelihood, entropy, value, with
gradients). One `update()` is the whole learning phase of one rollout: `update_epochs` passes over
its rows in shuffled minibatches; each minibatch is accumulated over micro-batches (memory), its
gradient clipped to `max_grad_norm` and stepped by one Adam (two learning rates: the value head's
and the rest). Before each step the minibatch's approximate KL to the acting policy is checked:
above `target_kl` the update stops there, without that step (as Stable-Baselines3's PPO does).

    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy (+ kl_coef * KL(pi || pi_ref))

PPO (`--algorithm.type=ppo`): GAE over chunk steps, value head trained with the clipped loss.
GRPO (`--algorithm.type=grpo`): G rollouts per initial state, group-relative advantages, no
value; optionally a KL penalty to the weights the run started from (a frozen copy: it doubles the
policy's memory, so it is off by default). The losses are `losses.py`'s, the advantages
`advantages.py`'s. The policy is kept in eval mode (dropout off), so that a chain re-evaluated
before any step has exactly its acting log-likelihood (ratio 1).

Metric names follow the PPO papers and CleanRL: policy/loss, policy/approx_kl, policy/old_approx_kl,
policy/clip_fraction, policy/ratio, policy/abs_log_ratio, policy/entropy, policy/chain_std, value/loss,
value/explained_variance, policy/kl_to_reference, policy/grad_norm, policy/early_stopped,
policy/optimizer_steps.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Adam, Optimizer

from lerobot.configs.policies import PreTrainedConfig
from lerobot.rl.algorithms.base import RLAlgorithm
from lerobot.rl.algorithms.configs import RLAlgorithmConfig, TrainingStats

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.config import COUNT, NON_NEGATIVE, POSITIVE, UNIT, Interval, check_fields
from lerobot_steer.rl.registry import register_algorithm
from lerobot_steer.rl.steering_algorithm import clip_and_measure, copy_state_in_place

from .advantages import explained_variance
from .losses import clipped_surrogate, clipped_value_loss, kl_to_reference
from .rollout_buffer import RolloutBuffer, ToBatch

RATIO_CLIP = Interval(0, 1, low_open=True, high_open=True)


@dataclass
class OnPolicyAlgorithmConfig(RLAlgorithmConfig):
    """What PPO and GRPO share (`--algorithm.<field>`).

    Data:
        gamma: discount per env step. A chunk's reward is its steps' rewards summed with it (r_0 +
            gamma r_1 + ...), its discount gamma^(executed steps).
    Update (one per rollout):
        update_epochs: passes over the rollout.
        minibatch_size: chunk rows per optimizer step (clamped to the rollout's rows).
        micro_batch_size: rows per forward/backward within a minibatch (gradient accumulation; None:
            the whole minibatch at once). Only memory changes, not the step.
        lr: Adam learning rate of everything that trains but the value head (pi_RL: 5e-6 for pi0).
        clip_ratio: PPO's epsilon, on the ratio of the chain's joint likelihoods.
        entropy_coef: weight of the chain's Gaussian entropy bonus (pi_RL's Flow-Noise: 0.005; with
            Flow-SDE the noise is fixed and the entropy has no gradient).
        max_grad_norm: clip of the joint gradient norm (None or 0: no clipping).
        target_kl: stop the update before a step whose minibatch approx-KL (k3, per chain, summed over
            all noised entries) exceeds it (None: never stop early).
        normalize_advantages: zero mean, unit std over the rollout's rows.
    """

    gamma: float = 0.99
    update_epochs: int = 4
    minibatch_size: int = 64
    micro_batch_size: int | None = None
    lr: float = 5e-6
    clip_ratio: float = 0.2
    entropy_coef: float = 0.0
    max_grad_norm: float | None = 1.0
    target_kl: float | None = None
    normalize_advantages: bool = True
    policy_config: PreTrainedConfig | None = None

    # Whether one rollout is one episode per env from seeded resets (GRPO's groups) or a fixed number
    # of chunk steps continuing across episodes (PPO).
    episodic: ClassVar[bool] = False
    needs_value: ClassVar[bool] = False

    @classmethod
    def from_policy_config(cls, policy_cfg) -> OnPolicyAlgorithmConfig:
        return cls(policy_config=policy_cfg)

    def validate(self) -> None:
        """Each number in its range, naming the flag."""
        check_fields(self, {"gamma": UNIT, "update_epochs": COUNT, "minibatch_size": COUNT, "micro_batch_size": COUNT,
                            "lr": POSITIVE, "clip_ratio": RATIO_CLIP, "entropy_coef": NON_NEGATIVE,
                            "max_grad_norm": NON_NEGATIVE, "target_kl": POSITIVE}, prefix="--algorithm.")


@RLAlgorithmConfig.register_subclass("ppo")
@dataclass
class PPOConfig(OnPolicyAlgorithmConfig):
    """Chunk-level PPO (also `OnPolicyAlgorithmConfig`'s fields).

    rollout_chunks: chunk steps per env in one rollout (CleanRL's num_steps): a rollout is
        rollout_chunks x n_envs rows.
    gae_lambda: GAE's lambda over chunk steps.
    value_lr: Adam learning rate of the value head.
    value_coef: weight of the value loss.
    value_clip: clip of the value change around the acting-time value (None or 0: unclipped loss).
    """

    rollout_chunks: int = 32
    gae_lambda: float = 0.95
    value_lr: float = 1e-4
    value_coef: float = 0.5
    value_clip: float | None = 0.2

    needs_value: ClassVar[bool] = True

    def validate(self) -> None:
        super().validate()
        check_fields(self, {"rollout_chunks": COUNT, "gae_lambda": Interval(0, 1), "value_lr": POSITIVE,
                            "value_coef": NON_NEGATIVE, "value_clip": NON_NEGATIVE}, prefix="--algorithm.")


@RLAlgorithmConfig.register_subclass("grpo")
@dataclass
class GRPOConfig(OnPolicyAlgorithmConfig):
    """Chunk-level GRPO (also `OnPolicyAlgorithmConfig`'s fields). A rollout runs one episode in every
    env; envs come in groups of `group_size` reset with one seed (the same initial state), and each
    episode's return is compared with its group's.

    group_size: G, rollouts per initial state (n_envs must be a multiple of it).
    scale_advantages: divide by the group's std (GRPO); False keeps only the mean baseline (Dr. GRPO).
    skip_flat_groups: leave out of the update the rollouts of groups whose returns are all equal (their
        advantage is 0; only the entropy / KL terms would move the weights), as DAPO's dynamic
        sampling filters them. A rollout without any signal then makes no optimizer step.
    kl_coef: weight of KL(pi || pi_ref) to the weights the run started from (0: none, no copy kept).
    gamma: 1.0 here: a group compares undiscounted episode returns.
    normalize_advantages: False here: group-relative advantages are already normalized.
    """

    group_size: int = 8
    scale_advantages: bool = True
    skip_flat_groups: bool = True
    kl_coef: float = 0.0
    gamma: float = 1.0
    normalize_advantages: bool = False

    episodic: ClassVar[bool] = True

    def validate(self) -> None:
        super().validate()
        check_fields(self, {"group_size": Interval(2), "kl_coef": NON_NEGATIVE}, prefix="--algorithm.")


class OnPolicyAlgorithm(RLAlgorithm):
    """PPO / GRPO updates of a chain policy from one rollout (module docstring)."""

    config_class = OnPolicyAlgorithmConfig
    config: OnPolicyAlgorithmConfig

    def __init__(self, policy, config: OnPolicyAlgorithmConfig):
        self.policy, self.config = policy, config
        self.optimizers: dict[str, Optimizer] = {}
        self._optimization_step = 0
        self.reference = None
        if getattr(config, "kl_coef", 0.0) > 0:
            self.reference = copy.deepcopy(policy).eval()
            self.reference.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    # ------------------------------------------------------------------------------ optimization

    def trained_parameters(self) -> dict[str, list[Tensor]]:
        """"policy": every trainable parameter but the value head's; "value": the value head's (PPO only:
        GRPO has no value loss and leaves the head as it is)."""
        value_head = getattr(self.policy, "rl_value_head", None)
        value_ids = {id(p) for p in value_head.parameters()} if value_head is not None else set()
        groups = {"policy": [p for p in self.policy.parameters() if p.requires_grad and id(p) not in value_ids]}
        if value_ids and self.config.needs_value:
            groups["value"] = [p for p in value_head.parameters() if p.requires_grad]
        return groups

    def make_optimizers_and_scheduler(self) -> dict[str, Optimizer]:
        groups = self.trained_parameters()
        param_groups = [{"params": groups["policy"], "lr": self.config.lr}]
        if "value" in groups:
            param_groups.append({"params": groups["value"], "lr": self.config.value_lr})
        self.optimizers = {"policy": Adam(param_groups)}
        return self.optimizers

    def get_optimizers(self) -> dict[str, Optimizer]:
        return self.optimizers

    # ------------------------------------------------------------------------------ one rollout

    def compute_advantages(self, buffer: RolloutBuffer, last_value: Tensor | None = None) -> dict[str, float]:
        """Fill the rollout's advantages and returns; returns rollout-level metrics."""
        raise NotImplementedError

    def learn(self, buffer: RolloutBuffer, to_batch: ToBatch, last_value: Tensor | None = None,
              generator: torch.Generator | None = None) -> TrainingStats:
        """Advantages, then `update()` over the rollout's minibatches: the learning phase of one rollout."""
        version = buffer.weights_version
        if version is not None and version != self.optimization_step:
            raise RuntimeError(f"the rollout was collected by weights version {version}, the policy is at "
                               f"{self.optimization_step}: PPO / GRPO learn from their own latest rollout only")
        extra = self.compute_advantages(buffer, last_value)
        if self.config.normalize_advantages:
            buffer.normalize_advantages()
        rows = int(buffer.train_rows.sum())
        minibatch = min(self.config.minibatch_size, max(rows, 1))
        stats = self.update(buffer.minibatches(minibatch, self.config.micro_batch_size, self.config.update_epochs,
                                               to_batch, device=self.device, generator=generator))
        stats.extra.update(extra)
        stats.extra["rollout/rows"] = float(rows)
        return stats

    def update(self, batch_iterator: Iterator[list[dict[str, Any]]]) -> TrainingStats:
        """Optimizer steps over the minibatches `batch_iterator` yields (each a list of micro-batches),
        stopping early on `target_kl`. Returns the means over the minibatches that ran."""
        if not self.optimizers:
            self.make_optimizers_and_scheduler()
        if self.policy.training:  # dropout off: re-evaluation must reproduce the acting likelihood
            self.policy.eval()
        optimizer = self.optimizers["policy"]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sums: dict[str, float] = {}
        minibatches = steps = 0
        early_stopped = False
        for minibatch in batch_iterator:
            optimizer.zero_grad(set_to_none=True)
            metrics: dict[str, float] = {}
            for micro in minibatch:
                loss, micro_metrics = self.loss(micro)
                (loss * micro["weight"]).backward()
                for key, value in micro_metrics.items():
                    metrics[key] = metrics.get(key, 0.0) + value * micro["weight"]
            minibatches += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            if self.config.target_kl and metrics["policy/approx_kl"] > self.config.target_kl:
                optimizer.zero_grad(set_to_none=True)
                early_stopped = True
                break
            sums["policy/grad_norm"] = sums.get("policy/grad_norm", 0.0) + float(clip_and_measure(params, self.config.max_grad_norm))
            optimizer.step()
            steps += 1
            self._optimization_step += 1
        means = {key: value / minibatches for key, value in sums.items() if key != "policy/grad_norm"}
        if steps:
            means["policy/grad_norm"] = sums["policy/grad_norm"] / steps
        extra = {k: v for k, v in means.items() if not k.endswith("/loss")}
        extra.update({"policy/early_stopped": float(early_stopped), "policy/optimizer_steps": float(steps)})
        return TrainingStats(losses={k: v for k, v in means.items() if k.endswith("/loss")}, extra=extra)

    def loss(self, micro: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """The loss of one micro-batch (mean over its rows) and its metrics (means, floats)."""
        out = self.policy.evaluate_chain(micro["observation"], micro["chain"])
        policy_loss, stats = clipped_surrogate(out.log_prob, micro["old_log_prob"], micro["advantage"],
                                               self.config.clip_ratio)
        entropy = out.entropy
        loss = policy_loss.mean() - self.config.entropy_coef * entropy.mean()
        noised = out.stds > 0
        metrics = {
            "policy/loss": policy_loss.mean(), "policy/entropy": entropy.mean(),
            "policy/approx_kl": stats["approx_kl"].mean(), "policy/old_approx_kl": stats["old_approx_kl"].mean(),
            "policy/clip_fraction": stats["clipped"].mean(), "policy/ratio": stats["ratio"].mean(),
            "policy/abs_log_ratio": stats["abs_log_ratio"].mean(),
            "policy/chain_std": out.stds[noised].mean() if noised.any() else torch.zeros(()),
        }
        loss = loss + self.extra_loss(micro, out, metrics)
        return loss, {k: float(v.detach()) for k, v in metrics.items()}

    def extra_loss(self, micro: dict[str, Any], out, metrics: dict[str, Tensor]) -> Tensor:
        """The method's own terms (PPO: value loss; GRPO: KL to the reference); adds its metrics."""
        return torch.zeros((), device=self.device)

    # ------------------------------------------------------------------------------ algorithm state

    def state_dict(self) -> dict[str, Tensor]:
        """The KL reference's trained tensors (GRPO with kl_coef > 0); nothing otherwise: the value head
        is the policy's and is saved with it."""
        if self.reference is None:
            return {}
        ids = {id(p) for params in self.trained_parameters().values() for p in params}
        trained = {name for name, p in self.policy.named_parameters() if id(p) in ids}
        return {f"reference.{k}": v.detach() for k, v in self.reference.state_dict().items() if k in trained}

    def load_state_dict(self, state_dict: dict[str, Tensor], device: str | torch.device = "cpu") -> None:
        copy_state_in_place(self.name, self.state_dict(), state_dict)

    def get_weights(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.policy.load_state_dict({k: v.to(device) for k, v in weights.items()})


@register_algorithm("ppo")
class PPOAlgorithm(OnPolicyAlgorithm):
    config_class = PPOConfig
    name = "ppo"
    config: PPOConfig

    def __init__(self, policy, config: PPOConfig):
        if getattr(policy, "rl_value_head", None) is None:
            raise ConfigError("--algorithm.type=ppo needs a value head: set --policy.value_head=prefix (or "
                              "separate), or use --algorithm.type=grpo, which needs none")
        super().__init__(policy, config)

    def compute_advantages(self, buffer: RolloutBuffer, last_value: Tensor | None = None) -> dict[str, float]:
        if last_value is None:
            raise ValueError("PPO bootstraps the rollout's last rows: pass the value of the current observations")
        buffer.compute_gae(last_value, self.config.gae_lambda)
        valid = buffer["valid"]
        return {"value/explained_variance": explained_variance(buffer["value"][valid], buffer["return"][valid]),
                "value/mean": float(buffer["value"][valid].mean()),
                "rollout/advantage_std": float(buffer["advantage"][valid].std()) if valid.sum() > 1 else 0.0}

    def extra_loss(self, micro: dict[str, Any], out, metrics: dict[str, Tensor]) -> Tensor:
        value_loss = clipped_value_loss(out.value, micro["old_value"], micro["return"], self.config.value_clip).mean()
        metrics["value/loss"] = value_loss
        return self.config.value_coef * value_loss


@register_algorithm("grpo")
class GRPOAlgorithm(OnPolicyAlgorithm):
    config_class = GRPOConfig
    name = "grpo"
    config: GRPOConfig

    def compute_advantages(self, buffer: RolloutBuffer, last_value: Tensor | None = None) -> dict[str, float]:
        returns = buffer.compute_group_advantages(self.config.group_size, scale=self.config.scale_advantages,
                                                  skip_flat_groups=self.config.skip_flat_groups)
        grouped = returns.reshape(-1, self.config.group_size)
        return {"rollout/episode_return": float(returns.mean()),
                "rollout/group_return_std": float(grouped.std(dim=1, unbiased=False).mean()),
                "rollout/groups_without_signal": float((grouped.max(dim=1).values == grouped.min(dim=1).values).float().mean())}

    def extra_loss(self, micro: dict[str, Any], out, metrics: dict[str, Tensor]) -> Tensor:
        if self.reference is None:
            return torch.zeros((), device=self.device)
        with torch.no_grad():
            ref_log_prob = self.reference.log_prob_of_chain(micro["observation"], micro["chain"])
        kl = kl_to_reference(out.log_prob, ref_log_prob).mean()
        metrics["policy/kl_to_reference"] = kl
        return self.config.kl_coef * kl
