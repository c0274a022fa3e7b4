"""Make our RLAlgorithm types constructible by LeRobot's `make_algorithm`, without editing LeRobot.

LeRobot 0.6.1 registers algorithm *configs* through `RLAlgorithmConfig.register_subclass(name)`,
which works from a plugin, but `lerobot.rl.algorithms.factory.get_algorithm_class(name)` hard-codes
`"sac"` and raises for every other name. How we get around it: `register_algorithm(name)` records
the class in our own registry, and `install()` (run once when `lerobot_steer.rl` is imported) replaces
the factory module's `get_algorithm_class` with a wrapper that looks the name up in our registry
first and otherwise defers to LeRobot's original. `make_algorithm` resolves `get_algorithm_class`
from its module globals at call time, so LeRobot's learner, `make_algorithm` and our code all see
our types. Code that did `from lerobot.rl.algorithms.factory import get_algorithm_class` before the
patch keeps the original function (LeRobot's own modules call it through `make_algorithm`).
"""

from __future__ import annotations

from lerobot.rl.algorithms import factory as _factory
from lerobot.rl.algorithms.base import RLAlgorithm

_ALGORITHMS: dict[str, type[RLAlgorithm]] = {}
_original_get_algorithm_class = _factory.get_algorithm_class


def register_algorithm(name: str):
    """Class decorator: `make_algorithm(cfg)` with `cfg.type == name` builds this class."""

    def decorate(cls: type[RLAlgorithm]) -> type[RLAlgorithm]:
        _ALGORITHMS[name] = cls
        return cls

    return decorate


def get_algorithm_class(name: str) -> type[RLAlgorithm]:
    """Our algorithms first, then LeRobot's built-ins (its error lists every registered config)."""
    if name in _ALGORITHMS:
        return _ALGORITHMS[name]
    return _original_get_algorithm_class(name)


def install() -> None:
    """Point LeRobot's factory at `get_algorithm_class` above (idempotent)."""
    _factory.get_algorithm_class = get_algorithm_class
