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
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from lerobot.optim.optimizers import load_optimizer_state, save_optimizer_state
from lerobot.utils.constants import PRETRAINED_MODEL_DIR
from lerobot.utils.random_utils import load_rng_state, save_rng_state

from lerobot_steer.rl.checkpoint import (
    ALGORITHM_DIR,
    COUNTERS_FILE,
    TRAINING_STATE_DIR,
    CorruptCheckpoint,
    _point_last,
    _sync_tree,
    check_finite_weights,
    checkpoint_dir,
    checkpoint_problems,
    load_collector_state,
    save_collector_state,
    save_config,
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
    check_finite_weights(policy, algorithm, counters["env_steps"])
    final = checkpoint_dir(cfg.output_dir, counters["env_steps"])
    tmp = final.parent / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model_dir, algo_dir, state_dir = tmp / PRETRAINED_MODEL_DIR, tmp / ALGORITHM_DIR, tmp / TRAINING_STATE_DIR
    for d in (model_dir, algo_dir, state_dir):
        d.mkdir(parents=True)

    policy.save_pretrained(model_dir)
    preprocessor.save_pretrained(model_dir)
    postprocessor.save_pretrained(model_dir)
    save_config(cfg, model_dir / TRAIN_CONFIG_NAME)

    save_file({k: v.detach().cpu().contiguous() for k, v in algorithm.state_dict().items()},
              str(algo_dir / "model.safetensors"))
    save_optimizer_state(algorithm.get_optimizers(), state_dir)
    save_rng_state(state_dir)
    save_file(buffer.state_dict(), str(state_dir / ROLLOUT_FILE))
    save_collector_state(collector, state_dir)
    (state_dir / COUNTERS_FILE).write_text(json.dumps(counters, indent=2))

    _sync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    _point_last(final)
    return final


def load_training_state(folder: Path, *, policy, algorithm, buffer: RolloutBuffer, collector) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote (the policy weights are loaded with the policy)."""
    algo_file, state_dir = folder / ALGORITHM_DIR / "model.safetensors", folder / TRAINING_STATE_DIR
    problems = checkpoint_problems(folder, REQUIRED_FILES)
    problems += [f"{state_dir / name}: missing (optimizer state)" for name in algorithm.get_optimizers()
                 if not (state_dir / name).is_dir()]
    if problems:
        raise CorruptCheckpoint(f"{folder} cannot be resumed from:\n  " + "\n  ".join(problems))
    algorithm.load_state_dict(load_file(str(algo_file)), device=policy.config.device)
    load_optimizer_state(algorithm.get_optimizers(), state_dir)
    buffer.load_state_dict(load_file(str(state_dir / ROLLOUT_FILE)))
    load_collector_state(collector, state_dir)
    counters = json.loads((state_dir / COUNTERS_FILE).read_text())
    algorithm.optimization_step = counters["updates"]
    load_rng_state(state_dir)  # last: nothing above may draw random numbers after it
    return counters
