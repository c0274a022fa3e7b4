"""lerobot-steer: RL fine-tuning of LeRobot policies, with an SO-101 MuJoCo simulation.

Importing this package registers everything the project adds to LeRobot, so that the CLIs (which
import it through `lerobot_policy_steer`) accept:

- `--env.type=so101_sim`: the pick-and-place gym env, for lerobot-eval / lerobot-train;
- `--robot.type=so101_sim`: the same sim behind a real SO-101 follower's interface, for
  lerobot-record, lerobot-rollout, lerobot-teleoperate on a machine with no arm;
- `--teleop.type=so101_sim_expert`: the scripted expert as a teleoperator of that robot, for
  recording demonstrations with lerobot-record.
"""

from lerobot_steer.sim import env_config  # noqa: F401  (env type so101_sim)
from lerobot_steer.sim import robot  # noqa: F401  (robot type so101_sim)
from lerobot_steer.sim import teleop  # noqa: F401  (teleoperator type so101_sim_expert)

__version__ = "0.1.0"

# Policy type `dsrl` (config, policy, processor factory found by LeRobot's naming convention).
from lerobot_steer.policies.dsrl import configuration_dsrl, modeling_dsrl, processor_dsrl  # noqa: E402,F401

# RL algorithm type `dsrl` (RLAlgorithmConfig registry + make_algorithm lookup, see rl/registry.py).
from lerobot_steer import rl  # noqa: E402,F401

# Policy type `dyna_vgd` (value-guided denoising, fixed or uncertainty-adaptive strength).
from lerobot_steer.policies.dyna_vgd import configuration_dyna_vgd, modeling_dyna_vgd, processor_dyna_vgd  # noqa: E402,F401
from lerobot_steer.rl import dyna_vgd_algorithm  # noqa: E402,F401  (RL algorithm type `dyna_vgd`)

# Policy types `pi0_rl`, `pi05_rl` and `smolvla_rl` (LeRobot's VLAs with a stochastic, likelihood-tractable
# denoising chain and a value head, for PPO / GRPO; exported back to stock pi0 / pi05 / smolvla).
from lerobot_steer.policies.pi0_rl import configuration_pi0_rl, modeling_pi0_rl, processor_pi0_rl  # noqa: E402,F401
from lerobot_steer.policies.smolvla_rl import configuration_smolvla_rl, modeling_smolvla_rl, processor_smolvla_rl  # noqa: E402,F401

# RL algorithm types `ppo` and `grpo` (chunk-level on-policy RL of the *_rl VLAs, `lerobot-steer-ppo`).
from lerobot_steer.rl import onpolicy  # noqa: E402,F401
