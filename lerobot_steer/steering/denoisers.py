"""How each family of LeRobot base policies turns an initial noise into an action chunk.

Steering methods treat a frozen base policy as a map ``(observation, initial noise) -> action chunk``.
LeRobot 0.6.1 exposes that map as ``predict_action_chunk(batch, noise=...)``, but the families differ
in the shape of the noise, in which part of the denoised chunk is executed, in whether the map is
deterministic, and in where a guidance callback can reach the denoising loop. One ``Denoiser`` per
family holds exactly those differences, so that ``BasePolicyAdapter`` stays family-agnostic:

* ``DiffusionDenoiser`` (LeRobot ``DiffusionPolicy``): DDPM/DDIM over ``(horizon, action_dim)``.
* ``FlowMatchingDenoiser`` (``PI0Policy``, ``PI05Policy``, ``SmolVLAPolicy``): Euler integration of a
  velocity field over ``(chunk_size, max_action_dim)`` in LeRobot's shared ``euler_integrate``.
* ``GenericDenoiser``: any other policy whose ``predict_action_chunk`` takes ``noise=``; sampling
  works, guidance does not (there is no known per-step seam).

Guidance contract (shared by both guided families, see ``DenoiseStep``): at a chosen step the guide
sees the current clean-action estimate x0_hat of the executed part and may return a shift ``delta``.
The adapter then re-synthesizes the next sample from ``x0_hat + delta`` with the step's own noise
estimate: for DDIM (eta = 0) ``x_prev += sqrt(alpha_bar_prev) * delta``; for flow matching
``x_next += (1 - tau_next) * delta``, injected in velocity form at LeRobot's per-step seam. Both
reduce to "the executed action is exactly x0_hat + delta" at the last step, and both leave the
trajectory bit-for-bit unchanged when the guide returns zeros or ``None``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lerobot.policies.pretrained import PreTrainedPolicy

from lerobot_steer.cli_errors import UserError

# DDIM steps used when a checkpoint was trained with DDPM and the caller does not choose: DSRL and VGD
# decode with 4-10 DDIM steps; 10 is what LeRobot's docs advise for faster inference with DDIM
# (docs/source/multi_task_dit.mdx, "Inference Tuning"), a tenth of the default 100 DDPM steps.
DEFAULT_DDIM_STEPS = 10

# Built-in LeRobot 0.6.1 policies whose predict_action_chunk accepts `noise=` but never uses it: a
# signature check alone would wrongly accept them (modeling_xvla.py:407, modeling_vla_jepa.py:442).
NOISE_IGNORED_BY = frozenset({"xvla", "vla_jepa"})


@dataclass(frozen=True)
class DenoiseStep:
    """What a guide callback sees at one denoising step.

    Attributes:
        index: step number, 0 for the first (noisiest) step, ``num_steps - 1`` for the last.
        num_steps: number of denoising steps of this decode.
        estimate: clean-action estimate x0_hat of the executed part, shape
            ``(B, n_action_steps, action_dim)``, in the base's normalized action space, detached from
            the base (gradients can only flow through what the guide itself computes from it).
    """

    index: int
    num_steps: int
    estimate: Tensor


# A guide returns the shift of the clean-action estimate (same shape as `step.estimate`), or None to
# leave this step alone. It runs under torch.enable_grad(), so it may differentiate a critic.
Guide = Callable[[DenoiseStep], Tensor | None]


class UnsupportedBasePolicyError(UserError, TypeError):
    """The base policy cannot be steered through its initial noise."""


def noise_support_problem(policy_cls: type, policy_type: str) -> str | None:
    """Why `policy_cls` cannot be driven by a given noise, or None if it can.

    Checked on the class, so that `from_pretrained` fails before loading gigabytes of weights.
    """
    if policy_type in NOISE_IGNORED_BY:
        return (
            f"policy type '{policy_type}' accepts `noise=` in predict_action_chunk but ignores it in "
            "LeRobot 0.6.1, so its action chunk cannot be steered through the initial noise"
        )
    if _family_of(policy_cls) is not GenericDenoiser:
        return None
    method = getattr(policy_cls, "predict_action_chunk", None)
    if method is None or "noise" not in inspect.signature(method).parameters:
        return (
            f"policy type '{policy_type}' ({policy_cls.__name__}.predict_action_chunk) has no `noise` "
            "parameter, so its action chunk cannot be steered through the initial noise"
        )
    return None


def make_denoiser(policy: PreTrainedPolicy) -> Denoiser:
    """The family-specific view of `policy`, or UnsupportedBasePolicyError naming its type."""
    policy_type = getattr(policy.config, "type", type(policy).__name__)
    problem = noise_support_problem(type(policy), policy_type)
    if problem is not None:
        raise UnsupportedBasePolicyError(
            f"{problem}. Supported bases: diffusion, pi0, pi05, smolvla, or any policy whose "
            "predict_action_chunk(batch, noise=...) uses the noise as the start of its denoising."
        )
    return _family_of(type(policy))(policy)


def _family_of(policy_cls: type) -> type[Denoiser]:
    # Subclass checks (not type names) so that plugins deriving from these policies are covered.
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    if issubclass(policy_cls, DiffusionPolicy):
        return DiffusionDenoiser
    if issubclass(policy_cls, PI0Policy | PI05Policy | SmolVLAPolicy):
        return FlowMatchingDenoiser
    return GenericDenoiser


class Denoiser:
    """Family-specific facts about a base policy's denoising (see the module docstring)."""

    #: whether the base needs (B, n_obs_steps, ...) observations (LeRobot's offline diffusion mode)
    needs_obs_history = False

    def __init__(self, policy: PreTrainedPolicy):
        self.policy = policy
        self.config = policy.config

    @property
    def policy_type(self) -> str:
        return getattr(self.config, "type", type(self.policy).__name__)

    @property
    def action_dim(self) -> int:
        return self.config.action_feature.shape[0]

    @property
    def n_action_steps(self) -> int:
        return self.config.n_action_steps

    @property
    def chunk_length(self) -> int:
        """Length of the denoised chunk (the time axis of the noise)."""
        raise NotImplementedError

    @property
    def noise_width(self) -> int:
        """Last axis of the noise: the action dim, or the padded dim of VLA bases."""
        return self.action_dim

    @property
    def noise_dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def num_inference_steps(self) -> int | None:
        return None

    @property
    def resizes_images(self) -> bool:
        """Whether the base resizes camera frames itself (then only the channel count must match)."""
        return False

    def noise_shape(self, batch_size: int) -> tuple[int, int, int]:
        return (batch_size, self.chunk_length, self.noise_width)

    def configure(self, num_inference_steps: int | None) -> None:
        """Make the noise -> chunk map deterministic and set the number of denoising steps."""
        if num_inference_steps is not None:
            raise ValueError(
                f"num_inference_steps cannot be set for policy type '{self.policy_type}': the adapter "
                "does not know where its denoising loop reads the number of steps"
            )

    @property
    def executed_slice(self) -> slice:
        """Where the executed steps lie on the time axis of the noise (the denoised chunk)."""
        return slice(0, self.n_action_steps)

    def executed(self, actions: Tensor) -> Tensor:
        """The part of predict_action_chunk's output the base would execute."""
        return actions[:, : self.n_action_steps]

    def guidance(self, guide: Guide, steps: Collection[int] | None) -> contextlib.AbstractContextManager:
        raise NotImplementedError(
            f"guided_sample is not available for policy type '{self.policy_type}': the adapter knows a "
            "per-step seam only for DDIM (diffusion) and flow matching (pi0, pi05, smolvla)"
        )


class GenericDenoiser(Denoiser):
    """Another policy whose predict_action_chunk takes `noise=`: shapes read from common config names.

    LeRobot has no common attribute for the noise shape, so this reads the names its own denoising
    policies use (`horizon` or `chunk_size`; `max_action_dim` when actions are padded). A wrong guess
    surfaces as a shape error inside the base at the first `sample` call.
    """

    @property
    def chunk_length(self) -> int:
        for name in ("horizon", "chunk_size"):
            if getattr(self.config, name, None) is not None:
                return getattr(self.config, name)
        raise UnsupportedBasePolicyError(
            f"cannot infer the noise shape of policy type '{self.policy_type}': its config has "
            "neither `horizon` nor `chunk_size`"
        )

    @property
    def noise_width(self) -> int:
        return getattr(self.config, "max_action_dim", None) or self.action_dim


class DiffusionDenoiser(Denoiser):
    """LeRobot DiffusionPolicy, switched to deterministic DDIM.

    Why DDIM with eta = 0: LeRobot 0.6.1 defaults to DDPM, whose every reverse step adds fresh
    Gaussian noise, so the same initial noise gives a different chunk on each call. DSRL learns a
    policy over the initial noise and VGD shifts the trajectory of a fixed noise; both need a
    function noise -> chunk. DDIM with eta = 0 is that function, and it is valid for a model trained
    with DDPM (same noise-prediction network and alpha schedule, fewer steps), which is why the
    adapter builds the DDIM scheduler from the checkpoint's own DDPM scheduler config.

    The denoised chunk spans `horizon` steps starting `n_obs_steps - 1` steps in the past; LeRobot
    executes `n_action_steps` of them from the current step, and its predict_action_chunk already
    returns only that part. The clean-action estimate a guide sees is the scheduler's x0_hat, clipped
    to `clip_sample_range` when the base clips (LeRobot's default).
    """

    needs_obs_history = True

    @property
    def chunk_length(self) -> int:
        return self.config.horizon

    @property
    def noise_dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    @property
    def num_inference_steps(self) -> int:
        return self.policy.diffusion.num_inference_steps

    @property
    def resizes_images(self) -> bool:
        return self.config.resize_shape is not None

    @property
    def executed_slice(self) -> slice:
        start = self.config.n_obs_steps - 1
        return slice(start, start + self.n_action_steps)

    def configure(self, num_inference_steps: int | None) -> None:
        from diffusers.schedulers.scheduling_ddim import DDIMScheduler

        model = self.policy.diffusion
        scheduler = model.noise_scheduler
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
            num_inference_steps = num_inference_steps or DEFAULT_DDIM_STEPS
        steps = num_inference_steps or model.num_inference_steps
        if not 1 <= steps <= scheduler.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {scheduler.config.num_train_timesteps}] "
                f"(the base's num_train_timesteps), got {steps}"
            )
        model.noise_scheduler = scheduler
        model.num_inference_steps = steps
        # Keep the config truthful, so that a saved copy of this base rebuilds the same sampler.
        self.config.noise_scheduler_type = "DDIM"
        self.config.num_inference_steps = steps

    def executed(self, actions: Tensor) -> Tensor:
        return actions  # DiffusionModel.generate_actions already cut the executed steps

    @contextlib.contextmanager
    def guidance(self, guide: Guide, steps: Collection[int] | None) -> Iterator[None]:
        model = self.policy.diffusion
        scheduler = model.noise_scheduler
        model.noise_scheduler = _GuidedDDIM(scheduler, guide, steps, self.executed_slice, self.action_dim)
        try:
            yield
        finally:
            model.noise_scheduler = scheduler


class _GuidedDDIM:
    """Stands in for the DDIM scheduler during one decode and applies the guide after each step.

    Hooking the scheduler (rather than copying DiffusionModel.conditional_sample) keeps LeRobot's own
    loop in charge: the U-Net calls, conditioning and slicing are exactly those of `sample`.
    """

    def __init__(self, scheduler, guide: Guide, steps: Collection[int] | None, time_slice: slice, action_dim: int):
        self._scheduler = scheduler
        self._guide = guide
        self._steps = steps
        self._time_slice = time_slice
        self._action_dim = action_dim
        self._index = 0

    def __getattr__(self, name):  # set_timesteps, timesteps, config, ... come from the real scheduler
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._scheduler, name)

    def step(self, model_output: Tensor, timestep, sample: Tensor, *args, **kwargs):
        out = self._scheduler.step(model_output, timestep, sample, *args, **kwargs)
        index, self._index = self._index, self._index + 1
        num_steps = self._scheduler.num_inference_steps
        if not _chosen(index, num_steps, self._steps):
            return out
        x0 = out.pred_original_sample
        delta = _call_guide(self._guide, index, num_steps, x0[:, self._time_slice, : self._action_dim])
        if delta is None:
            return out
        full_delta = torch.zeros_like(x0)
        full_delta[:, self._time_slice, : self._action_dim] = delta
        # Same previous-timestep rule as DDIMScheduler.step; with eta = 0 the step is
        # x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps, so moving x0 by delta moves x_prev by
        # sqrt(a_prev) * delta while keeping the step's noise estimate.
        cfg = self._scheduler.config
        prev_t = int(timestep) - cfg.num_train_timesteps // num_steps
        alpha_prev = (
            self._scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else self._scheduler.final_alpha_cumprod
        )
        scale = alpha_prev.to(device=x0.device, dtype=x0.dtype).sqrt()
        return type(out)(prev_sample=out.prev_sample + scale * full_delta, pred_original_sample=x0 + full_delta)


class FlowMatchingDenoiser(Denoiser):
    """pi0 / pi05 / SmolVLA: deterministic Euler integration from tau = 1 (noise) to tau = 0.

    The noise is (chunk_size, max_action_dim): VLA bases pad actions to `max_action_dim` and the
    padded noise dims feed `action_in_proj`, so they influence the real actions and belong to the
    steerable noise. The output is cut to the real action dim; the first `n_action_steps` are
    executed.

    Guidance uses LeRobot's real-time-chunking seam in `policies/common/flow_matching.py`: when
    `config.rtc_config.enabled`, `euler_integrate` asks `model.rtc_processor.denoise_step(...)` for
    each step's velocity. During a guided decode the adapter installs its own object there and
    enables RTC, then restores both.
    """

    @property
    def chunk_length(self) -> int:
        return self.config.chunk_size

    @property
    def noise_width(self) -> int:
        return self.config.max_action_dim

    @property
    def resizes_images(self) -> bool:
        return True  # pi0/pi05 resize_with_pad to image_resolution, smolvla to resize_imgs_with_padding

    @property
    def _steps_attr(self) -> str:
        # SmolVLA reads config.num_steps, pi0/pi05 config.num_inference_steps, at every call.
        return "num_steps" if hasattr(self.config, "num_steps") else "num_inference_steps"

    @property
    def num_inference_steps(self) -> int:
        return getattr(self.config, self._steps_attr)

    def configure(self, num_inference_steps: int | None) -> None:
        if num_inference_steps is not None:
            if num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
            setattr(self.config, self._steps_attr, num_inference_steps)

    @contextlib.contextmanager
    def guidance(self, guide: Guide, steps: Collection[int] | None) -> Iterator[None]:
        if getattr(self.config, "adapt_to_pi_aloha", False):
            raise NotImplementedError(
                "guided_sample does not support smolvla with adapt_to_pi_aloha=True: its actions are "
                "transformed after denoising, so the denoised estimate is not in the output space"
            )
        hook = _GuidedVelocity(guide, steps, self.num_inference_steps, self.n_action_steps, self.action_dim)
        with velocity_seam(self.policy, hook):
            yield


@contextlib.contextmanager
def velocity_seam(policy: PreTrainedPolicy, hook) -> Iterator[None]:
    """Route every Euler step of a pi0 / pi05 / SmolVLA decode through `hook` while the context is active.

    LeRobot's `euler_integrate` asks `model.rtc_processor.denoise_step(x_t=..., time=...,
    original_denoise_step_partial=..., ...)` for each step's velocity when `config.rtc_config.enabled`.
    `hook` takes that processor's place (it needs `denoise_step` with those keyword arguments and
    `is_debug_enabled()`); the RTC config is switched on for the duration and both are restored on
    exit. Used by guided denoising (`_GuidedVelocity`) and by the stochastic chains of the `*_rl`
    policies (`steering/stochastic_flow.py`).
    """
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    model, config = policy.model, policy.config
    saved_processor, saved_rtc = model.rtc_processor, config.rtc_config
    model.rtc_processor = hook
    config.rtc_config = RTCConfig(enabled=True) if saved_rtc is None else dataclasses.replace(saved_rtc, enabled=True)
    try:
        yield
    finally:
        model.rtc_processor, config.rtc_config = saved_processor, saved_rtc


class _GuidedVelocity:
    """Takes the place of LeRobot's RTCProcessor in `euler_integrate` for one guided decode.

    Euler step: x_next = x + dt * v with dt = -1/N, tau_next = tau + dt. The clean estimate is
    x0_hat = x - tau * v and the noise estimate is eps_hat = x + (1 - tau) * v, so
    x_next = tau_next * eps_hat + (1 - tau_next) * x0_hat. Shifting x0_hat by delta with eps_hat kept
    gives x_next + (1 - tau_next) * delta, i.e. the velocity v - (1 - tau_next) * N * delta.
    """

    def __init__(self, guide: Guide, steps: Collection[int] | None, num_steps: int, n_exec: int, action_dim: int):
        self._guide = guide
        self._steps = steps
        self._num_steps = num_steps
        self._n_exec = n_exec
        self._action_dim = action_dim
        self._index = 0

    def is_debug_enabled(self) -> bool:  # euler_integrate asks after every step
        return False

    def denoise_step(self, x_t: Tensor, time: float, original_denoise_step_partial, **_rtc_kwargs) -> Tensor:
        v_t = original_denoise_step_partial(x_t)
        index, self._index = self._index, self._index + 1
        if not _chosen(index, self._num_steps, self._steps):
            return v_t
        x0 = x_t - time * v_t
        delta = _call_guide(self._guide, index, self._num_steps, x0[:, : self._n_exec, : self._action_dim])
        if delta is None:
            return v_t
        full_delta = torch.zeros_like(v_t)
        full_delta[:, : self._n_exec, : self._action_dim] = delta
        tau_next = time - 1.0 / self._num_steps
        return v_t - (1.0 - tau_next) * self._num_steps * full_delta


def _chosen(index: int, num_steps: int, steps: Collection[int] | None) -> bool:
    """Whether step `index` is guided; `steps` may hold negative indices (-1 = last step)."""
    return steps is None or index in steps or index - num_steps in steps


def _call_guide(guide: Guide, index: int, num_steps: int, estimate: Tensor) -> Tensor | None:
    """Run the guide with gradients on but cut from the base: only the guide's own graph exists.

    LeRobot's eval decodes under `torch.inference_mode()`, which `enable_grad` alone does not lift,
    so the guide runs outside inference mode, on a normal (non-inference) copy of the estimate.
    """
    with torch.inference_mode(False), torch.enable_grad():
        delta = guide(DenoiseStep(index=index, num_steps=num_steps, estimate=estimate.detach().clone()))
    if delta is None:
        return None
    delta = delta.detach()
    if delta.shape != estimate.shape:
        raise ValueError(
            f"the guide must return a shift shaped like step.estimate {tuple(estimate.shape)}, "
            f"got {tuple(delta.shape)}"
        )
    return delta.to(dtype=estimate.dtype, device=estimate.device)
