"""`lerobot-steer-generate`: write scripted-expert episodes of the sim task as a LeRobot v3 dataset.

Not paced to real time: it runs the physics and the renderer as fast as the CPU allows. The dataset
has the columns of a real SO-101 recording (`observation.state`, `action`, `observation.images.<cam>`
with the motor names, 30 fps, the task string) plus `next.reward`, `next.success`, `next.done` and,
when the env exposes it, the privileged `observation.environment_state`.

    lerobot-steer-generate --repo_id=local/so101_pick_place --root=outputs/data/so101 --num_episodes=50

Failed expert episodes are discarded unless `--keep_failures=true`; the expert's success rate and
failure taxonomy are printed and saved next to the dataset as `generation_report.json`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import draccus
import numpy as np
from tqdm import tqdm

from lerobot_steer.cli_errors import mark_user_error, run_command
from lerobot_steer.sim.expert import ScriptedExpert
from lerobot_steer.sim.pick_place_env import (
    ENV_STATE_DIM,
    ENV_STATE_NAMES,
    OUTCOMES,
    SUCCESS,
    PickPlaceConfig,
    SO101PickPlaceEnv,
)
from lerobot_steer.sim.units import MOTOR_KEYS

logger = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    repo_id: str = "local/so101_sim_pick_place"
    # Where the dataset is written; default: $HF_LEROBOT_HOME/<repo_id>. Must not exist yet.
    root: str | None = None
    num_episodes: int = 50
    seed: int = 0
    env: PickPlaceConfig = field(default_factory=lambda: PickPlaceConfig(obs_type="pixels_state"))
    # Keep episodes where the expert failed (labelled by next.success = False throughout).
    keep_failures: bool = False
    # Frames recorded after the block first rests in the bowl (the retreat), then the episode ends.
    frames_after_success: int = 10
    # Give up after this many attempts per requested episode (the expert succeeds > 90 % of the time).
    max_attempts_factor: float = 2.0
    use_videos: bool = True
    push_to_hub: bool = False
    private: bool = False

    def __post_init__(self):
        if self.num_episodes <= 0:
            raise ValueError(f"num_episodes={self.num_episodes} must be at least 1.")
        if self.frames_after_success < 0:
            raise ValueError(f"frames_after_success={self.frames_after_success} must be >= 0.")


def dataset_features(env_cfg: PickPlaceConfig, use_videos: bool = True) -> dict:
    """LeRobot dataset features of a sim recording (names as a real so101_follower records them)."""
    motors = list(MOTOR_KEYS)
    state_names = motors + (list(ENV_STATE_NAMES) if env_cfg.state_includes_objects else [])
    features = {
        "observation.state": {"dtype": "float32", "shape": (len(state_names),), "names": state_names},
        "action": {"dtype": "float32", "shape": (6,), "names": motors},
    }
    if env_cfg.uses_env_state:
        features["observation.environment_state"] = {"dtype": "float32", "shape": (ENV_STATE_DIM,),
                                                      "names": list(ENV_STATE_NAMES)}
    if env_cfg.uses_pixels:
        for cam in env_cfg.cameras:
            features[f"observation.images.{cam}"] = {
                "dtype": "video" if use_videos else "image",
                "shape": (env_cfg.image_height, env_cfg.image_width, 3),
                "names": ["height", "width", "channels"],
            }
    features["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    features["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    features["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


def observation_to_frame(obs: dict) -> dict:
    frame = {"observation.state": obs["agent_pos"]}
    if "environment_state" in obs:
        frame["observation.environment_state"] = obs["environment_state"]
    for cam, img in obs.get("pixels", {}).items():
        frame[f"observation.images.{cam}"] = img
    return frame


def run_expert_episode(env: SO101PickPlaceEnv, expert: ScriptedExpert, seed: int, frames_after_success: int,
                       on_frame=None) -> str:
    """One expert episode; calls `on_frame(frame)` per step with the dataset columns. Returns its outcome."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
    success_at = None
    for t in range(env.config.episode_length):
        action = expert.act(env)
        next_obs, reward, terminated, truncated, info = env.step(action)
        success = bool(info["is_success"])
        if success and success_at is None:
            success_at = t
        done = terminated or truncated or (success_at is not None and t >= success_at + frames_after_success)
        if on_frame is not None:
            frame = observation_to_frame(obs)
            frame["action"] = action.astype(np.float32)
            frame["next.reward"] = np.array([reward], dtype=np.float32)
            frame["next.success"] = np.array([success])
            frame["next.done"] = np.array([done])
            on_frame(frame)
        obs = next_obs
        if done:
            break
    return env.outcome()


def generate(cfg: GenerateConfig):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.utils.constants import HF_LEROBOT_HOME

    root = Path(cfg.root) if cfg.root else HF_LEROBOT_HOME / cfg.repo_id
    if root.exists():
        raise mark_user_error(FileExistsError(f"--root={root} already exists: choose a new folder or delete it."))
    env_cfg = cfg.env
    env_cfg.terminate_on_success = False  # the expert retreats after placing; we end the episode ourselves
    env = SO101PickPlaceEnv(config=env_cfg)
    expert = ScriptedExpert(env.model, fps=env_cfg.fps)
    dataset = LeRobotDataset.create(
        repo_id=cfg.repo_id,
        fps=env_cfg.fps,
        features=dataset_features(env_cfg, cfg.use_videos),
        root=root,
        robot_type="so101_sim",
        use_videos=cfg.use_videos,
        video_backend="pyav",
    )
    outcomes: Counter = Counter()
    saved, attempts = 0, 0
    max_attempts = int(np.ceil(cfg.num_episodes * cfg.max_attempts_factor))
    t0 = time.perf_counter()
    task = env_cfg.task_description

    def add(frame):
        frame["task"] = task
        dataset.add_frame(frame)

    progress = tqdm(total=cfg.num_episodes, desc="expert episodes", unit="ep")
    try:
        while saved < cfg.num_episodes and attempts < max_attempts:
            outcome = run_expert_episode(env, expert, cfg.seed + attempts, cfg.frames_after_success, on_frame=add)
            attempts += 1
            outcomes[outcome] += 1
            if outcome == SUCCESS or cfg.keep_failures:
                dataset.save_episode()
                saved += 1
                progress.update(1)
            else:
                dataset.clear_episode_buffer()
            progress.set_postfix(success=f"{outcomes[SUCCESS] / attempts:.0%}")
    finally:
        progress.close()
        dataset.finalize()  # always: episodes saved so far stay readable after an interruption
        env.close()
    elapsed = time.perf_counter() - t0
    report = {
        "repo_id": cfg.repo_id,
        "root": str(root),
        "episodes_saved": saved,
        "attempts": attempts,
        "expert_success_rate": outcomes[SUCCESS] / max(attempts, 1),
        "outcomes": {k: outcomes.get(k, 0) for k in OUTCOMES},
        "frames": dataset.meta.total_frames,
        "seconds": round(elapsed, 1),
        "episodes_per_minute": round(60 * attempts / max(elapsed, 1e-9), 1),
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    (root / "generation_report.json").write_text(json.dumps(report, indent=2))
    print(
        f"Expert: {outcomes[SUCCESS]}/{attempts} successful ({report['expert_success_rate']:.0%}); "
        f"outcomes {report['outcomes']}; saved {saved} episodes, {report['frames']} frames to {root} "
        f"in {elapsed:.0f} s ({report['episodes_per_minute']} episodes/min)."
    )
    if saved < cfg.num_episodes:
        raise RuntimeError(f"Only {saved}/{cfg.num_episodes} episodes after {attempts} attempts; see {root}/generation_report.json.")
    if cfg.push_to_hub:
        dataset.push_to_hub(private=cfg.private)
    return dataset, report


def main():
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("MUJOCO_GL", "egl")
    # User errors (bad flags, an existing --root): `error: <message>`, exit 2.
    run_command(lambda: generate(draccus.parse(config_class=GenerateConfig)))


if __name__ == "__main__":
    main()
