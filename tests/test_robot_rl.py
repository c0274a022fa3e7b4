"""`lerobot-steer-rl-robot`: online DSRL-SAC on a LeRobot robot (here `so101_sim`), episode by episode.

What a user relies on:

* the person's keys are the reward: 1 on the last chunk transition of a success, 0 otherwise, and an
  intervention holds the arm and is never a success;
* the run is saved after every episode and `--resume=true` after a crash continues with every stored
  transition, the counters and the optimizers (only the episode in progress is lost);
* updates happen, and in a background thread they do not slow the control loop beyond its 1/fps budget.

In process on the sim robot with a small front camera (LeRobot's diffusion needs an image or an
environment state), a tiny random-weight diffusion base, keys from `ScriptedKeys`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch
from helpers_bases import info_logging, one_thread, save_camera_diffusion  # noqa: F401  (autouse fixtures)
from safetensors.torch import load_file

from lerobot_steer.policies.dsrl.configuration_dsrl import DSRLConfig
from lerobot_steer.record.eval_config import ResetConfig
from lerobot_steer.record.keys import ScriptedKeys
from lerobot_steer.rl.robot_config import RobotRLConfig
from lerobot_steer.rl.robot_loop import train_on_robot
from lerobot_steer.sim.robot import SimCameraConfig, SO101SimConfig

FPS = 10
H, W = 24, 32


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny random-weight diffusion base: 6 joints and a 24x32 front camera in, 6 joint targets out,
    chunks of 8 with 4 executed."""
    return save_camera_diffusion(tmp_path_factory.mktemp("base") / "pretrained_model", H, W)


def _cfg(tmp_path: Path, base: str, *, episodes: int, resume=False, **kwargs) -> RobotRLConfig:
    kwargs = {"batch_size": 8, "episode_time_s": 1.2, **kwargs}
    cfg = RobotRLConfig(
        robot=SO101SimConfig(cameras={"front": SimCameraConfig(width=W, height=H)}, fps=FPS, seed=0,
                             calibration_dir=tmp_path / "calibration"),
        policy=DSRLConfig(base_policy_path=base, device="cpu", hidden_dims=[32, 32], push_to_hub=False),
        fps=FPS, episodes=episodes, buffer_capacity=1000,
        reset=ResetConfig(time_s=0), play_sounds=False, device="cpu", output_dir=tmp_path / "run", resume=resume,
        **kwargs)
    cfg.outcome.label_wait_s = 0.0
    return cfg


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _buffer(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "training_state" / "replay_buffer.safetensors"))


def _counters(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())


def test_keys_are_the_rewards_and_every_episode_is_checkpointed(tmp_path, base):
    """4 episodes (1 prefill): success, failure, intervention, unlabelled; the buffer's rewards follow the
    keys (1 only on the success's last chunk), each episode leaves a checkpoint, updates happen."""
    keys = ScriptedKeys([
        (0, 5, "s"),      # success after 5 frames (2 chunks: 4 + 1 frames)
        (1, 3, "f"),      # failure
        (2, 6, "space"),  # intervention: the arm holds, reward 0
        # attempt 3: runs its 12 frames, no key: --outcome.default_label (failure)
    ])
    result = train_on_robot(_cfg(tmp_path, base, episodes=4, prefill_episodes=1), key_source=keys)
    run = tmp_path / "run"
    rows = _rows(run)
    assert [(r["label"], r["reward"], r["intervened"], r["frames"]) for r in rows] == [
        ("success", 1.0, False, 5), ("failure", 0.0, False, 3), (f"failure ({'intervened'})", 0.0, True, 6),
        ("failure", 0.0, False, 12)]
    chunks = [r["chunks"] for r in rows]
    assert chunks == [2, 1, 2, 3]
    buffer = _buffer(run)
    n = sum(chunks)
    rewards = buffer["reward"].numpy()
    assert rewards.shape == (n,) and rewards[1] == 1.0 and rewards.sum() == 1.0
    ends = np.cumsum(chunks) - 1
    done, truncated = buffer["done"].numpy(), buffer["truncated"].numpy()
    assert done[ends].tolist() == [True, False, False, False] and truncated[ends].tolist() == [False, True, True, True]
    assert not done[np.setdiff1d(np.arange(n), ends)].any()
    assert buffer["complementary_info.n_steps"].tolist() == [4, 1, 3, 4, 2, 4, 4, 4]
    assert "complementary_info.noise" in buffer and "state.observation.images.front" in buffer
    assert buffer["state.observation.images.front"].dtype == torch.uint8
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [f"{s:09d}" for s in np.cumsum([5, 3, 6, 12])]
    counters = _counters(run)
    assert counters["episodes"] == 4 and counters["transitions"] == n and counters["successes"] == 1
    assert counters["interventions"] == 1
    assert result["updates"] > 0 and counters["updates"] == result["updates"]
    assert (run / "checkpoints" / "last" / "pretrained_model" / "config.json").is_file()
    assert (run / "checkpoints" / "last" / "pretrained_model" / "policy_preprocessor.json").is_file()


def test_dataset_records_the_labelled_episodes_the_learner_stores(tmp_path, base):
    """--dataset.*: the episodes as played, labelled by the same keys; a discarded take is not recorded,
    and the dataset reloads as a LeRobot dataset with the outcome columns."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_steer.record.config import LabelledDatasetRecordConfig
    from lerobot_steer.record.outcome_log import read_outcomes

    keys = ScriptedKeys([(0, 5, "s"), (1, 2, "r"), (2, 3, "f")])  # attempt 1 is discarded and run again
    root = tmp_path / "steered"
    dataset_cfg = LabelledDatasetRecordConfig(repo_id="local/steered", root=root, video=False)
    train_on_robot(_cfg(tmp_path, base, episodes=3, prefill_episodes=1, dataset=dataset_cfg), key_source=keys)
    rows = read_outcomes(root)
    assert [(r["label"], r["length"]) for r in rows] == [("success", 5), ("failure", 3), ("failure", 12)]
    assert [r["label"] for r in _rows(tmp_path / "run")] == ["success", "failure", "failure"]
    dataset = LeRobotDataset("local/steered", root=root, video_backend="pyav")
    assert dataset.num_episodes == 3 and dataset.num_frames == 20 and dataset.fps == FPS
    reward, success = dataset.hf_dataset["next.reward"], dataset.hf_dataset["next.success"]
    assert float(sum(reward)) == 1.0 and bool(success[4]) and not any(bool(x) for x in success[5:])
    assert dataset.meta.tasks.index.tolist() == ["Pick up the red block and place it in the blue bowl."]
    assert {"observation.images.front", "observation.state", "action"} <= set(dataset.features)


def test_resume_after_a_crash_mid_episode_keeps_every_stored_transition(tmp_path, base, monkeypatch):
    """The run dies in episode 2 (an exception from the robot, as a kill would); --resume=true continues
    from episode 2 with the buffer, counters and update count of the checkpoint after episode 1. The
    recording keeps the cut-short episode as interrupted, and the resumed run appends to it."""
    from lerobot_steer.record.config import LabelledDatasetRecordConfig
    from lerobot_steer.record.outcome_log import read_outcomes
    from lerobot_steer.sim.robot import SO101Sim

    root = tmp_path / "steered"

    def dataset_cfg():
        return LabelledDatasetRecordConfig(repo_id="local/steered", root=root, video=False)

    real_send = SO101Sim.send_action
    calls = {"n": 0}

    def dying_send(self, action):
        calls["n"] += 1
        if calls["n"] == 12 + 12 + 5:  # frame 5 of the third episode
            raise RuntimeError("simulated crash")
        return real_send(self, action)

    monkeypatch.setattr(SO101Sim, "send_action", dying_send)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_on_robot(_cfg(tmp_path, base, episodes=4, prefill_episodes=1, label_source="sim", batch_size=4,
                            dataset=dataset_cfg()), key_source=ScriptedKeys([]))
    run = tmp_path / "run"
    before = _counters(run)
    assert before["episodes"] == 2 and before["env_steps"] == 24 and before["transitions"] == 6
    assert before["updates"] > 0
    assert len(_buffer(run)["reward"]) == 6

    monkeypatch.setattr(SO101Sim, "send_action", real_send)
    assert [(r["label"], r["length"]) for r in read_outcomes(root)][-1] == ("interrupted", 4)
    assert len(read_outcomes(root)) == 3
    result = train_on_robot(_cfg(tmp_path, base, episodes=4, prefill_episodes=1, label_source="sim", batch_size=4,
                                 resume=True, dataset=dataset_cfg()), key_source=ScriptedKeys([]))
    after = _counters(run)
    assert after["episodes"] == 4 and after["env_steps"] == 48 and after["transitions"] == 12
    assert after["updates"] > before["updates"] and result["updates"] == after["updates"]
    assert len(_buffer(run)["reward"]) == 12
    assert [r["episode"] for r in _rows(run)] == [0, 1, 2, 3]
    assert len(read_outcomes(root)) == 5  # 2 stored, the interrupted one, then the resumed run's 2


def test_background_updates_run_while_the_arm_acts(tmp_path, base):
    """Real-time pacing at 10 fps with updates in a background thread: the learner updates during the
    episodes (the last episode's row, logged before the end-of-run flush, already counts updates: the
    first episode is prefill and the second's transitions arrive when it ends), the frame statistics are
    logged per episode, and what the thread still owes is paid before the final checkpoint. How well
    the loop keeps its fps budget is a timing, measured side by side in scripts/benchmark_robot_rl.py."""
    cfg = _cfg(tmp_path, base, episodes=3, prefill_episodes=1, updates="background", realtime=True, utd_ratio=8,
               label_source="sim", episode_time_s=1.5)
    result = train_on_robot(cfg, key_source=ScriptedKeys([]))
    rows = _rows(tmp_path / "run")
    assert result["updates"] > 0 and _counters(tmp_path / "run")["updates"] == result["updates"]
    updates = [row["updates"] for row in rows]
    assert updates[-1] > 0 and result["updates"] >= updates[-1], updates
    assert all("frame_ms_p99" in row for row in rows[1:])


def test_an_offline_dsrl_checkpoint_and_dyna_vgd_fine_tune_on_the_arm(tmp_path, base):
    """The documented recipe's step "dsrl offline -> online on the arm": a DSRL-NA checkpoint as
    lerobot-train saves it (variant na, the reference's decoding learner) continues on the sim robot from
    its weights; and dyna_vgd (guided denoising) runs the same loop. Both store, update and checkpoint."""
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_steer.policies.dsrl.modeling_dsrl import DSRLPolicy
    from lerobot_steer.policies.dyna_vgd.configuration_dyna_vgd import DynaVGDConfig
    from lerobot_steer.steering.base_adapter import load_checkpoint_config

    offline = DSRLPolicy(DSRLConfig(base_policy_path=base, device="cpu", hidden_dims=[32, 32], variant="na",
                                    push_to_hub=False))
    folder = tmp_path / "dsrl_offline" / "pretrained_model"
    offline.save_pretrained(folder)
    for processor in make_pre_post_processors(policy_cfg=offline.config):  # as lerobot-train saves them
        processor.save_pretrained(folder)
    cfg = _cfg(tmp_path, base, episodes=3, prefill_episodes=1, label_source="sim", batch_size=4)
    cfg.policy = load_checkpoint_config(str(folder))
    cfg.policy.pretrained_path = folder
    result = train_on_robot(cfg, key_source=ScriptedKeys([]))
    assert result["episodes"] == 3 and result["updates"] > 0
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text())
    assert saved["type"] == "dsrl" and saved["variant"] == "na"

    vgd = _cfg(tmp_path / "vgd", base, episodes=3, prefill_episodes=1, label_source="sim", batch_size=4)
    vgd.policy = DynaVGDConfig(base_policy_path=base, device="cpu", hidden_dims=[32, 32], push_to_hub=False)
    result = train_on_robot(vgd, key_source=ScriptedKeys([]))
    assert result["episodes"] == 3 and result["updates"] > 0
    assert _counters(tmp_path / "vgd" / "run")["transitions"] == sum(r["chunks"] for r in _rows(tmp_path / "vgd" / "run"))
