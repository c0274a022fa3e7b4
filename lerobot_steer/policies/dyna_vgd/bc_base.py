"""dyna_vgd's behaviour-cloned base (`--policy.base_mode=bc`): the `BaseProvider` of a LeRobot
`DiffusionPolicy` built from `config.diffusion` and trained inside the policy.

It is trained with its own loss (`DiffusionPolicy.forward`) in the same optimizer step as the
critics, and driven by the same `BasePolicyAdapter` as a frozen base (non-frozen: its weights keep
their gradients; decodes run in eval mode, deterministic DDIM), so guidance is exactly the frozen
mode's. What differs from a frozen base, each in one method below:

* facts and actions: from `config.diffusion` (no checkpoint to read); a training sample holds the
  diffusion horizon from -(n_obs_steps - 1), which contains the executed chunk the critics learn from;
* processors: LeRobot's diffusion ones over the dataset stats (the base learns in that space);
* optimizer: Adam with the diffusion's settings, the base in its own param group;
* binding: a dataset without rewards trains the base alone (`train_critic` decided here, once);
* checkpoints: the base is one of the trained networks, in `model.safetensors`; no `base_policy/`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch import Tensor

from lerobot.optim.optimizers import AdamConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from lerobot.processor import make_default_pre_post_processors
from lerobot.utils.constants import ACTION

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.base_provider import BaseProvider
from lerobot_steer.policies.common.frozen_base import observations
from lerobot_steer.steering.base_adapter import BaseFacts, BasePolicyAdapter


class BehaviourClonedBase(BaseProvider):
    """LeRobot's diffusion policy, trained by behaviour cloning on the training dataset."""

    # ------------------------------------------------------------------------ config (no policy yet)

    def configure(self, config) -> None:
        """The base runs on the policy's device; its normalization mapping is the policy's (not a
        dataclass field of its own: derived, so it cannot disagree with the diffusion config)."""
        config.diffusion.device = config.device
        config.normalization_mapping = dict(config.diffusion.normalization_mapping)

    def read_facts(self, config) -> BaseFacts:
        d = config.diffusion
        if d.n_action_steps > d.horizon - d.n_obs_steps + 1:
            raise ConfigError(
                f"--policy.diffusion.n_action_steps={d.n_action_steps} must be <= horizon - n_obs_steps + 1 = "
                f"{d.horizon - d.n_obs_steps + 1} (LeRobot's diffusion executes actions from the current step)"
            )
        return BaseFacts("diffusion", d.n_obs_steps, d.n_action_steps)

    def action_delta_indices(self, config) -> list[int]:
        """The diffusion horizon from -(n_obs_steps - 1), which contains the executed chunk [0, n_exec)
        because n_exec <= horizon - n_obs_steps + 1 (`executed_action_start` finds it)."""
        config.ensure_base_facts()
        return config.diffusion.action_delta_indices

    def optimizer_preset(self, config) -> AdamConfig:
        """Adam with the diffusion base's settings; the critics' group overrides lr and weight decay
        (see `DynaVGDPolicy.get_optim_params`). LeRobot clips the joint gradient norm of both."""
        d = config.diffusion
        return AdamConfig(lr=d.optimizer_lr, betas=d.optimizer_betas, eps=d.optimizer_eps,
                          weight_decay=d.optimizer_weight_decay, grad_clip_norm=config.lerobot_grad_clip_norm)

    def make_processors(self, config, dataset_stats: dict[str, dict[str, Any]] | None):
        """Normalizers over `dataset_stats` with the diffusion's normalization mapping, as LeRobot
        builds them for `--policy.type=diffusion` (the base learns, and the critics read, in that space)."""
        if not config.input_features or not config.output_features:
            raise ValueError(
                "dyna_vgd bc-mode processors normalize the policy's features: set config.input_features and "
                "output_features (lerobot-train does, from the dataset) before building them"
            )
        return make_default_pre_post_processors(config, dataset_stats)

    # ----------------------------------------------------------------------------------- policy

    def make_adapter(self, config, base_adapter: BasePolicyAdapter | None, base_policy_dir) -> BasePolicyAdapter:
        """A fresh `DiffusionPolicy` from `config.diffusion` and the policy's features (or an in-memory
        one, which must be trainable)."""
        if base_adapter is not None:
            if base_adapter.frozen or not isinstance(base_adapter.policy, DiffusionPolicy):
                raise ValueError(
                    "base_mode=bc trains its base: pass an adapter built with "
                    "BasePolicyAdapter.from_policy(<DiffusionPolicy>, frozen=False)"
                )
            return base_adapter
        if not config.input_features or not config.output_features:
            raise ValueError(
                "--policy.base_mode=bc builds its diffusion base from the policy's input/output features: "
                "train on a dataset (lerobot-train fills them) or set config.input_features/output_features"
            )
        diffusion_cfg = copy.deepcopy(config.diffusion)
        diffusion_cfg.input_features = dict(config.input_features)
        diffusion_cfg.output_features = dict(config.output_features)
        diffusion_cfg.device = config.device
        # LeRobot's own class and loss; the copy keeps config.diffusion as the user set it (the
        # adapter switches the copy to DDIM sampling; training noise is the configured schedule).
        return BasePolicyAdapter.from_policy(
            DiffusionPolicy(diffusion_cfg), num_inference_steps=config.num_inference_steps, frozen=False
        )

    def bind(self, policy, dataset_meta) -> None:
        """Record the base's facts, check the data, and decide once whether the critics train (a
        dataset without rewards trains the base only)."""
        config, adapter = policy.config, policy.adapter
        base_cfg = adapter.policy.config
        config.set_base_facts("diffusion", base_cfg.n_obs_steps, base_cfg.n_action_steps)
        config.normalization_mapping = dict(base_cfg.normalization_mapping)
        if dataset_meta is None:
            if config.train_critic is None:
                config.train_critic = True
            return
        adapter.check_features(dataset_meta)
        has_reward = config.reward_key in set(dataset_meta.features) or config.reward_from_success
        if config.train_critic is None:
            config.train_critic = has_reward
            if not has_reward:
                logging.warning(
                    "dyna_vgd: the dataset has no reward column '%s' and --policy.reward_from_success is off, "
                    "so only the behaviour-cloned diffusion base is trained (no critic, no guidance: the "
                    "policy acts as the plain diffusion base). Record rewards, name the column with "
                    "--policy.reward_key, or pass --policy.reward_from_success=true to train the critics too.",
                    config.reward_key,
                )
        elif config.train_critic and not has_reward:
            policy._check_dataset(dataset_meta)  # raises, naming the reward options

    def optim_params(self, adapter: BasePolicyAdapter) -> list[dict]:
        """The diffusion network, in its own group with the optimizer preset's settings (diffusion's
        lr, betas, eps, weight decay)."""
        return [{"params": list(adapter.policy.diffusion.parameters())}]

    def training_loss(self, policy, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """LeRobot's diffusion loss on the batch, in the policy's train/eval mode."""
        policy.adapter.policy.train(policy.training)
        loss, _ = policy.adapter.policy.forward(diffusion_batch(policy.config, batch))
        return loss, {"bc_loss": loss.detach()}

    # ------------------------------------------------------------------------------ checkpoints
    # in_model_file (everything), save (nothing more), load_kwargs (none): the interface's defaults.

    def card_section(self, policy, dataset_repo_id) -> str:
        c = policy.config
        trained = ("by temporal-difference learning on the chunk-level MDP of the dataset's rewards"
                   if policy.trains_critic else "not at all (no rewards)")
        return (
            "## Behaviour-cloned base policy\n\n"
            f"{policy.method_card_text()} The base is a LeRobot `diffusion` policy (horizon {c.diffusion.horizon}, "
            f"{c.diffusion.n_obs_steps} observation steps, {c.n_action_steps}-step executed chunks) trained inside this "
            f"policy by behaviour cloning on `{dataset_repo_id}` with LeRobot's diffusion loss; the critics were trained "
            f"{trained}. It decodes with {policy.adapter.num_inference_steps} deterministic DDIM steps.\n\n"
            "Its weights are part of `model.safetensors` and its settings are the `diffusion` entry of `config.json`, "
            "so `--policy.path=<this repo>` rebuilds everything.\n"
        )


BEHAVIOUR_CLONED_BASE = BehaviourClonedBase()


def diffusion_batch(config, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """What LeRobot's diffusion loss reads of a lerobot-train batch: the current observation history
    (B, n_obs_steps, ...), the `horizon` actions from -(n_obs_steps - 1) and their padding mask."""
    current = config.current_obs_positions
    out = {}
    for key, value in observations(batch).items():
        out[key] = value[:, current] if f"{key}_is_pad" in batch else value
    out[ACTION] = batch[ACTION]
    out[f"{ACTION}_is_pad"] = batch[f"{ACTION}_is_pad"]
    return out
