"""`lerobot-steer-ppo` configuration: one typed dataclass, parsed by draccus as LeRobot's CLIs are.

    lerobot-steer-ppo --policy.type=smolvla_rl --policy.base_policy_path=<smolvla checkpoint> \
        --algorithm.type=ppo --env.type=so101_sim --env.cameras=[front] --n_envs=8 --steps=200000 \
        --output_dir=outputs/ppo/smolvla

`--policy.path=<a pi0_rl / pi05_rl / smolvla_rl checkpoint>` continues from its weights (fresh
counters, optimizer and rollout); `--resume=true --output_dir=<run>` continues an interrupted run
exactly where its last checkpoint left it (weights, optimizer, the rollout collected so far, env
states, RNG, counters).
"""


import math
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.configs.default import WandBConfig
from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.configs import EnvConfig
from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.config import COUNT, NON_NEGATIVE, check_fields
from lerobot_steer.policies.common.vla_rl_config import VLARLConfigMixin
from lerobot_steer.rl.config import (
    OnlineEvalConfig,
    RayRuntimeConfig,
    check_eval_numbers,
    check_runtime,
    resolve_output_dir,
    resolve_policy_path,
)
from lerobot_steer.sim.env_config import SO101SimEnvConfig

from .algorithms import OnPolicyAlgorithmConfig, PPOConfig

RL_POLICY_TYPES = ("pi0_rl", "pi05_rl", "smolvla_rl")


def _deterministic_eval() -> OnlineEvalConfig:
    return OnlineEvalConfig(deterministic=True)


@dataclass
class OnPolicyRunConfig:
    """On-policy RL (PPO / GRPO) of an RL fine-tunable VLA in a vectorized sim.

    policy: `--policy.type=pi0_rl|pi05_rl|smolvla_rl --policy.base_policy_path=<stock pi0 / pi05 /
        smolvla checkpoint>` (fresh heads on the base's weights), or `--policy.path=<a *_rl
        checkpoint>` (continue from its weights). The stochastic chain, value head and what trains
        are policy options (`--policy.stochastic_chain`, `--policy.value_head`, `--policy.trainable`).
    algorithm: `--algorithm.type=ppo` (default) or `grpo`, and their options (algorithms.py).
    env: the sim (`--env.type=so101_sim` and its options; the VLA reads its camera images, the
        joints and the task string `--env.task_description`).
    n_envs / async_envs: vectorized envs (GRPO: groups of `--algorithm.group_size` envs share a seed).
    steps: env steps in total (all envs together, every step the physics ran).
    eval: periodic evaluation on fixed seeds through the project's evaluation (`deterministic=true`,
        the default here: the base's own ODE decode with the fine-tuned weights, i.e. what the
        exported stock checkpoint does; false samples the stochastic chain).
    save_freq / log_freq: in env steps. Checkpoints land in `output_dir/checkpoints/<env step>/`.
    runtime / ray: "local", or "ray": each rollout is collected by `--ray.num_workers` Ray actors with
        `--n_envs` envs each (a rollout then holds workers x n_envs env columns), all acting with the
        weights of the update that follows; the learner stays here (rl/onpolicy/ray_runtime.py).
    """

    policy: PreTrainedConfig | None = None
    algorithm: RLAlgorithmConfig | None = None
    env: EnvConfig = field(default_factory=SO101SimEnvConfig)
    n_envs: int = 8
    async_envs: bool = False
    steps: int = 100_000
    eval: OnlineEvalConfig = field(default_factory=_deterministic_eval)
    save_freq: int = 10_000
    log_freq: int = 1_000
    seed: int = 1000
    output_dir: Path | None = None
    job_name: str | None = None
    resume: bool = False
    progress: bool = True
    wandb: WandBConfig = field(default_factory=WandBConfig)
    runtime: str = "local"
    ray: RayRuntimeConfig = field(default_factory=RayRuntimeConfig)

    def validate(self) -> None:
        """Resolve `--policy.path`, check the policy, algorithm and numbers, pick the output folder."""
        resolve_policy_path(self)
        if self.policy is None:
            raise ConfigError(
                "no policy: pass --policy.type=smolvla_rl (or pi0_rl, pi05_rl) --policy.base_policy_path=<its stock "
                "checkpoint>, or --policy.path=<a *_rl checkpoint> to continue from it"
            )
        if not isinstance(self.policy, VLARLConfigMixin):
            base = self.policy.type
            rl_type = f"{base}_rl" if f"{base}_rl" in RL_POLICY_TYPES else "smolvla_rl"
            raise ConfigError(
                f"--policy.type={base}: lerobot-steer-ppo trains the RL fine-tunable VLAs {RL_POLICY_TYPES}, whose "
                f"denoising chain has a likelihood. Start one from this checkpoint: --policy.type={rl_type} "
                f"--policy.base_policy_path=<the {base} checkpoint>"
            )
        self.policy.resolve_base_fields()  # a fresh policy's chunk sizes and features are its base's
        if self.algorithm is None:
            self.algorithm = PPOConfig()
        elif not isinstance(self.algorithm, OnPolicyAlgorithmConfig):
            raise ConfigError(f"--algorithm.type={self.algorithm.type}: lerobot-steer-ppo runs ppo or grpo "
                              "(lerobot-steer-rl runs the off-policy methods)")
        self.algorithm.validate()
        if self.algorithm.needs_value and self.policy.value_head == "none":
            raise ConfigError("--algorithm.type=ppo needs a value head: drop --policy.value_head=none (prefix reads "
                              "the VLM features, separate the robot state), or use --algorithm.type=grpo")
        group = getattr(self.algorithm, "group_size", None)
        if group is not None and self.n_envs % group:
            raise ConfigError(f"--n_envs={self.n_envs} is not a multiple of --algorithm.group_size={group}: each "
                              "group of envs starts from one initial state")
        check_fields(self, {"n_envs": COUNT, "steps": COUNT, "save_freq": NON_NEGATIVE, "log_freq": NON_NEGATIVE,
                            "seed": NON_NEGATIVE}, prefix="--")
        check_eval_numbers(self.eval)
        check_runtime(self.runtime, self.ray)
        if not self.job_name:
            self.job_name = f"{self.env.type}_{self.policy.type}_{self.algorithm.type}"
        resolve_output_dir(self, "outputs/ppo")

    def rollout_chunks(self) -> int:
        """Chunk steps per env in one rollout: PPO's `rollout_chunks`; GRPO's one episode, at most
        ceil(episode_length / executed steps per chunk)."""
        if self.algorithm.episodic:
            if getattr(self.env, "episode_length", None) is None:
                raise ConfigError(f"--algorithm.type={self.algorithm.type} runs one episode per env per rollout: the "
                                  f"env ({self.env.type}) must say its episode_length")
            return math.ceil(int(self.env.episode_length) / self.policy.n_action_steps)
        return self.algorithm.rollout_chunks

    def total_envs(self) -> int:
        """Env columns of one rollout: the local envs, or every Ray worker's."""
        return self.n_envs * (self.ray.num_workers if self.runtime == "ray" else 1)

    @classmethod
    def __get_path_fields__(cls) -> list[str]:
        """`--policy.path` is resolved in validate() (LeRobot's parser filters it out first)."""
        return ["policy"]
