"""Checkpoints of an online run, in the layout of LeRobot's RL learner, plus what it leaves out.

    <output_dir>/checkpoints/<env step, 9 digits>/
        pretrained_model/    policy (LeRobot `save_pretrained`), its processors, train_config.json:
                             `--policy.path` for lerobot-eval / lerobot-rollout / lerobot-steer-eval
        algorithm/           model.safetensors = `algorithm.state_dict()` (targets, critics, ...)
        training_state/      one folder per optimizer (LeRobot's optimizer I/O), rng_state.safetensors
                             (LeRobot's), training_step.json (env steps, updates, episodes, ...),
                             replay_buffer.safetensors, collector.safetensors + envs.json (the
                             vector env's observations and each sim's exact state), base_history.safetensors
    <output_dir>/checkpoints/last -> <newest>

LeRobot's learner stores its buffer as a LeRobot dataset beside the checkpoints and does not record
the env-step counter (its `interaction_step` is always 0) nor the env states: a resumed run there
restarts its episodes. Here every piece the next step depends on is saved, so `--resume=true`
after `kill -9` continues exactly as the uninterrupted run would have.

A checkpoint is written to a temporary folder and renamed into place, so a kill during the write
leaves the previous checkpoint intact; `last` moves only after the rename. The replay buffer is
the large part: only the newest checkpoint keeps it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lerobot.optim.optimizers import load_optimizer_state, save_optimizer_state
from lerobot.utils.constants import PRETRAINED_MODEL_DIR
from lerobot.utils.random_utils import load_rng_state, save_rng_state

from .config import TRAIN_CONFIG_NAME, SteerRLConfig
from .replay_buffer import ChunkReplayBuffer

CHECKPOINTS_DIR, LAST = "checkpoints", "last"
ALGORITHM_DIR, TRAINING_STATE_DIR = "algorithm", "training_state"
BUFFER_FILE = "replay_buffer.safetensors"
COUNTERS_FILE = "training_step.json"


def checkpoint_dir(output_dir: Path, env_steps: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"{env_steps:09d}"


def last_checkpoint(output_dir: Path) -> Path:
    """The newest complete checkpoint of a run, with an error that says what to do without one."""
    last = Path(output_dir) / CHECKPOINTS_DIR / LAST
    if not last.exists():
        raise FileNotFoundError(
            f"{last} does not exist: the run in {output_dir} has no checkpoint to resume from "
            "(start it without --resume=true, or check --output_dir)"
        )
    return last.resolve()


def save_config(cfg: SteerRLConfig, path: Path) -> None:
    """The run's config as JSON (the algorithm's copy of the policy config is left out: it is the
    `policy` field, and draccus would write it twice)."""
    policy_config, cfg.algorithm.policy_config = cfg.algorithm.policy_config, None
    try:
        with open(path, "w") as f, draccus.config_type("json"):
            draccus.dump(cfg, f, indent=2)
    finally:
        cfg.algorithm.policy_config = policy_config


def _flat_obs(prefix: str, obs: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
    for key, value in obs.items():
        if isinstance(value, dict):
            _flat_obs(f"{prefix}{key}/", value, out)
        else:
            out[f"{prefix}{key}"] = torch.as_tensor(np.ascontiguousarray(value))


def _nested_obs(flat: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if not name.startswith(prefix):
            continue
        *groups, key = name[len(prefix):].split("/")
        node = out
        for g in groups:
            node = node.setdefault(g, {})
        node[key] = value.numpy()
    return out


def save_checkpoint(cfg: SteerRLConfig, *, policy, preprocessor, postprocessor, algorithm, buffer: ChunkReplayBuffer,
                    collector, actor, counters: dict[str, Any]) -> Path:
    """Write the whole run state for `counters["env_steps"]` (atomically) and point `last` at it."""
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
    buffer.save(state_dir / BUFFER_FILE)
    collector_state = collector.state_dict()
    flat: dict[str, torch.Tensor] = {}
    _flat_obs("obs/", collector_state["obs"], flat)
    for key in ("episode_start", "episode_return", "episode_length"):
        flat[key] = torch.as_tensor(collector_state[key])
    save_file(flat, str(state_dir / "collector.safetensors"))
    (state_dir / "envs.json").write_text(json.dumps(collector_state["sim_states"]))
    history = policy.adapter.history_state()
    save_file({k: v.contiguous() for k, v in history.items()}, str(state_dir / "base_history.safetensors"))
    (state_dir / COUNTERS_FILE).write_text(json.dumps({**counters, "actor_mode": actor.mode}, indent=2))

    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(final)
    for older in final.parent.iterdir():  # only the newest checkpoint keeps the (large) buffer
        if older != final and not older.is_symlink() and older.is_dir():
            (older / TRAINING_STATE_DIR / BUFFER_FILE).unlink(missing_ok=True)
    return final


def _point_last(target: Path) -> None:
    link = target.parent / LAST
    tmp_link = target.parent / f".{LAST}.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, link)


def load_training_state(folder: Path, *, policy, algorithm, buffer: ChunkReplayBuffer, collector, actor) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote (the policy weights are loaded with the policy)."""
    algo_file, state_dir = folder / ALGORITHM_DIR / "model.safetensors", folder / TRAINING_STATE_DIR
    if not (state_dir / BUFFER_FILE).is_file() or not algo_file.is_file():
        raise FileNotFoundError(f"{folder} is not a complete lerobot-steer-rl checkpoint (no {BUFFER_FILE} or algorithm state)")
    algorithm.load_state_dict(load_file(str(algo_file)), device=policy.config.device)
    load_optimizer_state(algorithm.get_optimizers(), state_dir)
    buffer.load_state_dict(load_file(str(state_dir / BUFFER_FILE)))
    flat = load_file(str(state_dir / "collector.safetensors"))
    collector.load_state_dict({
        "obs": _nested_obs(flat, "obs/"),
        **{key: flat[key].numpy() for key in ("episode_start", "episode_return", "episode_length")},
        "sim_states": json.loads((state_dir / "envs.json").read_text()),
    })
    history = load_file(str(state_dir / "base_history.safetensors"))
    policy.adapter.load_history_state(history)
    counters = json.loads((state_dir / COUNTERS_FILE).read_text())
    actor.mode = counters.pop("actor_mode")
    load_rng_state(state_dir)  # last: nothing above may draw random numbers after it
    return counters
