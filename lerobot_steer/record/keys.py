"""Key presses -> recording events and outcome labels, from the keyboard or from a script.

`OutcomeKeys` is the one place that knows what a key means. It keeps LeRobot's own controls
(through LeRobot's `apply_recording_control`, on the same `events` dict `record_loop` reads) and
adds the outcome keys. Keys reach it from a `KeySource`:

* `KeyboardKeys`: LeRobot's `create_key_listener` (pynput on X11 / macOS / Windows, else the
  terminal it runs in, else nothing: then the episode and reset timers drive the recording and every
  episode is saved with `--outcome.default_label`).
* `ScriptedKeys`: a list of (attempt, frame, key), for tests and scripts: no TTY, no pynput.

The `KEYS` table below is what `--help` and the README show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lerobot.utils.keyboard_input import apply_recording_control, create_key_listener

from .outcomes import Outcome

logger = logging.getLogger(__name__)

KEYS = """\
Keys (in the terminal running the command, or anywhere on an X11 desktop):
  s          success (score 1); ends the episode
  f          failure, no reason; ends the episode
  1-9        failure with reason N of --outcome.failure_reasons (default 1 never_picked_up,
             2 dropped_during_transport, 3 missed_bowl, 4 timeout); ends the episode.
             With --outcome.digits=score: score N/10 ("partial"); 0 is a failure
  d          discard the current episode and stop recording
  right / n  end the episode (or the reset) now, keep it          (LeRobot's)
  left / r   discard the episode and record it again              (LeRobot's)
  esc / q    stop recording; the current episode is kept          (LeRobot's)
  Ctrl-C     stop; the current episode is kept, labelled "interrupted" unless labelled already
A label can be given during the episode, the reset period after it, or the --outcome.label_wait_s
after those; the last key wins. Unlabelled episodes get --outcome.default_label."""

CONTROLS_HELP = "s=success f=failure 1-9=reason/score d=discard+stop n=next r=re-record q=quit"

# LeRobot's control keys (`init_keyboard_listener`'s mapping) -> `apply_recording_control` names.
_LEROBOT_CONTROLS = {"right": "right", "n": "right", "left": "left", "r": "left", "esc": "esc", "q": "esc"}


class OutcomeKeys:
    """Turns key names (LeRobot's canonical ones: "right", "esc", "s", "3", ...) into `events` flags
    and the pending outcome of the current episode.

    `phase` is "episode" while frames are recorded, "reset" afterwards: a label key pressed in the
    episode also ends it (with `label_ends_episode`), one pressed in the reset period only labels, so
    the operator keeps the time to reset the scene.
    """

    def __init__(self, failure_reasons: Iterable[str], digits: str = "reason", label_ends_episode: bool = True):
        self.failure_reasons = tuple(failure_reasons)
        self.digits = digits
        self.label_ends_episode = label_ends_episode
        # The dict LeRobot's record_loop and recording loop read (init_keyboard_listener's keys).
        self.events = {"exit_early": False, "rerecord_episode": False, "stop_recording": False}
        self.outcome: Outcome | None = None
        self.discard = False
        self.phase = "episode"

    def start_episode(self) -> None:
        """A new take: no label, and no early exit left over from a key pressed between loops."""
        self.outcome = None
        self.discard = False
        self.phase = "episode"
        self.events["exit_early"] = False
        self.events["rerecord_episode"] = False

    def press(self, name: str) -> None:
        """Dispatch one key (called from the listener's thread, or by a script)."""
        key = name.lower()
        if key in _LEROBOT_CONTROLS:
            apply_recording_control(_LEROBOT_CONTROLS[key], self.events)
            return
        if key == "d":
            print("d pressed: discarding this episode and stopping.")
            self.discard = True
            self.events["stop_recording"] = True
            self.events["exit_early"] = True
            return
        outcome = self._outcome_of(key)
        if outcome is None:
            return  # any other key: ignored, as LeRobot ignores it
        self.outcome = outcome
        print(f"{name} pressed: labelled {describe(outcome)}.")
        if self.phase == "episode" and self.label_ends_episode:
            self.events["exit_early"] = True

    def _outcome_of(self, key: str) -> Outcome | None:
        if key == "s":
            return Outcome.of_success()
        if key == "f":
            return Outcome.of_failure()
        if len(key) == 1 and key.isdigit():
            n = int(key)
            if self.digits == "score":
                return Outcome.of_score(n / 10)
            if 1 <= n <= len(self.failure_reasons):
                return Outcome.of_failure(self.failure_reasons[n - 1])
            logger.warning("key %s: no failure reason %d (--outcome.failure_reasons has %d)", key, n,
                           len(self.failure_reasons))
        return None


def describe(outcome: Outcome) -> str:
    """"failure (missed_bowl)", "partial 0.70", "success"."""
    if outcome.label == "partial":
        return f"partial {outcome.score:.2f}"
    return f"{outcome.label} ({outcome.reason})" if outcome.reason else outcome.label


class KeySource:
    """Where key presses come from. The recorder calls `start(dispatch)` once, `on_frame` before each
    recorded frame, `after_episode` once a take (and its reset period) is over, and `stop` at the end."""

    # Whether a person may still press a key: the recorder then waits up to --outcome.label_wait_s
    # for the label of an unlabelled episode.
    interactive = False

    def start(self, dispatch: Callable[[str], None]) -> None:
        self.dispatch = dispatch

    def on_frame(self, attempt: int, frame_index: int) -> None:
        """Before frame `frame_index` of take `attempt` (0-based, discarded and re-recorded takes count)."""

    def after_episode(self, attempt: int) -> None:
        """After take `attempt` and its reset period, before it is labelled and saved."""

    def stop(self) -> None:
        pass


class KeyboardKeys(KeySource):
    """LeRobot's key listener (`create_key_listener`, the backend `lerobot-record` uses)."""

    def __init__(self):
        self.listener = None

    @property
    def interactive(self) -> bool:
        return self.listener is not None

    def start(self, dispatch: Callable[[str], None]) -> None:
        super().start(dispatch)
        self.listener = create_key_listener(dispatch, controls_help=CONTROLS_HELP)
        if self.listener is None:
            logger.warning("No keyboard: episodes end on --dataset.episode_time_s and are saved as "
                           "--outcome.default_label.")

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None


@dataclass(frozen=True)
class ScriptedKey:
    """Press `key` before frame `frame` of take `attempt`; `frame=None`: after the take (and its reset
    period), when the operator would label it. `key="ctrl-c"` raises KeyboardInterrupt there instead."""

    attempt: int
    frame: int | None
    key: str


class ScriptedKeys(KeySource):
    """Keys from a list, at given frames: deterministic, with no terminal and no pynput."""

    def __init__(self, keys: Iterable[ScriptedKey | tuple]):
        self.keys = [k if isinstance(k, ScriptedKey) else ScriptedKey(*k) for k in keys]
        self.pressed: list[ScriptedKey] = []

    def _press(self, attempt: int, frame: int | None) -> None:
        for k in self.keys:
            if k.attempt == attempt and k.frame == frame:
                self.pressed.append(k)
                if k.key == "ctrl-c":
                    raise KeyboardInterrupt
                self.dispatch(k.key)

    def on_frame(self, attempt: int, frame_index: int) -> None:
        self._press(attempt, frame_index)

    def after_episode(self, attempt: int) -> None:
        self._press(attempt, None)
