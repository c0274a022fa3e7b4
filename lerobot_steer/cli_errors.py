"""How our commands end on a user's mistake: `error: <message>` on stderr and exit 2, no traceback.

A user error is one the user fixes by changing an input (a flag, a path, a checkpoint):

* an error whose class derives from `UserError` (`RunStopped`, `FeatureMismatchError`,
  `CheckpointError`, `UnsupportedBasePolicyError`, ...);
* a ValueError / FileNotFoundError / FileExistsError raised inside a `user_input()` block, which
  wraps our validation of the command line and nothing else;
* an error of config parsing (draccus), with the config's own message rather than draccus' summary
  (our configs raise `config_error.ConfigError`, a draccus ParsingError, for the same reason).

Everything else is a bug and keeps its traceback. `run_command` applies this to an entry point;
every console script of the package calls it. Signals keep their own exit codes (128 + signal).
Leaf module, standard library only: a parse error is recognised through the draccus module the
command has already loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

USAGE_EXIT = 2  # the exit code of a usage error, as argparse (and draccus' unknown-flag error) use
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)
_MARK = "_lerobot_steer_user_error"


class UserError(Exception):
    """Base of our errors that mean "change an input": commands print `report()` and exit with `exit_code`."""

    exit_code = USAGE_EXIT

    def report(self) -> str:
        return f"error: {self}"


def mark_user_error(error: BaseException) -> BaseException:
    """Record that `error` is the user's (a flag or path our validation refused); returns it."""
    setattr(error, _MARK, True)
    return error


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, UserError) or getattr(error, _MARK, False) is True


@contextlib.contextmanager
def user_input(*types: type[BaseException]) -> Iterator[None]:
    """Errors of `types` (default: ValueError, FileNotFoundError, FileExistsError) raised in the block
    are user errors. Wrap validation only: the same error types out of other code are bugs."""
    caught = types or INPUT_ERRORS
    try:
        yield
    except caught as error:
        mark_user_error(error)
        raise


def run_command[T](main: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call an entry point; a user error prints one `error: <message>` line to stderr and exits 2
    (`UserError.exit_code` for ours, e.g. 130 / 143 for a run stopped by a signal). Other errors
    propagate with their traceback."""
    try:
        return main(*args, **kwargs)
    except SystemExit as exit_:
        parsing = _parsing_error(exit_.__context__)
        if parsing is None or exit_.code in (0, None):
            raise
        # LeRobot's parser printed "error: <draccus' summary>" and exits 1: add the config's own message.
        cause = _config_error(parsing)
        if cause is not None:
            print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT) from parsing
    except Exception as error:
        if _parsing_error(error) is error:  # draccus.parse called directly (no LeRobot parser around it)
            print(f"error: {_config_error(error) or error}", file=sys.stderr)
            raise SystemExit(USAGE_EXIT) from error
        if isinstance(error, UserError):
            report, code = error.report(), error.exit_code
        elif is_user_error(error):
            report, code = f"error: {error}", USAGE_EXIT
        else:
            raise
        print(report, file=sys.stderr)
        raise SystemExit(code) from error


def _parsing_error(error: BaseException | None) -> BaseException | None:
    """`error` if it is a draccus parsing error (draccus is loaded by then when it is one)."""
    draccus = sys.modules.get("draccus")
    return error if draccus is not None and isinstance(error, draccus.ParsingError) else None


def _config_error(error: BaseException | None) -> BaseException | None:
    """The error a config raised while it was built (e.g. "--policy.discount=1.5 is out of range;
    allowed: (0, 1]" from a __post_init__), which draccus reports as "Couldn't instantiate class
    DSRLConfig ...": the ValueError / TypeError behind that message in `error`'s chain, or None
    (draccus' own message then says it best, e.g. "`n_envs`: Couldn't parse 'abc' into an int")."""
    seen, effect = set(), None
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (isinstance(error, (ValueError, TypeError)) and _parsing_error(error) is None and effect is not None
                and str(effect).startswith("Couldn't instantiate class")):
            return error
        effect, error = error, error.__cause__ or error.__context__
    return None
