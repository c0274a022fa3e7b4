"""What keeps an online run's folder consistent when people and machines misbehave.

* `RunLock`: one run per `--output_dir`. Two runs writing the same checkpoints, buffer and metrics
  would corrupt each other without a word; the second one is refused while the first is alive.
* `StopSignals`: Ctrl-C (SIGINT) and SIGTERM (a scheduler's pre-emption, `kill`) ask the loop to
  stop after its current step, so that it can save a complete checkpoint and print how to resume,
  instead of losing everything since the last save.
* `RunStopped`: errors that end a run with a message for the user (no traceback) and an exit code
  (a `UserError`: 2, as every user error of our commands, or 128 + signal for `RunInterrupted`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from lerobot_steer.cli_errors import UserError

LOCK_NAME = ".lock"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(UserError):
    """A run ended on purpose or on a condition the user must act on; `lerobot-steer-rl` prints
    `error: <message>` (no traceback) and exits with `exit_code` (2)."""


class RunFolderLocked(RunStopped):
    """Another live run owns the output folder."""


class RunInterrupted(RunStopped):
    """SIGINT / SIGTERM stopped the run after a checkpoint; exit code 128 + the signal (130 for SIGINT),
    the shell's convention, so scripts and schedulers see that the run did not finish."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    def report(self) -> str:
        return str(self)  # not an error: where the run stopped and how to continue it


# ----------------------------------------------------------------------------------------- lock


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, Linux), which tells a live owner from a new
    process that reuses its PID (a restarted container often gets the same PID); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def owner_alive(owner: dict) -> bool | None:
    """Whether the process named by a lock is still running: None when it ran on another host,
    where this one cannot look."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):
        return False
    started = owner.get("start_time")
    return started is None or _start_time(pid) in (None, started)


class RunLock:
    """`<output_dir>/.lock`, holding the owner's PID, host and start time, while a run uses the folder.

    Taken with an exclusive create; a lock whose owner is gone (killed with -9, a crashed machine)
    is stale and taken over; one held by a live process is refused with its PID, host and the fix.
    Released on exit, exceptions included (only if it is still ours). Two runs that find the same
    stale lock within microseconds of each other could both take it over: a window far narrower
    than the one it closes (a second run started by hand or by a retrying scheduler).
    """

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_NAME
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid())}

    def __enter__(self) -> RunLock:
        for _ in range(3):  # a stale lock removed between our attempts: try again
            if self._create():
                return self
            owner = self._read()
            if owner is not None and owner_alive(owner) is not False:
                raise RunFolderLocked(self._refusal(owner))
            self.path.unlink(missing_ok=True)  # stale (owner gone) or unreadable (torn write): take it over
        raise RunFolderLocked(f"could not take the lock {self.path}: other runs keep taking it; "
                              "pick another --output_dir")

    def __exit__(self, *exc) -> None:
        if self._read() == self.me:
            self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.me, f)
        return True

    def _read(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _refusal(self, owner: dict) -> str:
        where = f"PID {owner.get('pid')} on {owner.get('host')}"
        if owner_alive(owner) is None:
            check = f"this machine cannot see whether it still runs; if it does not, delete {self.path}"
        else:
            check = f"if that process is not a lerobot-steer-rl run of this folder, delete {self.path}"
        return (f"{self.path.parent} is in use by another run ({where}): two runs in one --output_dir would "
                f"overwrite each other's checkpoints and metrics. Wait for it to end (or stop it: it saves a "
                f"checkpoint on Ctrl-C / SIGTERM), or pick another --output_dir; {check}.")


# -------------------------------------------------------------------------------------- signals


class StopSignals:
    """While active, the first SIGINT / SIGTERM only records a stop request (`requested`, `signum`):
    the loop finishes its step, saves and exits. A second one stops at once, without saving
    (KeyboardInterrupt for SIGINT, exit 128 + signal otherwise). Previous handlers come back on exit.
    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        # os.write, not print: a handler may run in the middle of another write to the same stream.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint "
                    "(send it again to stop at once, without saving)\n".encode())


@contextlib.contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """SIGINT / SIGTERM ignored while the block runs (main thread only). Env worker processes started
    in it inherit that, so a Ctrl-C in the terminal, which reaches the whole process group, stops the
    run through the main process's checkpoint-and-exit path instead of killing the envs mid-step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
