"""Configuration of the `dyna_vgd` policy type: value-guided denoising of a LeRobot base, with a
guidance strength that adapts to the critic's uncertainty (Dynamic VGD) or stays fixed (VGD).

Defaults follow the Dynamic VGD reference configs (algorithms.md §4.2, §5.3: 4 critics, min, lr 5e-4,
lambda_base 0.005, last 3 steps, no anneal, beta 1, C_local 5, C_global 100, weight clamp
[0.001, 1]) except the network width, sized for CPU (3 x 256 instead of 3 x 2048), and gamma, which
is per env step here (chunk of k steps: gamma^k). lambda_base was tuned for actions in [-1, 1] and
returns in [-400, 0]: retune it for other action normalizations and reward scales.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig

from lerobot_steer.policies.common.config import FrozenBaseConfig, check_choice
from lerobot_steer.steering.guidance import ANNEALS, GUIDANCE_MODES

BASE_MODES = ("frozen", "bc")


@PreTrainedConfig.register_subclass("dyna_vgd")
@dataclass
class DynaVGDConfig(FrozenBaseConfig):
    """Dynamic VGD: a critic ensemble on executed chunks guides the base's denoising.

    Base policy, critics and offline data: see `FrozenBaseConfig` (here 4 critics by default).

    base_mode: "frozen" (a pretrained LeRobot base, diffusion / pi0 / pi05 / smolvla, named by
        base_policy_path) or "bc" (a diffusion base trained inside this policy by behaviour
        cloning: NOT IMPLEMENTED yet, raises).

    Guidance (lambda_i = guidance_scale * warmup * anneal(i) * weight, see steering/guidance.py):
        guidance_mode: "dynamic" (weight = clamp(w_local * w_global, weight_min, weight_max)) or
            "fixed" (VGD: weight 1).
        guidance_scale: lambda_base. 0 turns guidance off (the base acts alone).
        guidance_last_k: guide only the last k denoising steps (None: every step).
        guidance_anneal: per-step factor "off", "linear" ((i+1)/N, VGD's default) or "cosine".
        guidance_warmup_steps: lambda_base ramps up linearly over this many critic gradient steps.
        uncertainty_beta, c_local, c_global: w_local = exp(-beta sigma_Q / c_local),
            w_global = exp(-beta td_error_ema / c_global).
        td_error_ema_decay: the TD error behind w_global is an exponential moving average of the
            batch mean |Q_j - y| over gradient steps (the reference averages its last 20 steps).
        guided_action_clip: clamp the guided clean action to [-clip, clip] (the reference's 1.0 for
            MIN_MAX-normalized actions); None leaves it (right for MEAN_STD-normalized VLA actions).
        guide_actions: False acts with the unguided base (critic still trained), e.g. to measure it.

    Critic training:
        td_target_clamp: clamp the TD target to [-c, c] (the reference's 400 = max |return|); None: off.
    """

    base_mode: str = "frozen"
    n_critics: int = 4
    critic_lr: float = 5e-4

    guidance_mode: str = "dynamic"
    guidance_scale: float = 0.005
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
    guide_actions: bool = True

    td_target_clamp: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_choice("base_mode", self.base_mode, BASE_MODES)
        check_choice("guidance_mode", self.guidance_mode, GUIDANCE_MODES)
        check_choice("guidance_anneal", self.guidance_anneal, ANNEALS)
        if self.guidance_last_k is not None and self.guidance_last_k < 1:
            raise ValueError(f"--policy.guidance_last_k must be >= 1 or null (every step), got {self.guidance_last_k}")
        if not 0 < self.weight_min <= self.weight_max:
            raise ValueError(f"need 0 < weight_min <= weight_max, got {self.weight_min}, {self.weight_max}")

    def check_base_mode(self) -> None:
        """Refuse the not-yet-implemented behaviour-cloned base with a message saying what works."""
        if self.base_mode == "bc":
            raise NotImplementedError(
                "--policy.base_mode=bc (a diffusion base trained inside dyna_vgd by behaviour cloning) is not "
                "implemented yet: train a diffusion base with `lerobot-train --policy.type=diffusion` first and pass "
                "it with --policy.base_mode=frozen --policy.base_policy_path=<its pretrained_model folder>"
            )

    def ensure_base_facts(self) -> None:
        self.check_base_mode()
        super().ensure_base_facts()

    @property
    def guided_steps(self) -> range | None:
        """Denoising step indices to guide, for `BasePolicyAdapter.guided_sample` (None: all)."""
        return None if self.guidance_last_k is None else range(-self.guidance_last_k, 0)
