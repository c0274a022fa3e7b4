"""What the RL fine-tuned VLA policies (`pi0_rl`, `pi05_rl`, `smolvla_rl`) share.

Each is LeRobot's own policy class with this mixin in front (`PI0RLPolicy(VLARLPolicyMixin,
PI0Policy)`): LeRobot builds, trains (its flow-matching loss: supervised fine-tuning still works),
saves and decodes the model; the mixin adds

* a stochastic denoising chain with an exact log-likelihood (Flow-Noise or Flow-SDE, formulas in
  `steering/stochastic_flow.py`), run through LeRobot's own `sample_actions` with a stand-in for
  the RTC processor at `euler_integrate`'s per-step seam: `sample_actions_with_log_prob(batch)`
  samples a chain, `evaluate_chain(batch, chain)` / `log_prob_of_chain(batch, chain)` re-evaluate
  a stored one under the current weights, with gradients (PPO's ratio);
* the Flow-Noise std head (on the action expert's output features, the input of LeRobot's
  `action_out_proj`, and t) and a value head (on the pooled VLM prefix, or on the robot state);
* acting: stochastic in training mode, the base's own deterministic decode in eval mode
  (`deterministic_eval`);
* starting from a stock checkpoint (`base_policy_path`) and `export_to_base`, which writes a stock
  `pi0` / `pi05` / `smolvla` checkpoint back.

Family-specific facts (how a batch becomes `sample_actions` arguments, which module runs the VLM)
are the few properties each modeling file defines.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import OBS_LANGUAGE_TOKENS, OBS_STATE

from lerobot_steer.config_error import ConfigError
from lerobot_steer.steering.base_adapter import CheckpointError, _resolve_checkpoint
from lerobot_steer.steering.denoisers import velocity_seam
from lerobot_steer.steering.networks import build_mlp
from lerobot_steer.steering.stochastic_flow import ChainRecord, StochasticEuler, sde_sigma

from .vla_rl_config import VLARLConfigMixin

RL_HEADS = ("rl_noise_head", "rl_value_head")  # top-level modules export_to_base leaves out
MODEL_FILE = "model.safetensors"

# Set while `from_pretrained` builds a policy whose checkpoint holds every weight: the constructor then
# neither reads the base checkpoint's config nor loads its weights.
_LOADING_OWN_CHECKPOINT = contextvars.ContextVar("vla_rl_loading_own_checkpoint", default=False)


@dataclass
class VLAChain:
    """One stochastic decode (or the re-evaluation of a stored one).

    Attributes:
        actions: (B, chunk_size, action_dim): the chain's last state cut to the real action dims, what
            `predict_action_chunk` returns (normalized, before the postprocessor).
        chain: (B, K + 1, chunk_size, max_action_dim): x_0 (the initial noise, t = 1) .. x_K (t = 0).
        log_prob: (B,): joint log-likelihood of x_1..x_K given x_0 and the observation; None for a
            deterministic decode.
        step_log_probs: (B, K): its per-step terms.
        entropy: (B,): summed entropy of the Gaussian transitions.
        stds: (B, K, chunk_size, max_action_dim): each transition's std (0 where no noise goes).
        value: (B,) or None (`value_head="none"`).
    """

    actions: Tensor
    chain: Tensor
    log_prob: Tensor | None
    step_log_probs: Tensor
    entropy: Tensor
    stds: Tensor
    value: Tensor | None


class NoiseStdHead(nn.Module):
    """Flow-Noise's std sigma_theta(h, t) in [min_std, max_std], per chunk step and action dim.

    log sigma = log min + (log max - log min) * sigmoid(MLP([h, t])), with h the action expert's
    output features of the step (which already see the observation, x_t and t). The last layer
    starts at zero: every std starts at the geometric mean of the bounds.
    """

    def __init__(self, feature_dim: int, hidden_dims: list[int], action_dim: int, min_std: float, max_std: float):
        super().__init__()
        self.mlp = build_mlp(feature_dim + 1, hidden_dims, action_dim, activation="tanh", layer_norm=False)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.log_min, self.log_max = math.log(min_std), math.log(max_std)

    def forward(self, features: Tensor, t: float) -> Tensor:
        time = features.new_full((*features.shape[:-1], 1), t)
        raw = self.mlp(torch.cat([features.float(), time], dim=-1))
        return torch.exp(self.log_min + (self.log_max - self.log_min) * torch.sigmoid(raw))


class ValueHead(nn.Module):
    """V(o): an MLP (Linear -> LayerNorm -> GELU) on a feature vector, one output."""

    def __init__(self, in_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.mlp = build_mlp(in_dim, hidden_dims, 1, activation="gelu", layer_norm=True)

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(features.float()).squeeze(-1)


class _StopAtFirstStep(Exception):
    """Raised by `_PrefixOnly` at the first Euler step: the prefix pass has run, nothing more is needed."""


class _PrefixOnly:
    """Stands in for the RTC processor when only the VLM prefix pass is wanted (`predict_value`)."""

    def is_debug_enabled(self) -> bool:
        return False

    def denoise_step(self, **_kwargs):
        raise _StopAtFirstStep


class _ModelTaps:
    """Reads what a value or noise head needs out of LeRobot's decode, without changing it.

    * `features`: the input of `model.action_out_proj` at the current step, set while `feature_tap()`
      is active. The chain enters it around each step's velocity and std (the seam's `step_context`),
      also when a checkpointed step is recomputed in the backward pass, after this context has closed.
    * `prefix` / `prefix_mask`: the VLM's output on the prefix and its padding mask, from the
      first VLM call whose suffix input is None (the prefix pass) and from `model.embed_prefix`. Both
      are called as plain methods (`.forward(...)`), which module hooks do not see, so the bound
      methods are wrapped on the instance for the duration of the context.
    """

    def __init__(self, policy: VLARLPolicyMixin, *, prefix: bool):
        self._policy, self._want_prefix = policy, prefix
        self.features: Tensor | None = None
        self.prefix: Tensor | None = None
        self.prefix_mask: Tensor | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _ModelTaps:
        model = self._policy.model
        if self._want_prefix:
            self._stack.enter_context(_wrapped(model, "embed_prefix", self._on_embed_prefix))
            self._stack.enter_context(_wrapped(self._policy.vlm_module, "forward", self._on_vlm_forward))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _on_action_out_proj(self, _module, args, _output) -> None:
        self.features = args[0]

    @contextlib.contextmanager
    def feature_tap(self) -> Iterator[None]:
        """Record `features` for the duration (one step's velocity and std)."""
        handle = self._policy.model.action_out_proj.register_forward_hook(self._on_action_out_proj)
        try:
            yield
        finally:
            handle.remove()

    def _on_embed_prefix(self, original, *args, **kwargs):
        out = original(*args, **kwargs)
        if self.prefix_mask is None:
            self.prefix_mask = out[1]
        return out

    def _on_vlm_forward(self, original, *args, **kwargs):
        out = original(*args, **kwargs)
        embeds = kwargs.get("inputs_embeds")
        if self.prefix is None and embeds is not None and embeds[0] is not None and embeds[1] is None:
            self.prefix = out[0][0]
        return out

    def pooled_prefix(self) -> Tensor:
        if self.prefix is None or self.prefix_mask is None:
            raise RuntimeError(
                "the VLM prefix pass was not seen: LeRobot's sample_actions no longer calls embed_prefix and "
                "the VLM with inputs_embeds=[prefix, None] (see tests/test_vla_rl.py seam tests)"
            )
        mask = self.prefix_mask[..., : self.prefix.shape[1]].to(self.prefix.dtype).unsqueeze(-1)
        return (self.prefix * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


@contextlib.contextmanager
def _wrapped(owner: nn.Module, name: str, wrapper) -> Iterator[None]:
    """`owner.name(...)` calls `wrapper(original, ...)` while the context is active (an instance attribute)."""
    original = getattr(owner, name)

    def call(*args, **kwargs):
        return wrapper(original, *args, **kwargs)

    owner.__dict__[name] = call
    try:
        yield
    finally:
        owner.__dict__.pop(name, None)


class VLARLPolicyMixin:
    """RL additions to a LeRobot flow-matching VLA policy (module docstring). Goes first in the bases.

    Subclasses set `base_policy_class` and define `model_inputs`, `vlm_module`, `prefix_width` and
    `num_denoise_steps`.
    """

    base_policy_class: ClassVar[type[PreTrainedPolicy]]
    config: VLARLConfigMixin
    model: nn.Module

    def __init__(self, config, **kwargs):
        if not isinstance(config, VLARLConfigMixin):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}. To start from "
                f"a stock checkpoint use {type(self).__name__}.from_base(<path>) or "
                f"--policy.type={self.name} --policy.base_policy_path=<path>"
            )
        start_from_base = config.base_policy_path is not None and not _LOADING_OWN_CHECKPOINT.get()
        if start_from_base:
            config.resolve_base_fields()
        super().__init__(config, **kwargs)
        self.rl_noise_head = self._make_noise_head()
        self.rl_value_head = self._make_value_head()
        for head in (self.rl_noise_head, self.rl_value_head):
            if head is not None and config.device is not None:
                head.to(config.device)
        self._act_stochastic: bool | None = None
        if start_from_base:
            self.load_base_weights(config.base_policy_path, revision=config.base_policy_revision)
        if config.trainable == "lora":  # after the stock weights: adapters rename the layers they wrap
            self._add_lora()

    # ------------------------------------------------------------------------ family-specific facts

    def model_inputs(self, batch: dict[str, Tensor]) -> tuple:
        """The positional arguments of `self.model.sample_actions` before `noise`, from a normalized batch."""
        raise NotImplementedError

    @property
    def vlm_module(self) -> nn.Module:
        """The module whose `forward(inputs_embeds=[prefix, None], ...)` runs the prefix pass."""
        raise NotImplementedError

    @property
    def prefix_width(self) -> int:
        raise NotImplementedError

    @property
    def lora_module(self) -> nn.Module:
        """The VLM alone (not its action expert): where `trainable=lora` adds adapters."""
        raise NotImplementedError

    @property
    def num_denoise_steps(self) -> int:
        raise NotImplementedError

    # -------------------------------------------------------------------------------- construction

    @classmethod
    def from_base(cls, base_policy_path: str | Path, **config_fields: Any):
        """A fresh RL policy starting from a stock checkpoint (folder or Hub id); other fields as keywords."""
        config = cls.config_class(base_policy_path=str(base_policy_path), **config_fields)
        return cls(config)

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *, config=None, strict: bool = True, **kwargs):
        """Load a checkpoint of this type (all weights, heads included; the base is not read again).

        LeRobot's generic loader, strict by default. PI0Policy / PI05Policy's own `from_pretrained` is
        bypassed on purpose: it prefixes every key without `model.` (our heads) and, when loading fails,
        prints a warning and returns randomly initialized weights.
        """
        folder = Path(str(pretrained_name_or_path))
        if folder.is_dir() and not (folder / MODEL_FILE).is_file():
            raise CheckpointError(f"{folder} has no {MODEL_FILE}: not a saved {cls.name} checkpoint")
        token = _LOADING_OWN_CHECKPOINT.set(True)
        try:
            return PreTrainedPolicy.from_pretrained.__func__(
                cls, pretrained_name_or_path, config=config, strict=strict, **kwargs
            )
        finally:
            _LOADING_OWN_CHECKPOINT.reset(token)

    def load_base_weights(self, path: str | Path, *, revision: str | None = None) -> None:
        """Load a stock checkpoint's weights into the model; every weight but the RL heads must be there."""
        from safetensors.torch import load_file

        folder = _resolve_checkpoint(path, revision=revision, cache_dir=None, token=None)
        file = folder / MODEL_FILE
        if not file.is_file():
            raise CheckpointError(f"{folder} has no {MODEL_FILE}: --policy.base_policy_path must be a saved checkpoint")
        state = load_file(str(file))
        fix_keys = getattr(self, "_fix_pytorch_state_dict_keys", None)  # pi0 / pi05: openpi-converted names
        if fix_keys is not None:
            state = fix_keys(state, self.config)
        state = {key if key.startswith("model.") else f"model.{key}": value for key, value in state.items()}
        mismatch = (f"{folder} does not match a {self.config.base_type or self.base_policy_class.name} built from "
                    "this config: was a model field of the base overridden (e.g. --policy.max_action_dim)? Leave "
                    "those at LeRobot's defaults so that the base's own values are used")
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches raise even when strict=False
            raise CheckpointError(f"{mismatch}. {e}") from e
        own = self.state_dict()
        loaded = {own[k].data_ptr() for k in state if k in own}
        # Tied weights (one tensor, two names) are saved once; the other name is then "missing" but loaded.
        missing = [k for k in missing if not k.startswith(RL_HEADS) and own[k].data_ptr() not in loaded]
        if missing or unexpected:
            raise CheckpointError(
                f"{mismatch}. Missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )

    # ----------------------------------------------------------------------------------------- LoRA

    def _add_lora(self) -> None:
        """Low-rank adapters on the VLM's `lora_target_modules` (PEFT's own LoRA layers, injected in place
        so the policy stays this class and LeRobot's save / load see ordinary modules). B starts at zero:
        the actions are the base's until training moves them."""
        from peft import LoraConfig, inject_adapter_in_model

        c = self.config
        lora = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=0.0, bias="none",
                          target_modules=list(c.lora_target_modules))
        try:
            inject_adapter_in_model(lora, self.lora_module)
        except ValueError as error:  # no layer of the VLM matched the names
            raise ConfigError(f"--policy.lora_target_modules={list(c.lora_target_modules)}: {error}") from error
        # PEFT leaves the adapters trainable; the frozen VLM around them stays as LeRobot set it.
        if not any(p.requires_grad for n, p in self.lora_module.named_parameters() if "lora_" in n):
            raise ConfigError("--policy.trainable=lora added no trainable adapter to the VLM")

    def _lora_layers(self) -> Iterator[tuple[nn.Module, str, nn.Module]]:
        """(parent, attribute name, PEFT LoRA layer) for every adapted layer of the VLM."""
        from peft.tuners.lora import LoraLayer

        for parent in self.lora_module.modules():
            for name, child in parent.named_children():
                if isinstance(child, LoraLayer):
                    yield parent, name, child

    @contextlib.contextmanager
    def lora_merged(self) -> Iterator[None]:
        """For the duration, each LoRA layer is replaced by its wrapped stock layer with the adapter's
        delta added (W + alpha / r * B A): the state dict then has the stock names and merged weights.
        The weights are restored exactly afterwards (from copies, not by subtracting the delta)."""
        layers = list(self._lora_layers())
        saved = []
        try:
            with torch.no_grad():
                for parent, name, layer in layers:
                    base = layer.get_base_layer()
                    saved.append((parent, name, layer, base.weight.detach().clone()))
                    base.weight.add_(layer.get_delta_weight("default").to(base.weight.dtype))
                    setattr(parent, name, base)
            yield
        finally:
            with torch.no_grad():
                for parent, name, layer, weight in saved:
                    layer.get_base_layer().weight.copy_(weight)
                    setattr(parent, name, layer)

    def _make_noise_head(self) -> NoiseStdHead | None:
        if self.config.stochastic_chain != "flow_noise":
            return None
        return NoiseStdHead(self.model.action_out_proj.in_features, list(self.config.noise_head_dims),
                            self.action_dim, self.config.min_noise_std, self.config.max_noise_std)

    def _make_value_head(self) -> ValueHead | None:
        kind = self.config.value_head
        if kind == "none":
            return None
        if kind == "prefix":
            return ValueHead(self.prefix_width, list(self.config.value_head_dims))
        state = (self.config.input_features or {}).get(OBS_STATE)
        if state is None:
            raise ConfigError(
                f"--policy.value_head=separate reads {OBS_STATE}, which this policy's inputs lack; "
                "use --policy.value_head=prefix (VLM features) or none"
            )
        return ValueHead(state.shape[-1], list(self.config.value_head_dims))

    @property
    def action_dim(self) -> int:
        return self.config.action_feature.shape[0]

    # ------------------------------------------------------------------------------ stochastic chain

    def noise_mask(self, device=None) -> Tensor:
        """(chunk_size, max_action_dim) bool: where the chain is noised and the log-likelihood counts."""
        config = self.config
        steps = config.n_action_steps if config.noise_on == "executed" else config.chunk_size
        mask = torch.zeros(config.chunk_size, config.max_action_dim, dtype=torch.bool, device=device)
        mask[:steps, : self.action_dim] = True
        return mask

    def _std_fn(self, taps: _ModelTaps):
        config, steps = self.config, self.num_denoise_steps
        if config.stochastic_chain == "flow_noise":
            pad = config.max_action_dim - self.action_dim

            def std(x, _v, t):
                return F.pad(self.rl_noise_head(taps.features, t), (0, pad)).to(x.dtype)

            return std

        def sigma(x, _v, t):
            return torch.full_like(x, sde_sigma(t, steps, config.sde_noise_level))

        return sigma

    def _run_chain(
        self,
        batch: dict[str, Tensor],
        *,
        noise: Tensor | None = None,
        forced_chain: Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> VLAChain:
        """Decode through LeRobot's `sample_actions` with the chain at the per-step seam.

        The sampler's `@torch.no_grad` is unwrapped, so gradients flow (into the VLM too, when it
        trains) whenever the caller has them enabled; `sample_actions_with_log_prob` turns them off.
        """
        inputs = self.model_inputs(batch)
        config = self.config
        if forced_chain is not None:
            noise = forced_chain[:, 0]
        if noise is None:
            shape, device = self._noise_shape(batch), batch[OBS_LANGUAGE_TOKENS].device
            noise = (self.model.sample_noise(shape, device) if generator is None
                     else torch.randn(shape, generator=generator, device=device))
        want_features = config.stochastic_chain == "flow_noise" and not deterministic
        with _ModelTaps(self, prefix=config.value_head == "prefix") as taps:
            hook = StochasticEuler(
                chain_type=config.stochastic_chain, num_steps=self.num_denoise_steps, std_fn=self._std_fn(taps),
                mask=self.noise_mask(noise.device), deterministic=deterministic, forced_chain=forced_chain,
                generator=generator, checkpoint=config.checkpoint_chain,
                step_context=taps.feature_tap if want_features else contextlib.nullcontext,
            )
            sampler = inspect.unwrap(type(self.model).sample_actions).__get__(self.model)
            with velocity_seam(self, hook):
                sampler(*inputs, noise=noise)
            record = hook.record()
            value = self._value_from(batch, taps)
        return self._chain_output(record, value, deterministic)

    def _noise_shape(self, batch: dict[str, Tensor]) -> tuple[int, int, int]:
        return (batch[OBS_LANGUAGE_TOKENS].shape[0], self.config.chunk_size, self.config.max_action_dim)

    def _chain_output(self, record: ChainRecord, value: Tensor | None, deterministic: bool) -> VLAChain:
        return VLAChain(
            actions=record.chain[:, -1, :, : self.action_dim], chain=record.chain,
            log_prob=None if deterministic else record.log_prob, step_log_probs=record.step_log_probs,
            entropy=record.entropy, stds=record.stds, value=value,
        )

    def _value_from(self, batch: dict[str, Tensor], taps: _ModelTaps) -> Tensor | None:
        kind = self.config.value_head
        if kind == "none":
            return None
        if kind == "prefix":
            return self.rl_value_head(taps.pooled_prefix())
        state = batch[OBS_STATE]
        return self.rl_value_head(state[:, -1] if state.ndim > 2 else state)

    @torch.no_grad()
    def sample_actions_with_log_prob(
        self,
        batch: dict[str, Tensor],
        noise: Tensor | None = None,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> VLAChain:
        """Sample a chain x_0..x_K (x_0 = `noise`, or drawn) and its log-likelihood, value, entropy.

        `batch` is a normalized observation batch (after the preprocessor), as `predict_action_chunk`
        takes. `deterministic`: every std 0, the base's ODE decode (log_prob None).
        """
        return self._run_chain(batch, noise=noise, deterministic=deterministic, generator=generator)

    def evaluate_chain(self, batch: dict[str, Tensor], chain: Tensor) -> VLAChain:
        """Re-evaluate a stored chain under the current weights: log-likelihood, value, entropy.

        Differentiable (in the caller's grad mode): the velocity at each stored x_k, the noise head and
        the value head are recomputed, the density is that of the stored x_{k+1}.
        """
        return self._run_chain(batch, forced_chain=chain)

    def log_prob_of_chain(self, batch: dict[str, Tensor], chain: Tensor) -> Tensor:
        """(B,): the joint log-likelihood of a stored chain under the current weights (PPO's new log-prob)."""
        return self.evaluate_chain(batch, chain).log_prob

    def predict_value(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,): V(o) alone (for bootstrapping): with `value_head="prefix"` only the VLM prefix pass runs."""
        kind = self.config.value_head
        if kind == "none":
            raise ConfigError("this policy has no value head (--policy.value_head=none); use prefix or separate")
        with _ModelTaps(self, prefix=kind == "prefix") as taps:
            if kind == "prefix":
                sampler = inspect.unwrap(type(self.model).sample_actions).__get__(self.model)
                # Zero noise: nothing is denoised, and the global random stream is left alone.
                noise = torch.zeros(self._noise_shape(batch), device=batch[OBS_LANGUAGE_TOKENS].device)
                with velocity_seam(self, _PrefixOnly()), contextlib.suppress(_StopAtFirstStep):
                    sampler(*self.model_inputs(batch), noise=noise)
            return self._value_from(batch, taps)

    # ----------------------------------------------------------------------------------- acting

    @contextlib.contextmanager
    def _acting(self) -> Iterator[bool]:
        """Decide once per call whether to act stochastically, and keep the train/eval mode the caller
        had (LeRobot's select_action / predict_action_chunk switch the policy to eval mode)."""
        was_training = self.training
        outer = self._act_stochastic
        decided = outer if outer is not None else (was_training or not self.config.deterministic_eval)
        self._act_stochastic = decided
        try:
            yield decided
        finally:
            self._act_stochastic = outer
            self.train(was_training)

    def _stochastic_chunk(self, batch: dict[str, Tensor], noise: Tensor | None) -> Tensor:
        return self.sample_actions_with_log_prob(batch, noise=noise).actions

    def select_action(self, batch: dict[str, Tensor], *args, **kwargs) -> Tensor:
        """LeRobot's select_action (action queue), acting stochastically in training mode (`_acting`)."""
        with self._acting():
            return super().select_action(batch, *args, **kwargs)

    # ----------------------------------------------------------------------------------- export

    @contextlib.contextmanager
    def without_rl_heads(self) -> Iterator[None]:
        """The RL heads are detached from the module tree for the duration (the state dict is the base's)."""
        saved = {name: self._modules.pop(name) for name in RL_HEADS if name in self._modules}
        try:
            yield
        finally:
            self._modules.update(saved)


def export_to_base(policy: VLARLPolicyMixin, out_dir: str | Path, *, preprocessor=None, postprocessor=None) -> Path:
    """Write `policy` as a stock checkpoint of its base type (`pi0` / `pi05` / `smolvla`) into `out_dir`.

    The folder holds what `lerobot-train` writes and the stock `from_pretrained` reads: config.json of
    the base type (this policy's values of the base type's fields), model.safetensors without the RL
    heads (written by the same safetensors call as LeRobot's save_pretrained), and the processors:
    `preprocessor` / `postprocessor` if given (e.g. loaded from this policy's own checkpoint), else
    those of `base_policy_path`. The stock policy's deterministic actions are this policy's
    deterministic (eval-mode) actions (with LoRA adapters merged into the VLM's weights: equal up to
    float rounding).
    """
    from safetensors.torch import save_model

    if (preprocessor is None) != (postprocessor is None):
        raise ValueError("pass both preprocessor and postprocessor, or neither (then the base's are used)")
    if preprocessor is None:
        if policy.config.base_policy_path is None:
            raise ValueError(
                "export_to_base needs the processors: pass preprocessor= and postprocessor= (e.g. from "
                "lerobot.policies.factory.make_pre_post_processors(config, pretrained_path=<this policy's checkpoint>)), "
                "or give the policy a base_policy_path whose processors it uses"
            )
        from lerobot_steer.policies.common.processors import base_pre_post_processors

        preprocessor, postprocessor = base_pre_post_processors(policy.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy.config.base_config()._save_pretrained(out)
    merged = policy.lora_merged() if policy.config.trainable == "lora" else contextlib.nullcontext()
    with policy.without_rl_heads(), merged:
        save_model(policy, str(out / MODEL_FILE))
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)
    return out
