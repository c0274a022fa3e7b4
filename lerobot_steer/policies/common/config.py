"""What every steering policy shares in its config: the base, the chunk-level MDP read from a
LeRobot dataset, the critic networks.

`SteeringConfig` is not registered as a policy type; `DSRLConfig` (`dsrl`) and `DynaVGDConfig`
(`dyna_vgd`) derive from it and add their method's fields, so `--policy.<field>=...` means the same
thing for both. What depends on where the base comes from (a pretrained checkpoint, or dyna_vgd's
behaviour-cloned diffusion) is asked of `base_provider` (see base_provider.py).

The base's facts (type, history, chunk length) are resolved by `ensure_base_facts()` on first use,
which the delta-index properties below call: LeRobot builds the dataset from those properties
before it builds the policy, and has no other hook in between. They are copied into `base_*` fields
so that a saved config stays self-contained after the original base folder is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from lerobot.configs.policies import PreTrainedConfig
from lerobot.optim.optimizers import AdamConfig

from lerobot_steer.config_error import ConfigError

from .base_provider import FROZEN_BASE, BaseProvider

EPISODE_ENDS = ("terminal", "truncated", "success")


@dataclass
class SteeringConfig(PreTrainedConfig):
    """Fields shared by the steering policies (see DSRLConfig / DynaVGDConfig for the methods).

    Base policy:
        base_policy_path: the base checkpoint (a `pretrained_model/` folder or a Hub repo id) that a
            fresh run steers. A saved checkpoint carries its own copy in `base_policy/` and does not
            need this path any more.
        base_policy_revision: Hub revision of `base_policy_path` (pins a repo id).
        num_inference_steps: denoising steps of the base (None: the base's own; a DDPM diffusion
            base is switched to 10 deterministic DDIM steps).
        n_action_steps: executed steps per chunk (None: the base's n_action_steps; may be fewer).
        discount: gamma per executed chunk (the DSRL/VGD reference convention: one decision per
            chunk, so 0.99 is a horizon of about 100 chunks, 800 env steps at 8 steps per chunk). A
            chunk cut short by an episode end after k of its n steps is discounted by gamma^(k/n).
        reward_offset: the critics learn from r - reward_offset per env step (robomimic's "r - 1",
            as the DSRL/VGD references): with a sparse success reward every step costs until the
            task is done, so a faster success is worth more, and the value scale (tens to hundreds)
            is the one the reference temperature, guidance strength and Dynamic VGD constants were
            tuned for. 0 learns from the env's reward as it is.
        bootstrap_time_limit: online, a chunk that hits the env's time limit bootstraps from its last
            observation (True, correct for a time limit) or ends the return there (False, what the
            DSRL/VGD references do: returns stay bounded by the episode, -8 per remaining chunk,
            instead of the -800 fixed point a failing state has under bootstrapping).

    Critics: an ensemble of `n_critics` MLP heads (hidden_dims, Linear -> LayerNorm -> activation)
        over (encoded observation, executed chunk), Polyak-averaged targets with rate `tau`,
        heads combined with `q_reduce` in the backup.

    Optimization:
        grad_clip_norm: gradient norm clip, the one setting for offline and online training (None or
            0: no clipping). lerobot-train clips the joint norm of all trained parameters (LeRobot's
            loop steps one optimizer); the online algorithm (lerobot-steer-rl) clips each network's
            own norm before its own Adam steps.

    Hub:
        push_to_hub: upload the trained policy to `repo_id` at the end of training. None (default):
            push when `--policy.repo_id` is given, as LeRobot does; true: push, and a missing repo id
            is an error; false: never. Resolved to true/false when the config is built, so the saved
            config.json holds what was decided.

    Offline data (lerobot-train):
        reward_key: dataset column holding the per-frame reward.
        reward_from_success: for datasets without a reward column: reward 1 on the last frame of
            every episode recorded as successful (its `next.success` is true somewhere in the
            episode; without a `next.success` column every episode counts as successful, as for a
            set of demonstrations), 0 elsewhere.
        episode_end: what a chunk that reaches the end of its episode is: "terminal" (no bootstrap;
            the DSRL/VGD reference convention), "truncated" (bootstraps from the last recorded
            observation, for time-limit ends) or "success" (terminal for episodes recorded as
            successful, truncated for the others).
    """

    # Base policy
    base_policy_path: str | None = None
    base_policy_revision: str | None = None
    num_inference_steps: int | None = None
    n_action_steps: int | None = None
    discount: float = 0.99
    reward_offset: float = 1.0
    bootstrap_time_limit: bool = True

    # Critics
    tau: float = 0.005
    n_critics: int = 2
    q_reduce: str = "min"
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    layer_norm: bool = True
    image_channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    image_strides: list[int] = field(default_factory=lambda: [2, 1, 1, 1])
    image_latent_dim: int = 50
    critic_lr: float = 3e-4
    grad_clip_norm: float | None = 100.0

    # Offline data
    reward_key: str = "next.reward"
    reward_from_success: bool = False
    episode_end: str = "terminal"

    # Hub (LeRobot's field, with a default that only pushes when a repo id is given).
    push_to_hub: bool | None = None  # type: ignore[assignment]

    # Filled from the base checkpoint (do not set by hand).
    base_type: str | None = None
    base_n_obs_steps: int | None = None
    base_n_action_steps: int | None = None

    def __post_init__(self):
        super().__post_init__()
        for name, value, allowed in (
            ("episode_end", self.episode_end, EPISODE_ENDS),
            ("q_reduce", self.q_reduce, ("min", "mean")),
        ):
            check_choice(name, value, allowed)
        check_fields(self, self.number_ranges())
        if len(self.image_channels) != len(self.image_strides) or not self.image_channels:
            raise ConfigError(
                f"--policy.image_channels={self.image_channels} and --policy.image_strides={self.image_strides} "
                "must be non-empty lists of equal length (one stride per conv layer)"
            )
        if self.push_to_hub is None:
            self.push_to_hub = bool(self.repo_id)
        if self.base_type is not None:
            self.set_base_facts(self.base_type, self.base_n_obs_steps, self.base_n_action_steps)
        self.base_provider.configure(self)

    @property
    def base_provider(self) -> BaseProvider:
        """Where the base comes from: a pretrained checkpoint here (dyna_vgd can also train one)."""
        return FROZEN_BASE

    def number_ranges(self) -> dict[str, Interval]:
        """Allowed range of each numeric field, checked at parse time (subclasses add theirs)."""
        return {
            "num_inference_steps": COUNT, "n_action_steps": COUNT, "discount": UNIT, "reward_offset": FINITE,
            "tau": UNIT, "n_critics": COUNT, "hidden_dims": COUNT, "image_channels": COUNT, "image_strides": COUNT,
            "image_latent_dim": COUNT, "critic_lr": POSITIVE, "base_n_obs_steps": COUNT, "base_n_action_steps": COUNT,
            "grad_clip_norm": NON_NEGATIVE,  # 0 or null: no clipping
        }

    def set_base_facts(self, base_type: str, n_obs_steps: int, n_action_steps: int) -> None:
        """Record the base's type, history length and chunk length; resolve the executed steps."""
        self.base_type, self.base_n_obs_steps, self.base_n_action_steps = base_type, n_obs_steps, n_action_steps
        if self.n_action_steps is None:
            self.n_action_steps = n_action_steps
        if not 1 <= self.n_action_steps <= n_action_steps:
            raise ConfigError(
                f"--policy.n_action_steps={self.n_action_steps}: the base executes at most {n_action_steps} steps per chunk"
            )
        self.n_obs_steps = n_obs_steps

    def ensure_base_facts(self) -> None:
        """Resolve the base's facts once, from `base_provider` (a frozen base: its checkpoint's
        config.json, local or from the Hub); fail with an error naming the path or the missing flag.

        Called by the properties LeRobot reads to build the dataset (`n_exec`, the delta indices),
        and by nothing at parse time, for three reasons: draccus replaces a ValueError raised while
        parsing the CLI (a missing or damaged checkpoint, `CheckpointError`) with "Couldn't
        instantiate class ...Config", which would hide the path; a config without a base must still
        build (`make_policy_config(type)`, then the flags that name one); and LeRobot calls no
        config hook between parsing and building the dataset from these properties.
        """
        if self.base_type is not None:
            return
        self.set_base_facts(*self.base_provider.read_facts(self))

    def missing_base_message(self) -> str:
        """The error when no base policy is given, naming every way to give one (subclasses add theirs)."""
        return f"{self.type} needs a base policy: pass --policy.base_policy_path=<diffusion/pi0/pi05/smolvla checkpoint>"

    # ----------------------------------------------------------------------------- LeRobot hooks

    @property
    def n_exec(self) -> int:
        self.ensure_base_facts()
        return self.n_action_steps

    @property
    def current_obs_offsets(self) -> list[int]:
        """Frame offsets of the observation history the base conditions on at the chunk start."""
        self.ensure_base_facts()
        return list(range(-(self.n_obs_steps - 1), 1))

    @property
    def next_obs_offsets(self) -> list[int]:
        """Frame offsets of the history at the chunk end (k executed steps later)."""
        return [k + self.n_exec for k in self.current_obs_offsets]

    @property
    def current_obs_positions(self) -> list[int]:
        """Where the chunk-start history sits along the time dim of a delta-indexed observation."""
        return [self.observation_delta_indices.index(o) for o in self.current_obs_offsets]

    @property
    def next_obs_positions(self) -> list[int]:
        """Where the chunk-end history sits along the time dim of a delta-indexed observation."""
        return [self.observation_delta_indices.index(o) for o in self.next_obs_offsets]

    @property
    def observation_delta_indices(self) -> list[int]:
        # One list for every observation key: the current history and the chunk-end history.
        return sorted(set(self.current_obs_offsets) | set(self.next_obs_offsets))

    @property
    def action_delta_indices(self) -> list[int]:
        """The executed chunk, and whatever more the base's own training loss reads (`base_provider`)."""
        return self.base_provider.action_delta_indices(self)

    @property
    def executed_action_start(self) -> int:
        """Position of the executed chunk's first action (offset 0) in `action_delta_indices`.

        0 for a frozen base; a base whose training reads actions from the past too (dyna_vgd's
        behaviour-cloned diffusion, from -(n_obs_steps - 1)) puts the chunk further in.
        """
        return self.action_delta_indices.index(0)

    @property
    def reward_delta_indices(self) -> list[int]:
        return list(range(self.n_exec))  # the chunk's per-frame rewards, summed in the policy

    @property
    def drop_n_last_frames(self) -> int:
        return 0  # chunks that run past the episode end are kept: they carry the terminal reward

    def get_optimizer_preset(self) -> AdamConfig:
        return self.base_provider.optimizer_preset(self)

    @property
    def lerobot_grad_clip_norm(self) -> float:
        """`grad_clip_norm` as LeRobot's optimizer configs spell it (0: no clipping)."""
        return self.grad_clip_norm or 0.0

    def get_scheduler_preset(self):
        return None

    def validate_features(self) -> None:
        """Features are checked against the base policy when the policy is built."""


# The name before a base could also be trained inside the policy (dyna_vgd's bc mode); kept for
# code that imports it.
FrozenBaseConfig = SteeringConfig


def check_choice(name: str, value, allowed) -> None:
    """Raise naming the CLI flag when a string option is not one of its choices."""
    if value not in allowed:
        raise ConfigError(f"--policy.{name}={value!r} is not one of {allowed}")


# ---------------------------------------------------------------------------------- number checks


@dataclass(frozen=True)
class Interval:
    """The allowed values of a numeric option, printed in interval notation, e.g. "(0, 1]".

    NaN and infinities are never inside: an infinite learning rate or discount is always a typo or
    an overflow, and one NaN poisons every network it reaches.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.low_open or math.isinf(self.low) else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"


UNIT = Interval(0, 1, low_open=True)  # discounts, Polyak rates
FRACTION = Interval(0, 1, high_open=True)  # moving-average decays
POSITIVE = Interval(0, low_open=True)  # learning rates, scales, bounds
NON_NEGATIVE = Interval(0)  # strengths that 0 turns off, warmups
COUNT = Interval(1)  # sizes, counts, steps
FINITE = Interval()  # offsets, targets: any real number


def check_range(flag: str, value, allowed: Interval, *, optional: bool = False) -> None:
    """Raise naming the CLI flag, the bad value and the allowed range when a number is outside it.

    `optional`: None is allowed too (the option's "off" or "automatic"). A list or tuple is checked
    entry by entry (e.g. `--policy.hidden_dims=[256,256]`). Called from the configs' __post_init__ /
    validate, so that a bad value fails when the command line is parsed, not after the prefill.
    """
    if value is None and optional:
        return
    many = isinstance(value, (list, tuple))
    if any(v not in allowed for v in (value if many else [value])):
        what = "every entry must be in" if many else "allowed:"
        raise ConfigError(f"{flag}={value!r} is out of range; {what} {allowed}{' or null' if optional else ''}")


def check_fields(config, ranges: dict[str, Interval], prefix: str = "--policy.") -> None:
    """`check_range` for each named field of a dataclass config; None passes where the field's type
    allows it (`int | None`: the option's "automatic")."""
    optional = {f.name for f in fields(config) if "None" in str(f.type)}
    for name, allowed in ranges.items():
        check_range(f"{prefix}{name}", getattr(config, name), allowed, optional=name in optional)
