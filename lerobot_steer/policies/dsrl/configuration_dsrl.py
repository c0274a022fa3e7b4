"""Configuration of the `dsrl` policy type (DSRL-NA and DSRL-SAC over a frozen LeRobot base).

Defaults follow the reference DSRL code (ajwagen/dsrl on GitHub) except the network width, which is
sized for CPU (3 x 256 instead of 3 x 2048). Every hyperparameter is a field, so the whole run is
described by `--policy.<field>=...` on the lerobot-train command line. The fields shared with the
other steering policies (base, critics, offline data) and the dataset hooks are in
`lerobot_steer.policies.common.config.SteeringConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig

from lerobot_steer.policies.common.config import (
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    SteeringConfig,
    check_choice,
)

VARIANTS = ("na", "sac")
NOISE_LAYOUTS = ("full", "executed", "repeat", "repeat_executed")
NA_BOOTSTRAPS = ("decode", "noise_critic")
ONLINE_NA_ALIASES = 4


@PreTrainedConfig.register_subclass("dsrl")
@dataclass
class DSRLConfig(SteeringConfig):
    """DSRL: an actor over the base policy's initial noise, critics on chunks or on noise.

    Base policy, critics and offline data: see `SteeringConfig`.

    Method:
        variant: "na" (DSRL-NA: action critic Q^A on executed chunks, distilled into a noise critic
            Q^W on fresh N(0, I) noise; works offline from recorded actions) or "sac" (DSRL-SAC:
            critic directly on the noise; needs the noise of each transition, i.e. online data).
            None: chosen by where the policy trains, "na" on a dataset (lerobot-train), "sac" online
            (lerobot-steer-rl, where its updates need no base decode and it learns fastest).
        noise_layout: "full" (the actor outputs the whole chunk noise, chunk_length x noise_width),
            "executed" (only the noise of the n_action_steps the robot executes; the steps before and
            after, which a diffusion base denoises but never executes, start from zero, the prior's
            mode), "repeat" (one noise_width vector repeated across the chunk, as the official
            pi0 code) or "repeat_executed" (one noise_width vector repeated across the executed
            steps, zero on the others: a coherent shift of the executed chunk, a noise_width-dim
            action for the critic). Default "repeat_executed": on our sim's diffusion base the
            noise of the never-executed steps alone took the base from ~40 % to 5 % success, and
            with a 6-dim noise action the critic tracked Monte-Carlo returns (correlation 0.86-0.94)
            where on the 96-dim "full" noise it did not (~0); see the README's Results.
        noise_bound: the actor's noise lies in [-bound, bound] (tanh-squashed). 1.0 is the
            reference's DSRL-SAC action_magnitude on its SAC task; its DSRL-NA actor is bounded to
            [-1, 1] by the env's action space. At 1.5 with 2 critics our sim runs over-estimated:
            Q rose from -46 to +60 while every learning reward was negative, and the actor followed
            the error away from the noise the base decodes well.
        n_critics (here 4): the critic heads; the backup and the actor take their minimum. Four
            heads kept the min pessimistic enough against the 96-dim "full" noise (see noise_bound).
        backup_entropy: add -alpha log pi(w'|s') to the TD target (soft Q). Off by default: in an
            env that ends on success a positive entropy bonus per chunk pays the agent for *not*
            finishing (the references run fixed-length episodes where it is harmless); the actor
            loss keeps its entropy term either way.
        init_temperature / target_entropy / temperature_lr: SAC's learned alpha starts at
            init_temperature (the reference's 1.0) and moves towards the entropy target (the
            reference's 0 nats for the whole noise vector). temperature_lr 1e-3 lets alpha fall by
            10x within about 2,300 gradient steps, a few thousand env steps at the default update
            ratio, instead of the ~8,000 steps it takes at 3e-4.

    DSRL-NA without base decodes in its updates (what makes it usable online on a CPU: the
    reference's two decodes of a 256-sample batch per gradient step ran at 12 env steps/s here):
        na_aliases: prior noises w ~ N(0, I) decoded beside each acting decode, kept with the
            transition as (w, base(s, w)) pairs; the noise critic Q^W is distilled on them instead of
            decoding fresh noises in every update. Decoded while acting, they see the true
            observation history. 0: decode in the update (the reference). None: 4 online
            (lerobot-steer-rl), 0 on a dataset (recorded transitions have no aliases).
        na_bootstrap: what values the chunk-end state in Q^A's TD target: "decode" (the reference,
            min Qbar^A(s', base(s', w')), w' ~ pi(s'): one base decode per sample and update) or
            "noise_critic" (min Qbar^W(s', w'): a Polyak-averaged target of the noise critic, which
            regresses Q^A(s', base(s', w)), so the same quantity without decoding). None:
            "noise_critic" online, "decode" on a dataset.
    """

    # Method
    variant: str | None = None
    noise_layout: str = "repeat_executed"
    noise_bound: float = 1.0
    n_critics: int = 4
    backup_entropy: bool = False
    init_temperature: float = 1.0
    target_entropy: float = 0.0
    # TODO: encode observations with the base policy's own features (pooled VLM prefix, diffusion
    # global conditioning). Costly for VLA bases and not needed for the state/CNN encoders; False only.
    use_base_features: bool = False

    # DSRL-NA online speed (see the class docstring)
    na_aliases: int | None = None
    na_bootstrap: str | None = None

    # Acting
    deterministic_actions: bool = False

    # Optimization: one Adam with a param group per network (lerobot-train steps one optimizer);
    # each group has its own lr (critic_lr: SteeringConfig). The online RLAlgorithm uses one Adam
    # per network with these lrs.
    actor_lr: float = 3e-4
    noise_critic_lr: float = 3e-4
    temperature_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        check_choice("noise_layout", self.noise_layout, NOISE_LAYOUTS)
        if self.use_base_features:
            raise NotImplementedError("use_base_features=True is not implemented yet (see the TODO in DSRLConfig)")
        if self.variant is not None:
            self.resolve_variant(self.variant)
        if self.na_bootstrap is not None:
            check_choice("na_bootstrap", self.na_bootstrap, NA_BOOTSTRAPS)

    def number_ranges(self) -> dict[str, Interval]:
        return {**super().number_ranges(), "noise_bound": POSITIVE, "init_temperature": POSITIVE,
                "target_entropy": FINITE, "actor_lr": POSITIVE, "noise_critic_lr": POSITIVE, "temperature_lr": POSITIVE,
                "na_aliases": NON_NEGATIVE}

    def resolve_variant(self, variant: str) -> None:
        """Fix the variant, if the user did not."""
        self.variant = self.variant or variant
        check_choice("variant", self.variant, VARIANTS)

    def resolve_na_learning(self, online: bool) -> None:
        """Fix `na_aliases` / `na_bootstrap` where the user did not: decode-free online, the
        reference's decodes on a dataset (and for checkpoints saved before the fields existed)."""
        if self.na_aliases is None:
            self.na_aliases = ONLINE_NA_ALIASES if online else 0
        if self.na_bootstrap is None:
            self.na_bootstrap = "noise_critic" if online else "decode"
        check_choice("na_bootstrap", self.na_bootstrap, NA_BOOTSTRAPS)
