"""Running LeRobot's console scripts from tests, and the tiny policy flags they share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

# A diffusion policy small enough to train for a few steps on CPU in seconds, with no Hub download.
TINY_DIFFUSION_ARGS = [
    "--policy.type=diffusion", "--policy.device=cpu", "--policy.push_to_hub=false",
    "--policy.pretrained_backbone_weights=null", "--policy.horizon=8", "--policy.n_action_steps=4",
    "--policy.n_obs_steps=2", "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=2",
    "--policy.down_dims=[16,32]", "--policy.crop_shape=null",
]


def run_cli(cmd: list, cwd, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a console script; unless `ok` is False, fail the test with its output tail on a non-zero exit."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=600)
    if ok:
        assert result.returncode == 0, f"{Path(str(cmd[0])).name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result
