"""Captioned MP4s of chosen episodes: the first N of each checkpoint, and optionally its failures,
optionally with the predicted chunks drawn as end-effector trails (`--videos.trails=true`, `trails.py`).

Which episodes fail is only known at their end, so asking for failures records every episode to a
temporary file (streamed with PyAV, never held in memory) and keeps only the chosen ones. Each frame
carries the checkpoint name and step; the last frame is held for a second under the outcome, so a
video explains itself when shared without the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from lerobot_steer.sim.pick_place_env import SUCCESS

from .rollout import EpisodeRecorder, EpisodeResult


@dataclass
class VideoConfig:
    """`--videos.first=N` records episodes 0..N-1 of each checkpoint; `--videos.failures=M` also keeps
    its first M failed episodes (this renders every episode, so it is slower). `--videos.overlay`
    captions the frames. `--videos.trails=true` draws each predicted action chunk as the gripper path
    it leads to (forward-simulated in a copy of the sim state), and for a steering checkpoint the
    base's unsteered chunk beside it, with a legend (see `trails.py`); it costs one short simulation
    per chunk and recorded episode, and nothing in episodes that are not recorded."""

    first: int = 2
    failures: int = 0
    overlay: bool = True
    trails: bool = False
    hold_seconds: float = 1.0


def caption(image: np.ndarray, lines: list[str], colour=(255, 255, 255)) -> np.ndarray:
    """Text in a dark band at the top of an RGB frame (scaled to the frame's width)."""
    out = np.ascontiguousarray(image).copy()
    scale = max(out.shape[1] / 640, 0.3)
    line_h = int(22 * scale) + 4
    band = line_h * len(lines) + 4
    out[:band] = (out[:band] * 0.35).astype(out.dtype)
    for k, text in enumerate(lines):
        cv2.putText(out, text, (4, line_h * (k + 1) - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return out


class Mp4Writer:
    """Frames in, H.264 MP4 out (PyAV, which LeRobot itself uses for dataset videos)."""

    def __init__(self, path: Path, fps: int):
        self.path, self.fps = Path(path), fps
        self._container = None
        self._stream = None

    def write(self, image: np.ndarray) -> None:
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2  # yuv420p needs even sizes
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


class VideoRecorder(EpisodeRecorder):
    """Records the episodes `VideoConfig` asks for into `<videos_dir>/<label>/`."""

    def __init__(self, config: VideoConfig, videos_dir: Path, label: str, fps: int):
        self.config, self.label, self.fps = config, label, fps
        self.trails = config.trails
        self.dir = Path(videos_dir) / "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
        self._writers: dict[int, Mp4Writer] = {}
        self._last: dict[int, tuple[np.ndarray, int]] = {}
        self._failures_kept = 0
        self.paths: list[str] = []

    def wants(self, index: int) -> bool:
        return index < self.config.first or self.config.failures > 0

    def start(self, index: int, seed: int) -> None:
        self._writers[index] = Mp4Writer(self.dir / f".episode_{index:04d}.tmp.mp4", self.fps)

    def frame(self, index: int, image: np.ndarray, step: int) -> None:
        self._last[index] = (image, step)
        if self.config.overlay:
            image = caption(image, [f"{self.label}  step {step}"])
        self._writers[index].write(image)

    def finish(self, result: EpisodeResult) -> None:
        writer = self._writers.pop(result.index)
        image, step = self._last.pop(result.index, (None, 0))
        if image is not None and self.config.overlay:
            colour = (80, 255, 80) if result.outcome == SUCCESS else (255, 90, 90)
            held = caption(image, [f"{self.label}  step {step}", f"seed {result.seed}: {result.outcome}"], colour)
            for _ in range(max(1, int(self.config.hold_seconds * self.fps))):
                writer.write(held)
        writer.close()
        keep = result.index < self.config.first
        if not keep and not result.success and self._failures_kept < self.config.failures:
            keep, self._failures_kept = True, self._failures_kept + 1
        if keep and writer.path.exists():
            final = self.dir / f"episode_{result.index:04d}_seed{result.seed}_{result.outcome}.mp4"
            writer.path.replace(final)
            result.video = str(final)
            self.paths.append(str(final))
        else:
            writer.path.unlink(missing_ok=True)
