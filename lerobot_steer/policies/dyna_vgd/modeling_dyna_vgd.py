"""DynaVGDPolicy: a LeRobot base whose denoising is steered up a critic's value.

    observation, N(0, I) noise --base denoising, x0_hat shifted by lambda * grad_a Q--> action chunk

The critic ensemble trains by TD on the chunk-level MDP, with the target next action the guided
decode of the base at s' with the current critic, as in the VGD reference code (DozenDucc/VGD,
jebeom/VGD on GitHub). The strength lambda is fixed
(VGD) or adapts to the critic's disagreement and recent TD error (Dynamic VGD); see
steering/guidance.py. Each component (lambda, w_local, w_global, sigma_Q, the TD error EMA) is in
`forward()`'s output dict and, after acting, in `policy.last_guidance_stats`.

Two kinds of base (`config.base_mode`), each a `BaseProvider` (`config.base_provider`) that this
class asks for what differs (building the base, its optimizer group, its loss, checkpoints, card):
* "frozen": a pretrained LeRobot checkpoint (diffusion / pi0 / pi05 / smolvla), never updated;
  checkpoints carry it in `base_policy/` (policies/common/base_provider.py).
* "bc": LeRobot's `DiffusionPolicy`, built from `config.diffusion` and trained here by behaviour
  cloning with its own loss (`DiffusionPolicy.forward`), in the same optimizer step as the critics.
  The same `BasePolicyAdapter` drives it (non-frozen: its weights keep their gradients; decodes run
  in eval mode, deterministic DDIM), so guidance is exactly the frozen mode's. Checkpoints hold it
  in `model.safetensors` (bc_base.py).

The loss is `compute_loss()` (critic TD), called by `forward()` (lerobot-train, offline, which adds
the BC loss in bc mode) and by `DynaVGDAlgorithm.update()` (online); `update()` (called by both
after each optimizer step) moves the target critics, the TD error average and the warm-up counter.
The TD error average and the gradient-step count are buffers in `model.safetensors`, so a loaded
policy guides exactly as the saved one did.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor

from lerobot.policies.pretrained import PreTrainedPolicy

from lerobot_steer.policies.common.frozen_base import (
    ChunkTransitions,
    ObservationCritic,
    SteeringPolicyMixin,
    make_observation_encoder,
    observations,
    unnormalized_feature_stats,
)
from lerobot_steer.steering.base_adapter import BasePolicyAdapter
from lerobot_steer.steering.guidance import ValueGuide, warmup_factor
from lerobot_steer.steering.losses import critic_td_loss, metrics_to_floats, value_loss
from lerobot_steer.steering.networks import frozen_call, polyak_update

from .bc_base import diffusion_batch
from .configuration_dyna_vgd import DynaVGDConfig


class DynaVGDPolicy(SteeringPolicyMixin, PreTrainedPolicy):
    """(Dynamic) value-guided denoising over a diffusion / pi0 / pi05 / smolvla base.

    Args:
        config: the config (its `base_policy_path` names the base of a fresh frozen-mode run; in bc
            mode `config.diffusion` describes the base to train).
        base_adapter: an in-memory base instead of loading or building one (tests, notebooks); in bc
            mode it must wrap a `DiffusionPolicy` with `frozen=False`.
        base_policy_dir: set by `from_pretrained`: the checkpoint's own `base_policy/` copy.
        dataset_meta: passed by LeRobot's `make_policy` when training on a dataset: its features are
            checked against the base, its reward column and per-episode success are read.

    Attributes:
        critic / critic_target: Q_j(s, a) ensembles over (observation, executed normalized chunk).
        td_error_ema: the critic's recent TD error (buffer; 0 before the first update: w_global = 1).
        n_updates: critic gradient steps so far (buffer; drives the lambda warm-up).
        last_guidance_stats: the guidance components of the last acting decode (floats).
    """

    config_class = DynaVGDConfig
    name = "dyna_vgd"

    def __init__(
        self,
        config: DynaVGDConfig,
        *,
        base_adapter: BasePolicyAdapter | None = None,
        base_policy_dir: str | Path | None = None,
        dataset_meta=None,
        **kwargs,
    ):
        super().__init__(config)
        config.check_base_mode()
        config.resolve_td_bootstrap(online=False)  # lerobot-steer-rl resolved its online choice already
        self._init_base(base_adapter, base_policy_dir, dataset_meta)
        self.action_dim = self.adapter.action_dim
        scales = unnormalized_feature_stats(config, self.adapter.preprocessor)
        self.critic = ObservationCritic(make_observation_encoder(config, scales), config.n_exec * self.action_dim, config)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # td_bootstrap="value": V(s) regresses Q(s, a) on replayed chunks; its Polyak target bootstraps.
        self.value = ObservationCritic(make_observation_encoder(config, scales), 0, config) if config.td_bootstrap == "value" else None
        self.value_target = None if self.value is None else copy.deepcopy(self.value).requires_grad_(False)
        self.register_buffer("td_error_ema", torch.zeros(()))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        self._last_td_error: Tensor | None = None
        self.last_guidance_stats: dict[str, float] = {}
        self.reset()

    # ------------------------------------------------------------------------------ critics on/off

    @property
    def trains_critic(self) -> bool:
        """False only in bc mode on a dataset without rewards (decided when the base is bound)."""
        return self.config.train_critic is not False

    def bc_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """What a behaviour-cloned base's loss reads of a lerobot-train batch (see `bc_base.diffusion_batch`)."""
        return diffusion_batch(self.config, batch)

    # ---------------------------------------------------------------------------------- guidance

    @property
    def lambda_base(self) -> float:
        """guidance_scale times VGD's warm-up ramp over critic gradient steps."""
        c = self.config
        return c.guidance_scale * warmup_factor(int(self.n_updates), c.guidance_warmup_steps)

    def make_guide(self, obs: dict[str, Tensor]) -> ValueGuide:
        """A guide bound to these observations, differentiating the online critic w.r.t. the chunk only."""
        c = self.config

        def critic(action: Tensor) -> Tensor:
            # clone: observations made under inference_mode (lerobot-eval) cannot enter autograd
            return frozen_call(self.critic, {k: v.clone() for k, v in obs.items()}, action)

        return ValueGuide(
            critic,
            lambda_base=self.lambda_base, mode=c.guidance_mode, td_error=self.td_error_ema,
            beta=c.uncertainty_beta, c_local=c.c_local, c_global=c.c_global,
            weight_range=(c.weight_min, c.weight_max), anneal=c.guidance_anneal, q_reduce=c.q_reduce,
            action_clip=c.guided_action_clip, normalize_gradient=c.guidance_normalize,
        )

    def guided_decode(self, obs: dict[str, Tensor], noise: Tensor, *, guide: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """The executed chunk (B, n_exec, action_dim), normalized, and the guidance components.

        Without guidance (guide=False or lambda_base = 0) it is the base's own chunk for `noise`,
        and lambda = 0, weights 1.
        """
        if guide and self.lambda_base > 0:
            value_guide = self.make_guide(obs)
            chunk = self.adapter.guided_sample(obs, noise, value_guide, steps=self.config.guided_steps)
            stats = value_guide.stats()
        else:
            chunk, stats = self.adapter.sample(obs, noise), {}
        zero = torch.zeros((), device=chunk.device)
        stats = {"lambda": zero, "w_local": zero + 1, "w_global": zero + 1, "guidance_weight": zero + 1,
                 "sigma_q": zero, "guidance_q_gain": zero, "guidance_action_shift": zero,
                 "guidance_grad_norm": zero, **stats}
        stats["lambda_base"] = zero + self.lambda_base
        stats["td_error_ema"] = self.td_error_ema.detach().clone()
        return chunk[:, : self.config.n_exec], stats

    # ----------------------------------------------------------------------------------- acting

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """Guided decode from `noise` (default: fresh N(0, I) of `adapter.noise_shape`), normalized.

        The default noise follows `config.acting_noise`: tanh(N(0, I)) as the reference acts (its TD
        targets decode plain N(0, I)), or N(0, I). A policy whose critics were never trained (bc
        mode without rewards) acts unguided.
        """
        obs = observations(batch)
        if noise is None:
            noise = self.acting_noise(next(iter(obs.values())).shape[0])
        chunk, stats = self.guided_decode(obs, noise, guide=self.config.guide_actions and self.trains_critic)
        self.last_guidance_stats = metrics_to_floats(stats)
        return chunk

    def acting_noise(self, batch_size: int) -> Tensor:
        """The initial noise an acting decode starts from (`config.acting_noise`), one global-RNG draw."""
        noise = self.adapter.sample_noise(batch_size)
        return torch.tanh(noise) if self.config.acting_noise == "tanh_gaussian" else noise

    # What `reference_chunk` shows beside the guided chunk (videos' trails legend).
    reference_labels = ("guided", "base, same noise")

    def reference_noise(self, batch_size: int) -> Tensor:
        """The noise to hand `predict_action_chunk` so that `reference_chunk` decodes the same draw."""
        return self.acting_noise(batch_size)

    def reference_chunk(self, obs: dict[str, Tensor], noise: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The base's chunk for the same observations (with their history) and the same noise,
        without guidance: what value guidance changed."""
        return self.adapter.sample(obs, noise)

    def acting_stats(self) -> dict[str, float]:
        """The guidance components of the last acting decode (see `last_guidance_stats`)."""
        return dict(self.last_guidance_stats)

    # ---------------------------------------------------------------------------------- training

    def get_optim_params(self) -> list[dict]:
        """The base's groups, if it trains (bc mode: the diffusion network with the optimizer preset's
        settings), then the online critics at `critic_lr` (no weight decay). A frozen base and the
        target critics are never optimized."""
        critic = {"params": list(self.critic.parameters()), "lr": self.config.critic_lr, "weight_decay": 0.0}
        value = [] if self.value is None else [
            {"params": list(self.value.parameters()), "lr": self.config.critic_lr, "weight_decay": 0.0}]
        return [*self.base_provider.optim_params(self.adapter), critic, *value]

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        """lerobot-train: the base's own loss if it trains (bc mode: LeRobot's diffusion loss, in train
        mode), plus the critics' TD loss on the batch's chunk transitions.

        The TD target decodes with the base as it is before this step's update (eval mode, DDIM).
        """
        loss, metrics = self.base_provider.training_loss(self, batch)
        metrics = dict(metrics)
        if self.trains_critic:
            td_loss, td_metrics = self.compute_loss(self.transitions_from_dataset(batch))
            loss = td_loss if loss is None else loss + td_loss
            metrics.update(td_metrics)
        return loss, metrics_to_floats(metrics)

    def compute_loss(self, t: ChunkTransitions) -> tuple[Tensor, dict[str, Tensor]]:
        """TD loss of the critics: y = R + gamma^k (1 - terminated) min_j Qbar_j(s', a'), with
        a' the guided decode of the base at s' (fresh N(0, I) noise, current online critic); with
        `td_bootstrap="value"`, y = R + gamma^k (1 - terminated) min_j Vbar_j(s') and the value
        network's own regression onto Q(s, a) is added (`value_loss`)."""
        c = self.config
        if self.value is not None:
            bootstrap, next_action, guidance = self.value_target, t.action.new_zeros(t.action.shape[0], 0), {}
        else:
            with torch.no_grad():
                next_obs = self._as_history(t.next_obs)
                noise = self.adapter.sample_noise(t.action.shape[0])
                next_action, guidance = self.guided_decode(next_obs, noise)
            bootstrap = self.critic_target
        clamp = None if c.td_target_clamp is None else (-c.td_target_clamp, c.td_target_clamp)
        loss, metrics = critic_td_loss(
            self.critic, bootstrap, t.obs, t.action, self.learning_reward(t), t.next_obs, next_action, t.terminated,
            gamma=c.discount, n_steps=self.discount_exponent(t), next_log_prob=None, q_reduce=c.q_reduce, target_clamp=clamp,
        )
        self._last_td_error = metrics["td_error"]
        if self.value is not None:
            loss_v, value_metrics = value_loss(self.value, self.critic, t.obs, t.action)
            loss = loss + loss_v
            metrics.update(value_metrics)
        metrics.update(guidance)
        metrics["chunk_reward_mean"] = t.reward.detach().mean()
        return loss, metrics

    @torch.no_grad()
    def update(self) -> None:
        """After each optimizer step: Polyak targets, fold the step's TD error into the EMA, count it
        (nothing when the critics do not train: n_updates counts critic gradient steps)."""
        if not self.trains_critic:
            return
        polyak_update(self.critic_target, self.critic, self.config.tau)
        if self.value is not None:
            polyak_update(self.value_target, self.value, self.config.tau)
        if self._last_td_error is not None:
            td = self._last_td_error.to(self.td_error_ema)
            decay = self.config.td_error_ema_decay if int(self.n_updates) > 0 else 0.0
            self.td_error_ema.mul_(decay).add_((1.0 - decay) * td)
            self._last_td_error = None
        self.n_updates.add_(1)

    # ------------------------------------------------------------------------------- model card

    def method_card_text(self) -> str:
        c = self.config
        method = "Dynamic VGD" if c.guidance_mode == "dynamic" else "VGD"
        steps = "every step" if c.guidance_last_k is None else f"the last {c.guidance_last_k} steps"
        text = (
            f"This is a {method} policy (value-guided denoising): at {steps} of the base's denoising, the "
            f"clean-action estimate is moved along the gradient of an ensemble of {c.n_critics} critics with "
            f"strength lambda_base = {c.guidance_scale}"
            + (" times an uncertainty weight (critic disagreement and TD error)." if method == "Dynamic VGD" else ".")
        )
        if not self.trains_critic:  # bc mode on a dataset without rewards
            text = (
                "This policy's critics were not trained (the dataset had no rewards), so it acts as its "
                "behaviour-cloned diffusion base, unguided. With trained critics it would be: " + text
            )
        return text
