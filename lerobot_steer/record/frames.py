"""The dataset as LeRobot's `record_loop` sees it, and the label written into its episode buffer.

`record_loop` builds each frame from the robot's observation and the teleop's action and calls
`dataset.add_frame(frame)`; LeRobot's writer refuses a frame that lacks a declared feature, and the
outcome columns are not something `record_loop` knows. `OutcomeFrames` stands in for the dataset in
that call: it adds the running-episode values of the outcome columns (no reward, no success, not
done) to every frame and tells the key source a frame is coming (scripted keys are pressed there).

The label is only known when the take is over, and it has to be in the episode buffer before
`save_episode()` writes the parquet file. `label_episode` therefore sets the outcome columns of the
buffer's last frame in place. That buffer is a LeRobot internal (`dataset.writer.episode_buffer`:
feature -> one value per frame, plus "size"); `tests/test_record.py` pins it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .outcomes import Outcome, frame_defaults, last_frame_columns

logger = logging.getLogger(__name__)


class OutcomeFrames:
    """Wraps a writable `LeRobotDataset` for one take; everything but `add_frame` is the dataset's."""

    def __init__(self, dataset, on_frame: Callable[[int], None]):
        self._dataset = dataset
        self._on_frame = on_frame
        self.frames = 0  # frames added in this take

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def add_frame(self, frame: dict) -> None:
        self._on_frame(self.frames)
        self._dataset.add_frame({**frame, **frame_defaults()})
        self.frames += 1


def pending_frames(dataset) -> int:
    """Frames in the episode buffer (0 when nothing is pending)."""
    return dataset.writer.episode_buffer["size"] if dataset.has_pending_frames() else 0


def label_episode(dataset, outcome: Outcome) -> None:
    """Write `outcome` into the last frame of the pending episode (before `save_episode`)."""
    buffer = dataset.writer.episode_buffer
    last = buffer["size"] - 1
    if last < 0:
        raise ValueError("no frame to label: the episode buffer is empty")
    for key, value in last_frame_columns(outcome).items():
        if len(buffer[key]) != last + 1:
            raise RuntimeError(
                f"LeRobot seam changed: the episode buffer holds {len(buffer[key])} '{key}' values for "
                f"{last + 1} frames; lerobot_steer/record/frames.py writes the label into its last one"
            )
        buffer[key][last] = value


def keep_complete_frames(dataset) -> bool:
    """After an interruption inside `add_frame`, drop the half-added frame so the buffer can be saved.

    LeRobot appends a frame's values one feature at a time and counts it (`size`) last, so a Ctrl-C
    in between leaves some lists one value longer. Returns False when the take cannot be saved
    (streaming video encoding already consumed the partial frame).
    """
    buffer = dataset.writer.episode_buffer
    size = buffer["size"]
    long = [k for k, v in buffer.items() if isinstance(v, list) and len(v) > size]
    if not long:
        return True
    if getattr(dataset.writer, "_streaming_encoder", None) is not None and any(
            dataset.features.get(k, {}).get("dtype") == "video" for k in long):
        logger.warning("The interrupted frame already reached the streaming video encoder: the take is dropped.")
        return False
    for key in long:
        del buffer[key][size:]
    for key, ft in dataset.features.items():  # the PNG of the half-added frame, if it was written
        if ft["dtype"] in ("image", "video") and buffer.get(key) and buffer[key][0] is not None:
            kept = {Path(p) for p in buffer[key]}
            for path in Path(buffer[key][0]).parent.iterdir():
                if path not in kept:
                    path.unlink()
    logger.warning("Dropped the half-added frame %d of the interrupted take.", size)
    return True

