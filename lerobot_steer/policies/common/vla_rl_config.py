"""Config fields shared by the RL fine-tuned VLA policy types (`pi0_rl`, `pi05_rl`, `smolvla_rl`).

Each of those configs is LeRobot's own config of the base type with these fields added
(`PI0RLConfig(VLARLConfigMixin, PI0Config)`, ...), so every flag of the stock policy keeps its
meaning and `export_to_base` can write a plain config of the base type back.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from lerobot.configs.policies import PreTrainedConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.steering.stochastic_flow import STOCHASTIC_CHAINS

from .config import COUNT, POSITIVE, check_choice, check_fields

VALUE_HEADS = ("prefix", "separate", "none")
TRAINABLE = ("expert", "lora", "all")
NOISE_ON = ("executed", "chunk")

# Fields of the base type that describe the run, not the model: never copied from the base checkpoint.
RUN_FIELDS = frozenset({
    "device", "use_amp", "use_peft", "push_to_hub", "repo_id", "private", "tags", "license", "pretrained_path",
    "pretrained_revision", "train_expert_only",
})
# Fields that define what the model reads and writes: always the base checkpoint's.
IO_FIELDS = frozenset({"input_features", "output_features"})


@dataclass
class VLARLConfigMixin:
    """RL fields of `pi0_rl` / `pi05_rl` / `smolvla_rl`, on top of LeRobot's config of the base type.

    Starting point:
        base_policy_path: a stock `pi0` / `pi05` / `smolvla` checkpoint (a `pretrained_model/` folder or a
            Hub repo id) whose weights a fresh policy starts from. The base's config fills every field of
            the base type that you left at LeRobot's default (set one, e.g. `--policy.n_action_steps=10`,
            and yours wins); its input/output features are always the base's. None: built from this
            config alone (random weights, as `--policy.type=pi0` without a path). A saved `*_rl`
            checkpoint holds all its weights and never needs the base again.
        base_policy_revision: Hub revision pinning `base_policy_path`.

    Stochastic denoising chain (formulas: lerobot_steer/steering/stochastic_flow.py):
        stochastic_chain: "flow_noise" (ReinFlow / pi_RL Flow-Noise: the ODE step plus Gaussian noise
            whose std a learned head gives from the action expert's features and t) or "flow_sde"
            (Flow-GRPO / pi_RL Flow-SDE: the marginal-preserving SDE, sigma_t = a sqrt(t / (1 - t))).
        noise_head_dims: hidden sizes of the Flow-Noise std head (pi_RL's [128, 64]).
        min_noise_std / max_noise_std: bounds of that std (pi_RL's defaults 0.08 / 0.16).
        sde_noise_level: Flow-SDE's a (pi_RL's default 0.5).
        noise_on: which chunk steps get noise and count in the log-likelihood: "executed" (the first
            n_action_steps; the rest of the chunk follows the ODE) or "chunk" (all chunk_size steps).
            Either way only the real action dims are noised (the padded ones follow the ODE).

    Value head (PPO; GRPO needs none):
        value_head: "prefix" (an MLP over the VLM prefix features, mean-pooled over the valid tokens),
            "separate" (an MLP over the normalized robot state alone), or "none".
        value_head_dims: hidden sizes of that MLP.

    What trains:
        trainable: "expert" (the action expert and the projections around it; LeRobot's
            `train_expert_only`), "lora" (the expert plus low-rank adapters on the VLM's linear layers
            `lora_target_modules`, rank `lora_rank`, scale `lora_alpha / lora_rank`, added with PEFT's
            `inject_adapter_in_model`; the VLM's own weights stay frozen; an export merges the adapters
            into the stock weights), or "all". The noise and value heads always train.

    Memory:
        chain_gradient_checkpointing: in PPO / GRPO updates, recompute each denoising step's expert
            pass in the backward pass instead of keeping its activations (also switched on by pi0 /
            pi05's own `gradient_checkpointing`, which LeRobot applies only in training mode and so never
            inside the chain's re-evaluation). Same gradients, less memory, more compute.

    Acting:
        deterministic_eval: in eval mode `select_action` / `predict_action_chunk` run the base's own
            deterministic decode (sigma 0: exactly the base's actions for the same noise); False
            samples the stochastic chain in eval mode too. Training mode always samples it.
    """

    # The LeRobot config class of the base type (PI0Config, PI05Config, SmolVLAConfig): set by each subclass.
    base_config_class: ClassVar[type[PreTrainedConfig]]

    base_policy_path: str | None = None
    base_policy_revision: str | None = None

    stochastic_chain: str = "flow_noise"
    noise_head_dims: list[int] = field(default_factory=lambda: [128, 64])
    min_noise_std: float = 0.08
    max_noise_std: float = 0.16
    sde_noise_level: float = 0.5
    noise_on: str = "executed"

    value_head: str = "prefix"
    value_head_dims: list[int] = field(default_factory=lambda: [256, 256])

    trainable: str = "expert"
    chain_gradient_checkpointing: bool = False
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    deterministic_eval: bool = True

    # Filled from the base checkpoint when its fields are copied in (do not set by hand).
    base_type: str | None = None

    def __post_init__(self):
        super().__post_init__()
        self.validate_rl_fields()

    @property
    def checkpoint_chain(self) -> bool:
        """Whether the chain's steps are checkpointed in updates (`chain_gradient_checkpointing`)."""
        return self.chain_gradient_checkpointing or bool(getattr(self, "gradient_checkpointing", False))

    def validate_rl_fields(self) -> None:
        """Refuse bad RL settings at parse time, naming the flag and the fix."""
        check_choice("stochastic_chain", self.stochastic_chain, STOCHASTIC_CHAINS)
        check_choice("value_head", self.value_head, VALUE_HEADS)
        check_choice("trainable", self.trainable, TRAINABLE)
        check_choice("noise_on", self.noise_on, NOISE_ON)
        check_fields(self, {
            "min_noise_std": POSITIVE, "max_noise_std": POSITIVE, "sde_noise_level": POSITIVE,
            "noise_head_dims": COUNT, "value_head_dims": COUNT,
        })
        if self.min_noise_std > self.max_noise_std:
            raise ConfigError(
                f"--policy.min_noise_std={self.min_noise_std} is above --policy.max_noise_std={self.max_noise_std}: "
                "the noise head's std lies in [min_noise_std, max_noise_std]; set them equal for a fixed std"
            )
        if self.trainable == "lora":
            check_fields(self, {"lora_rank": COUNT, "lora_alpha": POSITIVE})
            if not self.lora_target_modules:
                raise ConfigError("--policy.lora_target_modules is empty: name the VLM's linear layers to adapt, "
                                  "e.g. --policy.lora_target_modules='[q_proj,k_proj,v_proj,o_proj]'")
        rtc = getattr(self, "rtc_config", None)
        if rtc is not None and rtc.enabled:
            raise ConfigError(
                f"--policy.rtc_config.enabled=true is not supported by {self.type}: its stochastic chain uses the "
                "same per-step seam as real-time chunking. Leave RTC off here; export the policy to its base type "
                "(export_to_base) and run RTC on the stock policy"
            )
        if getattr(self, "adapt_to_pi_aloha", False):
            raise ConfigError(
                f"--policy.adapt_to_pi_aloha=true is not supported by {self.type}: its actions are transformed "
                "after denoising, so the chain's last state would not be the action. Set it to false"
            )
        # What trains, in LeRobot's own switch (the VLM's requires_grad and eval mode follow it); with LoRA
        # the VLM's own weights stay frozen too and only its adapters train beside the expert.
        self.train_expert_only = self.trainable in ("expert", "lora")

    # ----------------------------------------------------------------------------- base checkpoint

    def resolve_base_fields(self) -> None:
        """Copy the base checkpoint's fields in once (no-op without `base_policy_path` or once done).

        Called by the policy's constructor and by `action_delta_indices`, which LeRobot reads to build
        the dataset before it builds the policy: the training chunks must have the base's length.
        """
        if self.base_policy_path is not None and self.base_type is None:
            self.copy_base_fields(_read_base_config(self))

    @property
    def action_delta_indices(self) -> list:
        self.resolve_base_fields()
        return super().action_delta_indices

    def copy_base_fields(self, base: PreTrainedConfig) -> None:
        """Take the base checkpoint's model fields (class docstring, `base_policy_path`) and re-validate."""
        expected = self.base_config_class
        if type(base) is not expected:
            raise ConfigError(
                f"--policy.base_policy_path={self.base_policy_path} is a '{base.type}' checkpoint; {self.type} "
                f"starts from a '{_registered_name(expected)}' checkpoint. "
                f"Use the *_rl type of that base (pi0 -> pi0_rl, pi05 -> pi05_rl, smolvla -> smolvla_rl)"
            )
        for f in dataclasses.fields(expected):
            if not f.init or f.name in RUN_FIELDS:
                continue
            ours = getattr(self, f.name)
            if f.name in IO_FIELDS or ours == _default(f):
                setattr(self, f.name, copy.deepcopy(getattr(base, f.name)))
        self.base_type = _registered_name(expected)
        self.__post_init__()

    def base_config(self) -> PreTrainedConfig:
        """This config as a plain config of the base type (what `export_to_base` writes)."""
        values = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self.base_config_class)
            if f.init
        }
        values["pretrained_path"] = None
        # `trainable` set this for the RL run; a stock checkpoint gets LeRobot's default back.
        train_expert_only = next(f for f in dataclasses.fields(self.base_config_class) if f.name == "train_expert_only")
        values["train_expert_only"] = _default(train_expert_only)
        return self.base_config_class(**values)


def _read_base_config(config: VLARLConfigMixin) -> PreTrainedConfig:
    """The base checkpoint's config, read with LeRobot's loader; errors name the flag."""
    from lerobot_steer.steering.base_adapter import CheckpointError, _resolve_checkpoint

    folder = _resolve_checkpoint(config.base_policy_path, revision=config.base_policy_revision, cache_dir=None,
                                 token=None)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"--policy.base_policy_path={config.base_policy_path}: {folder} has no config.json; point it at a "
            "checkpoint's pretrained_model/ folder (config.json, model.safetensors, processors)"
        )
    return PreTrainedConfig.from_pretrained(folder)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _registered_name(config_class: type[PreTrainedConfig]) -> str:
    return PreTrainedConfig.get_choice_name(config_class)

