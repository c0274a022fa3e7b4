"""Checkpoints of an on-policy run: the layout and guarantees of `rl/checkpoint.py`, with the
rollout collected so far in place of the replay buffer.

    <output_dir>/checkpoints/<env step, 9 digits>/
        pretrained_model/    the *_rl policy (LeRobot `save_pretrained`), its processors,
                             train_config.json: `--policy.path` for lerobot-eval / lerobot-steer-eval,
                             and `export_to_base` turns it into a stock pi0 / pi05 / smolvla checkpoint
        algorithm/           model.safetensors = `algorithm.state_dict()` (GRPO's KL reference, if any)
        training_state/      policy/ (the Adam state, LeRobot's optimizer I/O), rng_state.safetensors,
                             training_step.json (env steps, optimizer steps, rollouts, ...),
                             rollout.safetensors (the rows of the unfinished rollout),
                             collector.safetensors + envs.json (observations and exact sim states)
    <output_dir>/checkpoints/last -> <newest>

Written to a temporary folder, flushed and renamed into place (a kill mid-write keeps the previous
one); `--resume=true` takes the newest checkpoint whose files all load. A checkpoint can be taken at
any chunk step: a resumed run finishes the same rollout with the same rows, optimizer and RNG
streams, and so ends where the uninterrupted run ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from lerobot.utils.constants import PRETRAINED_MODEL_DIR
from lerobot.utils.random_utils import load_rng_state

from lerobot_steer.rl.checkpoint import (
    ALGORITHM_DIR,
    COUNTERS_FILE,
    TRAINING_STATE_DIR,
    load_algorithm_state,
    load_collector_state,
    save_collector_state,
    write_checkpoint,
)
from lerobot_steer.rl.config import TRAIN_CONFIG_NAME

from .rollout_buffer import RolloutBuffer

ROLLOUT_FILE = "rollout.safetensors"
REQUIRED_FILES = (
    f"{PRETRAINED_MODEL_DIR}/config.json", f"{PRETRAINED_MODEL_DIR}/{TRAIN_CONFIG_NAME}",
    f"{PRETRAINED_MODEL_DIR}/model.safetensors", f"{ALGORITHM_DIR}/model.safetensors",
    *(f"{TRAINING_STATE_DIR}/{name}" for name in (COUNTERS_FILE, ROLLOUT_FILE, "rng_state.safetensors",
                                                   "collector.safetensors", "envs.json")),
)


def save_checkpoint(cfg, *, policy, preprocessor, postprocessor, algorithm, buffer: RolloutBuffer, collector,
                    counters: dict[str, Any]) -> Path:
    """Write the whole run state for `counters["env_steps"]` (atomically) and point `last` at it.
    Refused, before anything is written, when a trained weight is not finite."""

    def write_state(state_dir: Path) -> None:
        save_file(buffer.state_dict(), str(state_dir / ROLLOUT_FILE))
        save_collector_state(collector, state_dir)
        (state_dir / COUNTERS_FILE).write_text(json.dumps(counters, indent=2))

    return write_checkpoint(cfg, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                            algorithm=algorithm, env_steps=counters["env_steps"], write_state=write_state)


def load_training_state(folder: Path, *, policy, algorithm, buffer: RolloutBuffer, collector,
                        partial_rollout: bool = True) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote (the policy weights are loaded with the policy).
    `partial_rollout=False` leaves out the rows of an unfinished rollout (a Ray run collects whole ones)."""
    state_dir = load_algorithm_state(folder, policy=policy, algorithm=algorithm, required=REQUIRED_FILES)
    if partial_rollout:
        buffer.load_state_dict(load_file(str(state_dir / ROLLOUT_FILE)))
    load_collector_state(collector, state_dir)
    counters = json.loads((state_dir / COUNTERS_FILE).read_text())
    algorithm.optimization_step = counters["updates"]
    load_rng_state(state_dir)  # last: nothing above may draw random numbers after it
    return counters
