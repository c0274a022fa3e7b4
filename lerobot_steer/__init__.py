"""lerobot-steer: RL fine-tuning of LeRobot policies, with an SO-101 MuJoCo simulation.

Importing this package registers everything the project adds to LeRobot: the `so101_sim` env type,
the `so101_sim` robot and the `so101_sim_expert` teleoperator.
"""

from lerobot_steer.sim import env_config  # noqa: F401  (env type so101_sim)

__version__ = "0.1.0"
