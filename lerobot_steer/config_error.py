"""`ConfigError`: a config refused a value (a flag out of range, an unknown choice).

Why not ValueError: draccus builds a config with `cls(**fields)` and turns any ValueError or TypeError
from its `__post_init__` into "Couldn't instantiate class DSRLConfig using the given arguments", and
LeRobot's own CLIs (`lerobot-train`, `lerobot-eval`) print only that line, so the message that names the
flag and the fix never reached the user. A draccus `ParsingError` passes through unchanged, and where
the field is a choice of types (`--policy.type=...`, `--env.type=...`) draccus prints its text.
"""

from __future__ import annotations

from draccus.utils import ParsingError


class ConfigError(ParsingError):
    """A config field's value is refused; the message names the flag, the bad value and what is allowed."""
