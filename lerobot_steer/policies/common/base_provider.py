"""Where a steering policy's base comes from, as one strategy object: `BaseProvider`.

A steering policy drives its base through a `BasePolicyAdapter` whatever the base is, but where the
base comes from decides many things around it: the facts the config reads before the dataset is
built, the actions a training batch holds, the processors, the optimizer, the training loss, what a
checkpoint stores and the model card. Each of those is one method here, so that the config, the
processor factory and the policy ask `config.base_provider` instead of branching on the kind:

* `FrozenBase` (this module; dsrl, and dyna_vgd's default `base_mode=frozen`): a pretrained LeRobot
  checkpoint, never updated. Its facts come from its config.json, its processors are its own, only
  the critics (and actors) train, and a checkpoint carries the base once in `base_policy/`.
* `BehaviourClonedBase` (policies/dyna_vgd/bc_base.py, `base_mode=bc`): LeRobot's diffusion policy
  trained inside dyna_vgd by behaviour cloning; it lives in `model.safetensors`.

Providers hold no state (one instance per kind): everything they act on is the config or the policy
they are handed. `config.base_provider` is the one place that picks one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from lerobot.optim.optimizers import AdamConfig

from lerobot_steer.cli_errors import mark_user_error
from lerobot_steer.steering.base_adapter import BaseFacts, BasePolicyAdapter, CheckpointError, read_base_facts

from .processors import base_pre_post_processors

if TYPE_CHECKING:
    from lerobot.processor import PolicyProcessorPipeline

    from .config import SteeringConfig

BASE_POLICY_DIR = "base_policy"  # where a checkpoint keeps a frozen base (config, weights, processors)
BASE_PREFIX = "adapter."  # state-dict prefix of the base (the policy's `adapter` attribute)


class BaseProvider:
    """The interface. `policy` arguments are steering policies (`SteeringPolicyMixin` hosts) whose
    `config` and `adapter` are set; `config` arguments are `SteeringConfig`s."""

    # ------------------------------------------------------------------------ config (no policy yet)

    def configure(self, config: SteeringConfig) -> None:
        """At parse time (`__post_init__`): set the config fields that follow from the base's settings."""

    def read_facts(self, config: SteeringConfig) -> BaseFacts:
        """The base's type, history and chunk length, before the policy (and the base) are built."""
        raise NotImplementedError

    def action_delta_indices(self, config: SteeringConfig) -> list[int]:
        """The action offsets a training sample holds; they must contain the executed chunk [0, n_exec)."""
        raise NotImplementedError

    def optimizer_preset(self, config: SteeringConfig) -> AdamConfig:
        """LeRobot's optimizer for lerobot-train (the policy's param groups may override lr per group)."""
        raise NotImplementedError

    def make_processors(
        self, config: SteeringConfig, dataset_stats: dict[str, dict[str, Any]] | None
    ) -> tuple[PolicyProcessorPipeline, PolicyProcessorPipeline]:
        """The policy's pre/post processors (LeRobot's `make_pre_post_processors` for this type)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- policy

    def make_adapter(
        self, config: SteeringConfig, base_adapter: BasePolicyAdapter | None, base_policy_dir
    ) -> BasePolicyAdapter:
        """The base: `base_adapter` if given (in-memory, checked), else loaded or built."""
        raise NotImplementedError

    def bind(self, policy, dataset_meta) -> None:
        """Check the training data against the base and record in the config what follows from it."""
        raise NotImplementedError

    def optim_params(self, adapter: BasePolicyAdapter) -> list[dict]:
        """The base's param groups for the policy's optimizer (none for a base that does not train)."""
        return []

    def training_loss(self, policy, batch: dict[str, Tensor]) -> tuple[Tensor | None, dict[str, Tensor]]:
        """The base's own loss on a lerobot-train batch, and its metrics (None, {} when it does not train)."""
        return None, {}

    # ------------------------------------------------------------------------------ checkpoints

    def in_model_file(self, key: str) -> bool:
        """Whether a state-dict entry of the policy belongs in its `model.safetensors`."""
        return True

    def save(self, adapter: BasePolicyAdapter, save_directory: Path) -> None:
        """Store what `model.safetensors` and `config.json` do not hold of the base."""

    def load_kwargs(self, folder: Path, policy_name: str, class_name: str) -> dict[str, Any]:
        """Extra keyword arguments for the policy's `__init__` when it loads the checkpoint in `folder`."""
        return {}

    def card_section(self, policy, dataset_repo_id) -> str:
        """The model card's section on the base (after LeRobot's own card text)."""
        raise NotImplementedError


class FrozenBase(BaseProvider):
    """A pretrained LeRobot base (diffusion / pi0 / pi05 / smolvla), named by `base_policy_path`."""

    def read_facts(self, config: SteeringConfig) -> BaseFacts:
        """From the checkpoint's config.json (cheap: JSON only, plus a check that the files are there)."""
        if config.base_policy_path is None:
            raise mark_user_error(ValueError(config.missing_base_message()))
        return read_base_facts(config.base_policy_path, revision=config.base_policy_revision)

    def action_delta_indices(self, config: SteeringConfig) -> list[int]:
        return list(range(config.n_exec))  # the executed chunk: only the critics learn from actions

    def optimizer_preset(self, config: SteeringConfig) -> AdamConfig:
        return AdamConfig(lr=config.critic_lr, weight_decay=0.0, grad_clip_norm=config.lerobot_grad_clip_norm)

    def make_processors(self, config, dataset_stats):
        """The base checkpoint's own pipelines (`dataset_stats` ignored on purpose, see processors.py)."""
        return base_pre_post_processors(config)

    def make_adapter(self, config, base_adapter, base_policy_dir) -> BasePolicyAdapter:
        return base_adapter if base_adapter is not None else load_base_adapter(config, base_policy_dir)

    def bind(self, policy, dataset_meta) -> None:
        """Check the data against the base, then adopt the base's features and normalization.

        The config takes the base's input/output features and normalization mapping, so that the
        normalizer LeRobot rebuilds (with `features`/`norm_map` overrides) is the base's.
        """
        config, adapter = policy.config, policy.adapter
        base_cfg = adapter.policy.config
        if dataset_meta is not None:
            policy._check_dataset(dataset_meta)
        elif config.input_features or config.output_features:
            adapter.check_features({**config.input_features, **config.output_features})
        if config.base_type is None:  # in-memory base: take the facts the config reads from a checkpoint
            config.set_base_facts(adapter.policy_type, base_cfg.n_obs_steps, adapter.n_action_steps)
        if config.n_exec > adapter.n_action_steps:
            raise ValueError(f"n_action_steps={config.n_exec} > the base's {adapter.n_action_steps}")
        config.input_features = dict(base_cfg.input_features)
        config.output_features = dict(base_cfg.output_features)
        config.normalization_mapping = dict(base_cfg.normalization_mapping)

    def in_model_file(self, key: str) -> bool:
        return not key.startswith(BASE_PREFIX)  # the base lives in base_policy/

    def save(self, adapter: BasePolicyAdapter, save_directory: Path) -> None:
        """The base's weights, config and processors, once, so that `--policy.path` alone rebuilds it."""
        base_dir = Path(save_directory) / BASE_POLICY_DIR
        adapter.policy.save_pretrained(base_dir)
        for pipeline in (adapter.preprocessor, adapter.postprocessor):
            if pipeline is not None:
                pipeline.save_pretrained(base_dir)

    def load_kwargs(self, folder: Path, policy_name: str, class_name: str) -> dict[str, Any]:
        if not (folder / BASE_POLICY_DIR).is_dir():
            raise CheckpointError(
                f"{folder} has no {BASE_POLICY_DIR}/ folder: it is not a complete {policy_name} checkpoint (the frozen "
                f"base policy is saved there by {class_name}.save_pretrained)"
            )
        return {"base_policy_dir": folder / BASE_POLICY_DIR}

    def card_section(self, policy, dataset_repo_id) -> str:
        return base_policy_card_section(policy.config, policy.method_card_text())


FROZEN_BASE = FrozenBase()


def load_base_adapter(config: SteeringConfig, base_policy_dir=None) -> BasePolicyAdapter:
    """The frozen base: the checkpoint's own `base_policy/` copy, else `config.base_policy_path`."""
    source = base_policy_dir or config.base_policy_path
    if source is None:
        raise mark_user_error(ValueError(config.missing_base_message()))
    return BasePolicyAdapter.from_pretrained(
        source,
        device=config.device,
        revision=None if base_policy_dir else config.base_policy_revision,
        num_inference_steps=config.num_inference_steps,
    )


def base_policy_card_section(config: SteeringConfig, method_text: str) -> str:
    """Model-card text naming the steered base (what `push_to_hub` uploads in README.md)."""
    source = config.base_policy_path or "(in-memory policy)"
    revision = f" at revision `{config.base_policy_revision}`" if config.base_policy_revision else ""
    return (
        "## Steered base policy\n\n"
        f"{method_text} The frozen `{config.base_type}` base policy was trained from `{source}`{revision} and "
        f"executes {config.n_action_steps}-step action chunks.\n\n"
        f"The base's weights, config and processors are included in `{BASE_POLICY_DIR}/`, so "
        "`--policy.path=<this repo>` rebuilds everything.\n"
    )
