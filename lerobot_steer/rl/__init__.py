"""Online RL for lerobot-steer: RLAlgorithm subclasses and their registration with LeRobot.

Importing this package registers the algorithm configs (`RLAlgorithmConfig` choice registry) and
patches LeRobot's algorithm-class lookup so `make_algorithm` can build them (see registry.py).
"""

from . import registry
from .dsrl_algorithm import DSRLAlgorithm, DSRLAlgorithmConfig

registry.install()

__all__ = ["DSRLAlgorithm", "DSRLAlgorithmConfig"]
