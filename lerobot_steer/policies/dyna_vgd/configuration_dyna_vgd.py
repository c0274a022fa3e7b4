"""Configuration of the `dyna_vgd` policy type: value-guided denoising of a LeRobot base, with a
guidance strength that adapts to the critic's uncertainty (Dynamic VGD) or stays fixed (VGD).

Defaults follow the Dynamic VGD reference configs (DozenDucc/VGD, jebeom/VGD on GitHub: 4 critics, min, lr 5e-4,
lambda_base 0.005, last 3 steps, no anneal, beta 1, C_local 5, C_global 100, weight clamp
[0.001, 1]) except the network width, sized for CPU (3 x 256 instead of 3 x 2048), and gamma, which
is per env step here (chunk of k steps: gamma^k). lambda_base was tuned for actions in [-1, 1] and
returns in [-400, 0]: retune it for other action normalizations and reward scales.

The behaviour-cloned base (`base_mode=bc`) is LeRobot's own diffusion policy: its config is a nested
`DiffusionConfig` (`--policy.diffusion.<field>=...`, every field of `--policy.type=diffusion`), so
the architecture, noise schedule, normalization, optimizer settings and `pretrained_backbone_weights`
mean exactly what they mean for LeRobot's diffusion, and config.json stores them under "diffusion".
What the mode changes (facts, delta indices, optimizer, processors, ...) is its `BaseProvider`
(`base_provider`: policies/common/base_provider.py for frozen, bc_base.py for bc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.base_provider import FROZEN_BASE, BaseProvider
from lerobot_steer.policies.common.config import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    SteeringConfig,
    check_choice,
)
from lerobot_steer.steering.guidance import ANNEALS, GUIDANCE_MODES

from .bc_base import BEHAVIOUR_CLONED_BASE

BASE_PROVIDERS: dict[str, BaseProvider] = {"frozen": FROZEN_BASE, "bc": BEHAVIOUR_CLONED_BASE}
BASE_MODES = tuple(BASE_PROVIDERS)
TD_BOOTSTRAPS = ("decode", "value")


def _default_diffusion() -> DiffusionConfig:
    # device="cpu" only spares a "device None not available" warning at every parse; the base is
    # built on the dyna_vgd policy's own --policy.device (see DynaVGDConfig.__post_init__).
    return DiffusionConfig(device="cpu")


@PreTrainedConfig.register_subclass("dyna_vgd")
@dataclass
class DynaVGDConfig(SteeringConfig):
    """Dynamic VGD: a critic ensemble on executed chunks guides the base's denoising.

    Base policy, critics and offline data: see `SteeringConfig` (here 4 critics by default).

    base_mode: "frozen" (a pretrained LeRobot base, diffusion / pi0 / pi05 / smolvla, named by
        base_policy_path, never updated) or "bc" (a LeRobot diffusion policy trained inside this
        policy by behaviour cloning, LeRobot's diffusion loss, from the training dataset).
    diffusion: the behaviour-cloned base's `DiffusionConfig` (bc mode only), set field by field
        with `--policy.diffusion.<field>=...` (e.g. horizon, n_obs_steps, n_action_steps, down_dims,
        pretrained_backbone_weights, optimizer_lr). Its input/output features and device are the
        dyna_vgd policy's; its normalization mapping becomes the policy's (the processors normalize
        with the dataset stats as LeRobot's diffusion does). It is trained with DDPM noise as
        configured and decoded with deterministic DDIM (`num_inference_steps` steps, default 10).
        The base's parameters train at `diffusion.optimizer_lr` (with its betas, eps and weight
        decay), the critics at `critic_lr`: one Adam, two parameter groups.
    train_critic: whether lerobot-train also trains the critics by TD (bc mode). None: when the
        dataset has a reward column (or --policy.reward_from_success). Without critic training the
        policy is a plain diffusion policy: it acts unguided (a random critic must not steer).

    Guidance (lambda_i = guidance_scale * warmup * anneal(i) * weight, see steering/guidance.py):
        guidance_mode: "fixed" (VGD: weight 1; the default, the best measured) or "dynamic"
            (weight = clamp(w_local * w_global, weight_min, weight_max)).
        guidance_scale: lambda_base. 0 turns guidance off (the base acts alone). None: 0.01 on a
            normalized step, 0.005 on the raw gradient (each mode's measured best).
        guidance_last_k: guide only the last k denoising steps (None: every step).
        guidance_anneal: per-step factor "off", "linear" ((i+1)/N, VGD's default) or "cosine".
        guidance_warmup_steps: lambda_base ramps up linearly over this many critic gradient steps.
        uncertainty_beta, c_local, c_global: w_local = exp(-beta sigma_Q / c_local),
            w_global = exp(-beta td_error_ema / c_global).
        td_error_ema_decay: the TD error behind w_global is an exponential moving average of the
            batch mean |Q_j - y| over gradient steps (the reference averages its last 20 steps).
        guided_action_clip: clamp the guided clean action to [-clip, clip] (the reference's 1.0 for
            MIN_MAX-normalized actions); None leaves it (right for MEAN_STD-normalized VLA actions).
        guidance_normalize: step along grad_a Q / rms(grad_a Q): lambda_base is then the RMS shift of
            the clean action per guided step in normalized action units (e.g. 0.05), independent of
            the Q scale and of the critic's width. False: the references' raw gradient. None: True
            for `fixed`, False for `dynamic` (the raw-gradient VGD step grows with the critic's
            scale until it breaks grasps; Dynamic VGD's weights hold it back).
        guide_actions: False acts with the unguided base (critic still trained), e.g. to measure it.
        acting_noise: the initial noise of an acting decode: "tanh_gaussian" (tanh(N(0, I)), std
            about 0.63, as the reference acts) or "gaussian" (N(0, I)). Compare a guided policy with
            the base on the same noise: tanh(N(0, I)) alone already changes a weak base's success.

    Scales: with a normalized step lambda_base is in normalized action units, whatever the reward.
        On the raw gradient, lambda_base, c_local and c_global are in the units of Q, i.e. of the learned reward
        (see `reward_offset`). With the default r - 1 per step, Q spans about -800..0 like the
        references' robomimic returns, and their values (lambda_base 0.005, C_local 5, C_global
        100) apply; with reward_offset 0 and a 0/1 success reward, Q is about 100x smaller: scale
        lambda_base up and C_local, C_global down by that factor.

    Critic training:
        td_target_clamp: clamp the TD target to [-c, c] (the reference's 400 = max |return|); None: off.
        td_bootstrap: what values the chunk-end state s' in the TD target: "decode" (the reference:
            min Qbar(s', a'), a' a guided decode of the base at s', one decode of the whole batch per
            gradient step, about 5 s at batch 256 on a 2-core CPU) or "value" (min Vbar(s'): a value
            network V(s) regresses Q(s, a) on the replay's chunks, i.e. the value of the guided policy
            that acted, and its Polyak target bootstraps; no decode in an update). None: "value"
            online (lerobot-steer-rl), "decode" on a dataset and for checkpoints saved before the field.
    """

    base_mode: str = "frozen"
    diffusion: DiffusionConfig = field(default_factory=_default_diffusion)
    train_critic: bool | None = None
    n_critics: int = 4
    critic_lr: float = 5e-4

    guidance_mode: str = "fixed"
    guidance_scale: float | None = None
    guidance_last_k: int | None = 3
    guidance_anneal: str = "off"
    guidance_warmup_steps: int = 0
    uncertainty_beta: float = 1.0
    c_local: float = 5.0
    c_global: float = 100.0
    weight_min: float = 0.001
    weight_max: float = 1.0
    td_error_ema_decay: float = 0.95
    guided_action_clip: float | None = None
    guidance_normalize: bool | None = None
    guide_actions: bool = True
    acting_noise: str = "tanh_gaussian"

    td_target_clamp: float | None = None
    td_bootstrap: str | None = None

    def __post_init__(self):
        check_choice("guidance_mode", self.guidance_mode, GUIDANCE_MODES)
        self._resolve_guidance_step()
        super().__post_init__()  # checks base_mode (through base_provider) and the number ranges
        check_choice("guidance_anneal", self.guidance_anneal, ANNEALS)
        check_choice("acting_noise", self.acting_noise, ("gaussian", "tanh_gaussian"))
        if self.td_bootstrap is not None:
            check_choice("td_bootstrap", self.td_bootstrap, TD_BOOTSTRAPS)
        if not self.weight_min <= self.weight_max:
            raise ConfigError(f"--policy.weight_min={self.weight_min} exceeds --policy.weight_max={self.weight_max}: "
                             "the guidance weight is clamped to [weight_min, weight_max]")

    def _resolve_guidance_step(self) -> None:
        """Each mode's measured best step where the user set none (docs/results/learning_curves.md,
        rounds 11-13, 200 held-out episodes per seed): fixed strength along the normalized gradient,
        0.01 per guided step (53.5-74 % over 5 seeds, the base's best free mode 32.5 %); dynamic
        weights on the references' raw gradient, lambda_base 0.005 (41-50 %; on a normalized step the
        dynamic weights cut guidance where the critics disagree, which is at the grasps, and it scored
        37-39 %). A saved checkpoint keeps the values it was trained with."""
        if self.guidance_normalize is None:
            self.guidance_normalize = self.guidance_mode == "fixed"
        if self.guidance_scale is None:
            self.guidance_scale = 0.01 if self.guidance_normalize else 0.005

    def resolve_td_bootstrap(self, online: bool) -> None:
        """Fix `td_bootstrap` where the user did not: decode-free online, the reference's guided
        decode at s' on a dataset (and for checkpoints saved before the field existed)."""
        if self.td_bootstrap is None:
            self.td_bootstrap = "value" if online else "decode"
        check_choice("td_bootstrap", self.td_bootstrap, TD_BOOTSTRAPS)

    def number_ranges(self) -> dict[str, Interval]:
        """guidance_last_k: null guides every step; guided_action_clip, td_target_clamp: null is off."""
        return {**super().number_ranges(), "guidance_scale": NON_NEGATIVE, "guidance_last_k": COUNT,
                "guidance_warmup_steps": NON_NEGATIVE, "uncertainty_beta": NON_NEGATIVE, "c_local": POSITIVE,
                "c_global": POSITIVE, "weight_min": POSITIVE, "weight_max": POSITIVE, "td_error_ema_decay": FRACTION,
                "guided_action_clip": POSITIVE, "td_target_clamp": POSITIVE}

    @property
    def base_provider(self) -> BaseProvider:
        """The one place `base_mode` picks what the policy does: everything the mode changes is a
        method of the provider (`check_base_mode` only refuses flags that contradict the mode)."""
        check_choice("base_mode", self.base_mode, BASE_MODES)
        return BASE_PROVIDERS[self.base_mode]

    def check_base_mode(self) -> None:
        """Flag combinations that contradict the mode, refused naming both flags.

        On first use (the delta indices, the policy, the processors), not at parse time, like the
        base's facts (see `ensure_base_facts`).
        """
        if self.base_mode == "bc" and self.base_policy_path is not None:
            raise ConfigError(
                f"--policy.base_mode=bc trains its own diffusion base, so --policy.base_policy_path="
                f"{self.base_policy_path} has no meaning there: drop it (and set the base with "
                "--policy.diffusion.<field>=...), or pass --policy.base_mode=frozen to steer that checkpoint"
            )
        if self.base_mode == "frozen" and self.train_critic is False:
            raise ConfigError(
                "--policy.train_critic=false with --policy.base_mode=frozen leaves nothing to train: the frozen "
                "base never changes and the critics are the only trained part"
            )

    def missing_base_message(self) -> str:
        """Without base flags dyna_vgd has two ways to go, and the error names both."""
        return (
            "dyna_vgd needs a base policy, given one of two ways: guide a pretrained one with "
            "--policy.base_policy_path=<diffusion/pi0/pi05/smolvla checkpoint> (--policy.base_mode=frozen, the "
            "default), or train a diffusion base on the dataset by behaviour cloning with --policy.base_mode=bc"
        )

    def ensure_base_facts(self) -> None:
        self.check_base_mode()
        super().ensure_base_facts()

    # ----------------------------------------------------------------------------- LeRobot hooks

    @property
    def guided_steps(self) -> range | None:
        """Denoising step indices to guide, for `BasePolicyAdapter.guided_sample` (None: all)."""
        return None if self.guidance_last_k is None else range(-self.guidance_last_k, 0)
