"""Configuration of the `dsrl` policy type (DSRL-NA and DSRL-SAC over a frozen LeRobot base).

Defaults follow the reference DSRL code (algorithms.md §2, §5.1) except the network width, which is
sized for CPU (3 x 256 instead of 3 x 2048). Every hyperparameter is a field, so the whole run is
described by `--policy.<field>=...` on the lerobot-train command line.

The config reads the base checkpoint's `config.json` at construction (cheap: JSON only) because
LeRobot builds the dataset, and with it the delta indices below, before it builds the policy; the
facts it needs are copied into `base_*` fields so that a saved DSRL config stays self-contained
after the original base folder is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.optim.optimizers import AdamConfig

VARIANTS = ("na", "sac")
NOISE_LAYOUTS = ("full", "repeat")
EPISODE_ENDS = ("terminal", "truncated", "success")


@PreTrainedConfig.register_subclass("dsrl")
@dataclass
class DSRLConfig(PreTrainedConfig):
    """DSRL: an actor over the base policy's initial noise, critics on chunks or on noise.

    Base policy:
        base_policy_path: the base checkpoint (a `pretrained_model/` folder or a Hub repo id) that a
            fresh run steers. A saved DSRL checkpoint carries its own copy in `base_policy/` and
            does not need this path any more.
        base_policy_revision: Hub revision of `base_policy_path` (pins a repo id).
        num_inference_steps: denoising steps of the base (None: the base's own; a DDPM diffusion
            base is switched to 10 deterministic DDIM steps).

    Method:
        variant: "na" (DSRL-NA: action critic Q^A on executed chunks, distilled into a noise critic
            Q^W on fresh N(0, I) noise; works offline from recorded actions) or "sac" (DSRL-SAC:
            critic directly on the noise; needs the noise of each transition, i.e. online data).
        noise_layout: "full" (the actor outputs the whole chunk noise, chunk_length x noise_width)
            or "repeat" (one noise_width vector repeated across the chunk, as the official pi0 code).
        noise_bound: the actor's noise lies in [-bound, bound] (tanh-squashed). None: 1.0 for NA,
            1.5 for SAC (the reference's action_magnitude).
        n_action_steps: executed steps per chunk (None: the base's n_action_steps; may be fewer).
        discount: gamma per env step; a chunk of k executed steps is discounted by gamma^k.

    Offline data (lerobot-train):
        reward_key: dataset column holding the per-frame reward.
        reward_from_success: for datasets without a reward column: reward 1 on the last frame of
            every episode recorded as successful (its `next.success` is true somewhere in the
            episode; without a `next.success` column every episode counts as successful, as for a
            set of demonstrations), 0 elsewhere.
        episode_end: what a chunk that reaches the end of its episode is: "terminal" (no bootstrap;
            the DSRL reference convention), "truncated" (bootstraps from the last recorded
            observation, for time-limit ends) or "success" (terminal for episodes recorded as
            successful, truncated for the others).
    """

    # Base policy
    base_policy_path: str | None = None
    base_policy_revision: str | None = None
    num_inference_steps: int | None = None

    # Method
    variant: str = "na"
    noise_layout: str = "full"
    noise_bound: float | None = None
    n_action_steps: int | None = None
    discount: float = 0.99
    tau: float = 0.005
    n_critics: int = 2
    q_reduce: str = "min"
    backup_entropy: bool = True
    init_temperature: float = 1.0
    target_entropy: float = 0.0

    # Networks (actor, Q^A, Q^W each have their own observation encoder)
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    layer_norm: bool = True
    image_channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    image_strides: list[int] = field(default_factory=lambda: [2, 1, 1, 1])
    image_latent_dim: int = 50
    # TODO: encode observations with the base policy's own features (pooled VLM prefix, diffusion
    # global conditioning). Costly for VLA bases and not needed for the state/CNN encoders; False only.
    use_base_features: bool = False

    # Acting
    deterministic_actions: bool = False

    # Optimization: one Adam with a param group per network (lerobot-train steps one optimizer);
    # each group has its own lr. The online RLAlgorithm uses one Adam per network with these lrs.
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    noise_critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    grad_clip_norm: float = 100.0

    # Offline data
    reward_key: str = "next.reward"
    reward_from_success: bool = False
    episode_end: str = "terminal"

    # Filled from the base checkpoint (do not set by hand).
    base_type: str | None = None
    base_n_obs_steps: int | None = None
    base_n_action_steps: int | None = None

    def __post_init__(self):
        super().__post_init__()
        for name, value, allowed in (
            ("variant", self.variant, VARIANTS),
            ("noise_layout", self.noise_layout, NOISE_LAYOUTS),
            ("episode_end", self.episode_end, EPISODE_ENDS),
            ("q_reduce", self.q_reduce, ("min", "mean")),
        ):
            if value not in allowed:
                raise ValueError(f"--policy.{name}={value!r} is not one of {allowed}")
        if self.use_base_features:
            raise NotImplementedError("use_base_features=True is not implemented yet (see the TODO in DSRLConfig)")
        if self.noise_bound is None:
            self.noise_bound = 1.0 if self.variant == "na" else 1.5
        if self.base_type is not None:
            self.set_base_facts(self.base_type, self.base_n_obs_steps, self.base_n_action_steps)

    def set_base_facts(self, base_type: str, n_obs_steps: int, n_action_steps: int) -> None:
        """Record the base's type, history length and chunk length; resolve the executed steps."""
        self.base_type, self.base_n_obs_steps, self.base_n_action_steps = base_type, n_obs_steps, n_action_steps
        if self.n_action_steps is None:
            self.n_action_steps = n_action_steps
        if not 1 <= self.n_action_steps <= n_action_steps:
            raise ValueError(
                f"--policy.n_action_steps={self.n_action_steps}: the base executes at most {n_action_steps} steps per chunk"
            )
        self.n_obs_steps = n_obs_steps

    def ensure_base_facts(self) -> None:
        """Read the base's config.json once, on first use; fail with an error naming the path.

        Lazy rather than in __post_init__: draccus replaces errors raised while parsing the CLI with
        "Couldn't instantiate class DSRLConfig", which would hide the path.
        """
        if self.base_type is not None:
            return
        if self.base_policy_path is None:
            raise ValueError("dsrl needs a base policy: pass --policy.base_policy_path=<base checkpoint>")
        from lerobot_steer.steering.base_adapter import CONFIG_NAME, _resolve_checkpoint, _validate_checkpoint

        folder = _resolve_checkpoint(self.base_policy_path, revision=self.base_policy_revision, cache_dir=None, token=None)
        base_type = _validate_checkpoint(folder, load_processors=True)
        base = json.loads((folder / CONFIG_NAME).read_text())
        self.set_base_facts(base_type, int(base.get("n_obs_steps", 1)), int(base["n_action_steps"]))

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
    def observation_delta_indices(self) -> list[int]:
        # One list for every observation key: the current history and the chunk-end history.
        return sorted(set(self.current_obs_offsets) | set(self.next_obs_offsets))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.n_exec))  # the executed chunk

    @property
    def reward_delta_indices(self) -> list[int]:
        return list(range(self.n_exec))  # the chunk's per-frame rewards, summed in the policy

    @property
    def drop_n_last_frames(self) -> int:
        return 0  # chunks that run past the episode end are kept: they carry the terminal reward

    def get_optimizer_preset(self) -> AdamConfig:
        return AdamConfig(lr=self.critic_lr, weight_decay=0.0, grad_clip_norm=self.grad_clip_norm)

    def get_scheduler_preset(self):
        return None

    def validate_features(self) -> None:
        """Features are checked against the base policy when the policy is built (DSRLPolicy)."""
