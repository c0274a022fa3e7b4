"""On-policy RL (chunk-level PPO and GRPO) of the RL fine-tunable VLAs (`pi0_rl`, `pi05_rl`,
`smolvla_rl`), run by `lerobot-steer-ppo`.

Importing this package registers the algorithm configs `ppo` and `grpo` (`RLAlgorithmConfig` choice
registry) and their classes for LeRobot's `make_algorithm` (see `rl/registry.py`).

    advantages.py      GAE over chunk steps, group-relative advantages, explained variance
    losses.py          clipped surrogate on the chain's joint likelihood, clipped value loss, k3 KL
    rollout_buffer.py  the on-policy rows of one rollout, minibatches of micro-batches
    algorithms.py      PPO / GRPO configs and `RLAlgorithm`s (update epochs, KL early stop)
    acting.py          env observations -> policy batch (task strings) -> sampled chain
    config.py          the command's typed config
    checkpoint.py      checkpoints with the rollout so far, exact resume
    train.py           the loop and `lerobot-steer-ppo`
"""

from .algorithms import (
    GRPOAlgorithm,
    GRPOConfig,
    OnPolicyAlgorithm,
    OnPolicyAlgorithmConfig,
    PPOAlgorithm,
    PPOConfig,
)

__all__ = ["GRPOAlgorithm", "GRPOConfig", "OnPolicyAlgorithm", "OnPolicyAlgorithmConfig", "PPOAlgorithm", "PPOConfig"]
