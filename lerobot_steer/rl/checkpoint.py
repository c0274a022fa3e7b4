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

A checkpoint is written to a temporary folder, flushed to disk and renamed into place, so a kill or
a crash during the write leaves the previous checkpoint intact; `last` moves only after the rename.
The replay buffer is the large part: only the two newest checkpoints keep it, so that when the
newest is damaged anyway (a deleted folder, a truncated file) `--resume=true` falls back to the one
before it (`resume_checkpoint`), naming what it skipped. Weights that are not finite are never
saved (`check_finite_weights`): `last` stays on the last sound checkpoint of a diverged run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import draccus
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lerobot.optim.optimizers import load_optimizer_state, save_optimizer_state
from lerobot.utils.constants import PRETRAINED_MODEL_DIR
from lerobot.utils.random_utils import load_rng_state, save_rng_state

from .config import TRAIN_CONFIG_NAME, SteerRLConfig
from .replay_buffer import ChunkReplayBuffer
from .run_guard import RunStopped

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR, LAST = "checkpoints", "last"
ALGORITHM_DIR, TRAINING_STATE_DIR = "algorithm", "training_state"
BUFFER_FILE = "replay_buffer.safetensors"
OFFLINE_SAMPLER_FILE = "offline_sampler.safetensors"
COUNTERS_FILE = "training_step.json"
# What a resume reads besides the optimizer folders (checked against the algorithm's optimizers on load).
REQUIRED_FILES = (
    f"{PRETRAINED_MODEL_DIR}/config.json", f"{PRETRAINED_MODEL_DIR}/{TRAIN_CONFIG_NAME}",
    f"{PRETRAINED_MODEL_DIR}/model.safetensors", f"{ALGORITHM_DIR}/model.safetensors",
    *(f"{TRAINING_STATE_DIR}/{name}" for name in (COUNTERS_FILE, BUFFER_FILE, "rng_state.safetensors",
                                                   "collector.safetensors", "envs.json", "base_history.safetensors")),
)


class CorruptCheckpoint(RunStopped):
    """No checkpoint of the run can be resumed from (each problem named)."""


class TrainingDiverged(RunStopped):
    """Losses or weights stopped being finite."""


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


def _numbered_checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoint folders, newest (largest env step) first; `last` and temporary folders aside."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.isdigit() and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(p.name), reverse=True)


def resume_checkpoint(output_dir: Path, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """The newest checkpoint whose files are all there and all load.

    `last` alone is not trusted: a folder deleted by hand, or files truncated by a crash or a full
    disk, would end the run's ability to resume. Each newer checkpoint skipped is logged with every
    damaged file and what is wrong with it; with none left, the error lists them all.
    """
    candidates = _numbered_checkpoints(output_dir)
    if not candidates:
        last_checkpoint(output_dir)  # raises, naming the fix
    skipped: list[str] = []
    for folder in candidates:
        problems = checkpoint_problems(folder, required)
        if not problems:
            return folder
        report = "\n  ".join(problems)
        logger.warning("Not resuming from %s, it is damaged:\n  %s", folder, report)
        skipped.append(f"{folder}:\n  {report}")
    raise CorruptCheckpoint(
        f"no checkpoint of {output_dir} can be resumed from:\n" + "\n".join(skipped) + "\nStart a new run with "
        "another --output_dir (--policy.path=<a checkpoint>/pretrained_model keeps its weights, if they load)."
    )


def checkpoint_problems(folder: Path, required: tuple[str, ...] = REQUIRED_FILES) -> list[str]:
    """Why `folder` cannot resume a run, one "<path>: <what>" per file: missing files (of `required`,
    the run's own list), and files that do not load (a truncated safetensors file, half-written
    JSON). Empty when it can. Reads only the safetensors headers, which is enough to see a truncated file."""
    problems = []
    for name in required:
        if not (folder / name).is_file():
            why = " (only the two newest checkpoints keep the replay buffer)" if name.endswith(BUFFER_FILE) else ""
            problems.append(f"{folder / name}: missing{why}")
    for path in sorted(folder.rglob("*")):
        problem = _load_problem(path) if path.suffix in (".json", ".safetensors") and path.is_file() else None
        if problem:
            problems.append(f"{path}: {problem}")
    return problems


def _load_problem(path: Path) -> str | None:
    """What is wrong with one checkpoint file, or None when it loads."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            with safe_open(str(path), framework="pt"):
                pass
    except OSError as e:
        return f"cannot be read ({e})"
    except SafetensorError as e:
        return f"not a complete safetensors file ({e})"
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return f"not valid JSON ({e})"
    return None


def check_resumable(cfg: SteerRLConfig, folder: Path) -> None:
    """A resumed run continues the saved buffer (and, local to local, the envs) exactly, so their
    sizes cannot change; refused before anything is built or written."""
    saved = json.loads((folder / PRETRAINED_MODEL_DIR / TRAIN_CONFIG_NAME).read_text())
    # Only a local run resumed locally continues its envs' episodes; with Ray on either side they restart.
    same_envs = saved.get("runtime", "local") == "local" and getattr(cfg, "runtime", "local") == "local"
    for name in ("n_envs", "buffer_capacity") if same_envs else ("buffer_capacity",):
        if name in saved and saved[name] != getattr(cfg, name):
            raise ValueError(
                f"--{name}={getattr(cfg, name)} differs from the run's {saved[name]}: --resume=true continues the "
                f"saved envs and replay buffer as they were. Drop --{name}, or start a new run in another "
                f"--output_dir (--policy.path={folder / PRETRAINED_MODEL_DIR} continues from its weights)."
            )


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
                    collector, actor, counters: dict[str, Any], offline: ChunkReplayBuffer | None = None) -> Path:
    """Write the whole run state for `counters["env_steps"]` (atomically) and point `last` at it.
    Refused, before anything is written, when a trained weight is not finite."""

    def write_state(state_dir: Path) -> None:
        buffer.save(state_dir / BUFFER_FILE)
        if offline is not None:  # its rows are re-read from the dataset on resume; its sampling stream is not
            save_file({"rng_state": offline.generator.get_state(), "size": torch.tensor(len(offline))},
                      str(state_dir / OFFLINE_SAMPLER_FILE))
        save_collector_state(collector, state_dir)
        history = policy.adapter.history_state()
        save_file({k: v.contiguous() for k, v in history.items()}, str(state_dir / "base_history.safetensors"))
        (state_dir / COUNTERS_FILE).write_text(json.dumps({**counters, "actor_mode": actor.mode}, indent=2))

    final = write_checkpoint(cfg, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                             algorithm=algorithm, env_steps=counters["env_steps"], write_state=write_state)
    _prune_buffers(final)
    return final


def write_checkpoint(cfg, *, policy, preprocessor, postprocessor, algorithm, env_steps: int,
                     write_state: Callable[[Path], None]) -> Path:
    """The checkpoint layout every trainer shares, written atomically for `env_steps`: the policy, its
    processors and the run's config, the algorithm's tensors, the optimizers and the RNG state, then
    `write_state(training_state_dir)` for the trainer's own files (buffer, collector, counters); flushed,
    renamed into place and pointed at by `last`. Refused, before anything is written, when a trained
    weight is not finite."""
    check_finite_weights(policy, algorithm, env_steps)
    final = checkpoint_dir(cfg.output_dir, env_steps)
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
    write_state(state_dir)

    _sync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(final)
    return final


def save_collector_state(collector, state_dir: Path) -> None:
    """collector.safetensors (the vector env's observations and episode counters) and envs.json (each
    sim's exact state), what `ChunkCollector.state_dict()` holds."""
    collector_state = collector.state_dict()
    flat: dict[str, torch.Tensor] = {}
    _flat_obs("obs/", collector_state["obs"], flat)
    for key in ("episode_start", "episode_return", "episode_length"):
        flat[key] = torch.as_tensor(collector_state[key])
    save_file(flat, str(state_dir / "collector.safetensors"))
    (state_dir / "envs.json").write_text(json.dumps(collector_state["sim_states"]))


def load_collector_state(collector, state_dir: Path) -> None:
    """Put the collector's envs back where `save_collector_state` found them."""
    flat = load_file(str(state_dir / "collector.safetensors"))
    collector.load_state_dict({
        "obs": _nested_obs(flat, "obs/"),
        **{key: flat[key].numpy() for key in ("episode_start", "episode_return", "episode_length")},
        "sim_states": json.loads((state_dir / "envs.json").read_text()),
    })


def _restore_offline_sampler(offline: ChunkReplayBuffer, path: Path) -> None:
    """The offline buffer's sampling RNG as saved, after checking it holds the rows it held then."""
    if not path.is_file():
        raise CorruptCheckpoint(f"{path}: missing (the run mixed offline data; resume it with the same --dataset.*)")
    saved = load_file(str(path))
    if int(saved["size"]) != len(offline):
        raise ValueError(f"the offline dataset now gives {len(offline)} chunk transitions, the run was trained with "
                         f"{int(saved['size'])}: resume with the dataset (and --dataset.episodes) it used")
    offline.generator.set_state(saved["rng_state"].clone())


def check_finite_weights(policy, algorithm, env_steps: int) -> None:
    """Raise `TrainingDiverged` naming the first trained tensors that hold NaN or inf (the frozen base
    never changes and is not scanned)."""
    tensors = {f"policy.{n}": p for n, p in policy.named_parameters() if p.requires_grad}
    tensors.update({f"algorithm.{n}": t for n, t in algorithm.state_dict().items()})
    bad = [name for name, t in tensors.items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingDiverged(
            f"not saving the checkpoint of env step {env_steps}: {', '.join(bad[:5])}"
            f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''} hold NaN or inf. Training diverged; "
            "checkpoints/last stays on the last finite checkpoint. Lower the learning rates (--policy.*_lr) "
            "or --utd_ratio and start again."
        )


def _sync_tree(folder: Path) -> None:
    """Flush every file of `folder` to disk before it is renamed into place: a rename can reach the disk
    before the data, and a crash then leaves a complete-looking checkpoint of empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())


def _prune_buffers(final: Path) -> None:
    """Drop the replay buffer from every checkpoint older than the two newest up to `final`, so a
    damaged newest checkpoint still leaves one to resume from. Newer folders (left by an abandoned
    timeline after a fallback resume) are overwritten when this run reaches their step."""
    older = [p for p in _numbered_checkpoints(final.parent.parent) if int(p.name) < int(final.name)]
    for folder in older[1:]:
        (folder / TRAINING_STATE_DIR / BUFFER_FILE).unlink(missing_ok=True)


def _point_last(target: Path) -> None:
    link = target.parent / LAST
    tmp_link = target.parent / f".{LAST}.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, link)


def load_training_state(folder: Path, *, policy, algorithm, buffer: ChunkReplayBuffer, collector, actor,
                        offline: ChunkReplayBuffer | None = None) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote (the policy weights are loaded with the policy).
    `offline`: the run's offline data, already re-read from its dataset; its sampling stream is restored."""
    state_dir = load_algorithm_state(folder, policy=policy, algorithm=algorithm)
    buffer.load_state_dict(load_file(str(state_dir / BUFFER_FILE)))
    if offline is not None:
        _restore_offline_sampler(offline, state_dir / OFFLINE_SAMPLER_FILE)
    load_collector_state(collector, state_dir)
    history = load_file(str(state_dir / "base_history.safetensors"))
    policy.adapter.load_history_state(history)
    counters = json.loads((state_dir / COUNTERS_FILE).read_text())
    actor.mode = counters.pop("actor_mode")
    load_rng_state(state_dir)  # last: nothing above may draw random numbers after it
    return counters


def load_algorithm_state(folder: Path, *, policy, algorithm, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """The first step of every trainer's resume: refuse a checkpoint missing any of `required` or an
    optimizer's state (`CorruptCheckpoint`, naming each problem), then load the algorithm's tensors and
    its optimizers. Returns the checkpoint's training_state folder for the trainer's own files."""
    algo_file, state_dir = folder / ALGORITHM_DIR / "model.safetensors", folder / TRAINING_STATE_DIR
    problems = checkpoint_problems(folder, required)
    problems += [f"{state_dir / name}: missing (optimizer state)" for name in algorithm.get_optimizers()
                 if not (state_dir / name).is_dir()]
    if problems:
        raise CorruptCheckpoint(f"{folder} cannot be resumed from:\n  " + "\n  ".join(problems))
    algorithm.load_state_dict(load_file(str(algo_file)), device=policy.config.device)
    load_optimizer_state(algorithm.get_optimizers(), state_dir)
    return state_dir
