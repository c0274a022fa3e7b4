"""What a robot or teleoperator needs before `connect()`, checked before anything connects or moves.

LeRobot finds these problems only inside `connect()`: a serial port that does not exist surfaces as a
driver traceback, and an arm without a calibration file starts LeRobot's interactive calibration, which
waits for the operator (and moves nothing useful) in the middle of a recording or training session. Here
each is a one-line error that names the flag and the LeRobot command that fixes it. The simulated arm
needs none of this.
"""

from __future__ import annotations

from pathlib import Path

from lerobot_steer.config_error import ConfigError
from lerobot_steer.sim.robot import SO101Sim


def check_devices(robot, teleop=None) -> None:
    """Refuse a missing serial port, a missing camera device or a missing calibration (module docstring)."""
    for device, flag in ((robot, "--robot"), (teleop, "--teleop")):
        if device is None or isinstance(device, SO101Sim):
            continue
        config = device.config
        port = getattr(config, "port", None)
        if isinstance(port, str) and port.startswith("/dev/") and not Path(port).exists():
            raise ConfigError(f"{flag}.port={port}: no such device. Plug the arm in, find its port with "
                              f"lerobot-find-port, and pass {flag}.port=<that port>")
        for name, camera in (getattr(config, "cameras", None) or {}).items():
            path = getattr(camera, "index_or_path", None)
            if isinstance(path, str | Path) and str(path).startswith("/dev/") and not Path(path).exists():
                raise ConfigError(f"{flag}.cameras.{name}.index_or_path={path}: no such device; list the cameras "
                                  "with lerobot-find-cameras opencv")
        calibration = getattr(device, "calibration_fpath", None)
        if hasattr(device, "bus") and calibration is not None and not Path(calibration).is_file():
            raise ConfigError(
                f"{flag}.id={device.id}: no calibration file ({calibration}). Calibrate it first: lerobot-calibrate "
                f"{flag}.type=<this {flag}.type> {flag}.port={port} {flag}.id={device.id} (or pass the "
                f"{flag}.calibration_dir it was saved in)"
            )
