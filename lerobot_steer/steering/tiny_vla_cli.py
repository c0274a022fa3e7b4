"""Run a console script (LeRobot's or ours) with tiny VLAs buildable offline:

    python -m lerobot_steer.steering.tiny_vla_cli lerobot-train --policy.type=smolvla \\
        --policy.vlm_model_name=outputs/tiny_smolvlm --policy.load_vlm_weights=false ...

Why: SmolVLA built from a config fetches its VLM's processor from the Hub, and pi0 / pi05 hard-code
full-size Gemmas. `offline_vla_builds` patches both, but only inside one process, so the real CLIs
(`lerobot-train`, `lerobot-eval`, `lerobot-steer-ppo`, `lerobot-steer-rl`, `lerobot-steer-eval`) run
here in that process. That is how the SFT -> RL -> evaluation path is exercised end to end on a CPU
with no download. The tiny SmolVLM config and tokenizer are written to `$LEROBOT_STEER_TINY_VLM_DIR`
(default `outputs/tiny_smolvlm`): pass that folder as `--policy.vlm_model_name` to train a new one.
For real checkpoints none of this is needed: call the console scripts themselves.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from lerobot_steer.steering.tiny_bases import TINY_VLM_DIR_ENV, offline_vla_builds

DEFAULT_VLM_DIR = "outputs/tiny_smolvlm"


def console_script(name: str):
    """The function behind an installed console script, e.g. `lerobot-train`."""
    found = entry_points(group="console_scripts", name=name)
    if not found:
        known = sorted(e.name for e in entry_points(group="console_scripts") if e.name.startswith("lerobot"))
        sys.exit(f"tiny_vla_cli: no console script named {name!r}; installed: {', '.join(known)}")
    return next(iter(found)).load()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    name, args = sys.argv[1], sys.argv[2:]
    vlm_dir = Path(os.environ.setdefault(TINY_VLM_DIR_ENV, DEFAULT_VLM_DIR))  # worker processes find it here
    vlm_dir.mkdir(parents=True, exist_ok=True)
    entry = console_script(name)
    with offline_vla_builds(vlm_dir):
        sys.argv = [name, *args]
        entry()


if __name__ == "__main__":
    main()
