"""`lerobot-steer-eval-real`: checkpoints compared on a robot, episodes labelled by key or by the sim.

What a user relies on:

* the keys pressed become the dataset's reward columns, one `meta/outcomes.jsonl` row per episode with
  its checkpoint and round, and the report's counts; unlabelled episodes are kept but not counted;
* with `--label_source=sim` the statistics are the sim's ground truth (success rate, Wilson interval,
  failure taxonomy, paired McNemar test);
* the checkpoints take turns within each round, and on so101_sim round i is the same seeded scene for
  every checkpoint;
* a checkpoint that does not fit the robot is refused, naming the feature and the fix, before anything
  connects or moves (the sim and a real so101_follower config);
* Ctrl-C keeps the finished episodes and the report; `--resume=true` runs what is left;
* the resets (start pose, leader arm) run between episodes, outside the recorded frames.

Runs in process on the `so101_sim` robot with no camera (state only), at 10 fps so the scripted expert
succeeds in ~45 frames, with keys from `ScriptedKeys`. Policies: `builtin:expert` / `builtin:hold`
through `evaluation/loading.py`, and a tiny DiffusionPolicy built from config and saved as a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import draccus
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_bases import (  # noqa: F401  (info_logging, one_thread: autouse fixtures)
    info_logging,
    one_thread,
    save_base,
    save_camera_diffusion,
    tiny_diffusion,
)

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.datasets import LeRobotDataset

from lerobot_steer.cli_errors import is_user_error
from lerobot_steer.config_error import ConfigError
from lerobot_steer.evaluation.checks import FeatureMismatchError
from lerobot_steer.evaluation.stats import paired_comparison, wilson_interval
from lerobot_steer.record.eval_cli import EvaluationInterrupted, evaluate_real
from lerobot_steer.record.eval_config import (
    DEFAULT_MAX_RELATIVE_TARGET,
    EvalDatasetConfig,
    EvalRealConfig,
    ResetConfig,
)
from lerobot_steer.record.evaluate import SESSION_FILE, evaluate_on_robot, schedule
from lerobot_steer.record.keys import ScriptedKeys
from lerobot_steer.record.outcome_log import read_outcomes
from lerobot_steer.sim.robot import SimCameraConfig, SO101Sim, SO101SimConfig
from lerobot_steer.sim.teleop import SO101SimExpert, SO101SimExpertConfig

FPS = 10
TASK = "Pick up the red block and place it in the blue bowl."
STATE, FRONT = "observation.state", "observation.images.front"
DIFF = "tiny@000002"  # the label of the diffusion checkpoint (<run>@<step>)
H, W = 24, 32  # the camera of the diffusion checkpoint (rendered by the sim robot when a test uses it)


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> str:
    """A tiny random-weight DiffusionPolicy checkpoint: the arm's joints and a small front camera in (LeRobot's
    diffusion needs an image or an environment state), joint targets out."""
    folder = tmp_path_factory.mktemp("train") / "tiny" / "checkpoints" / "000002" / "pretrained_model"
    return save_camera_diffusion(folder, H, W)


@pytest.fixture
def scenes(monkeypatch) -> list[tuple[int | None, tuple]]:
    """(seed, block and bowl pose) of every scene the sim robot draws."""
    drawn = []
    reset_scene = SO101Sim.reset_scene

    def spy(self, seed=None):
        reset_scene(self, seed=seed)
        drawn.append((seed, tuple(np.round(np.r_[self.env.block_pose()[:3], self.env.bowl_position()[:2]], 6))))

    monkeypatch.setattr(SO101Sim, "reset_scene", spy)
    return drawn


def _cfg(tmp_path, name: str, policies: list[str], *, rounds: int, resume=False, episode_time_s=5.0,
         reset=None, teleop=None, camera=False, **kwargs) -> EvalRealConfig:
    cameras = {"front": SimCameraConfig(width=W, height=H)} if camera else {}
    cfg = EvalRealConfig(
        robot=SO101SimConfig(cameras=cameras, fps=FPS, seed=0, calibration_dir=tmp_path / "calibration"),
        teleop=teleop,
        dataset=EvalDatasetConfig(repo_id=f"local/{name}", root=str(tmp_path / name), single_task=TASK, fps=FPS,
                                  episode_time_s=episode_time_s, num_episodes=rounds, video=False, no_stamp=True),
        policy_paths=policies, reset=reset or ResetConfig(time_s=0), play_sounds=False, resume=resume,
        device="cpu", **kwargs)
    cfg.outcome.label_wait_s = 0.0
    return cfg


def _frames(root) -> dict[str, np.ndarray]:
    tables = [pq.read_table(f) for f in sorted(Path(root).glob("data/**/*.parquet"))]
    return {name: np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for t in tables])
            for name in tables[0].column_names}


def _report(root) -> dict:
    return json.loads((Path(root) / "eval" / "eval_report.json").read_text())


def _checkpoint(report: dict, label: str) -> dict:
    return next(c for c in report["checkpoints"] if c["label"] == label)


# ------------------------------------------------------------------------------ labels, order, scenes


def test_keys_label_interleaved_episodes_on_the_same_scene_per_round(tmp_path, diffusion, scenes):
    """hold and the diffusion take turns over 3 rounds; keys label them (one re-run with left arrow, one
    episode left unlabelled); the dataset, outcome rows and report follow the keys exactly."""
    keys = ScriptedKeys([
        (0, 3, "s"),     # round 0, hold: success at frame 3 (4 frames)
        (1, 2, "3"),     # round 0, diffusion: failure, reason 3 (missed_bowl)
        (2, 1, "left"),  # round 1, hold: discarded, run again
        (3, 4, "f"),     # round 1, hold again: failure, no reason
        (4, 2, "s"),     # round 1, diffusion: success
        (5, 2, "n"),     # round 2, hold: ended, never labelled -> kept, not counted
        (6, 1, "2"),     # round 2, diffusion: failure, reason 2 (dropped_during_transport)
    ])
    cfg = _cfg(tmp_path, "keys", ["builtin:hold", diffusion], rounds=3, camera=True)
    report = evaluate_on_robot(cfg, key_source=keys)
    root = tmp_path / "keys"
    diff = DIFF

    rows = read_outcomes(root)
    assert [(r["policy"], r["round"], r["label"], r["reason"], r["length"]) for r in rows] == [
        ("builtin:hold", 0, "success", None, 4), (diff, 0, "failure", "missed_bowl", 3),
        ("builtin:hold", 1, "failure", None, 5), (diff, 1, "success", None, 3),
        ("builtin:hold", 2, "unlabelled", None, 3), (diff, 2, "failure", "dropped_during_transport", 2)]
    assert all(r["sim_outcome"] == "never_picked_up" for r in rows)  # the sim's view, kept beside the keys
    # The reward columns, as lerobot-steer-record writes them.
    data = LeRobotDataset("local/keys", root=root)
    assert data.meta.total_episodes == 6 and data.meta.total_frames == 4 + 3 + 5 + 3 + 3 + 2
    frames = _frames(root)
    ends = np.cumsum([4, 3, 5, 3, 3, 2]) - 1
    assert np.flatnonzero(frames["next.done"]).tolist() == ends.tolist()
    assert np.flatnonzero(frames["next.success"]).tolist() == [ends[0], ends[3]]
    assert frames["next.reward"][ends].tolist() == [1, 0, 0, 1, 0, 0]

    # The report: counted labels only, Wilson intervals and the paired test on the rounds both have.
    hold, policy = _checkpoint(report, "builtin:hold"), _checkpoint(report, diff)
    assert (hold["summary"]["successes"], hold["summary"]["n_episodes"]) == (1, 2)
    assert hold["summary"]["ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert hold["not_counted"] == {"unlabelled": 1, "interrupted": 0}
    assert (policy["summary"]["successes"], policy["summary"]["n_episodes"]) == (1, 3)
    assert policy["summary"]["ci95"] == pytest.approx(list(wilson_interval(1, 3)))
    assert policy["summary"]["outcomes"]["missed_bowl"] == 1 and policy["summary"]["outcomes"]["dropped_during_transport"] == 1
    assert hold["summary"]["outcomes"]["failure"] == 1  # a failure with no reason has its own column
    assert policy["summary"]["mean_steps_to_success"] == 3  # up to the success key
    [pair] = report["paired"]
    assert pair["n_pairs"] == 2 and pair == {"reference": "builtin:hold", "candidate": diff, "n_pairs": 2,
                                             **paired_comparison([True, False], [False, True])}
    assert report == _report(root)
    table = (root / "eval" / "results.md").read_text()
    assert "| builtin:hold | 50.0 % (1/2) |" in table and "| failure |" in table and "1 unlabelled" in table
    assert (root / "eval" / "success_rates.png").stat().st_size > 0

    # Every take drew its round's scene: the same for both checkpoints (and the re-run), new each round.
    assert [seed for seed, _ in scenes[1:]] == [1000, 1000, 1001, 1001, 1001, 1002, 1002]  # [0]: at connect
    poses = {}
    for seed, pose in scenes[1:]:
        assert poses.setdefault(seed, pose) == pose
    assert len(set(poses.values())) == 3
    # ... and it is the scene lerobot-steer-eval's episode of the same seed meets (the so101_sim env).
    from lerobot_steer.sim.pick_place_env import PickPlaceConfig, SO101PickPlaceEnv

    env = SO101PickPlaceEnv(PickPlaceConfig(obs_type="state"))
    env.reset(seed=1001)
    assert poses[1001] == tuple(np.round(np.r_[env.block_pose()[:3], env.bowl_position()[:2]], 6))
    env.close()


def test_sim_labels_are_the_sims_ground_truth_and_the_statistics_follow(tmp_path, diffusion):
    """The expert succeeds on every scene, the random-weight diffusion and hold never pick the block up;
    a key pressed anyway does not label an episode, and one it cuts short is not counted."""
    keyed_attempt = schedule(3, 3, "random", 7).index((0, 1))  # round 0's diffusion episode
    keys = ScriptedKeys([(keyed_attempt, 5, "s")])  # a wrong key label: it ends the episode, labels nothing
    cfg = _cfg(tmp_path, "sim", ["builtin:expert", diffusion, "builtin:hold"], rounds=3, label_source="sim",
               order="random", seed=7, camera=True)
    report = evaluate_on_robot(cfg, key_source=keys)
    root = tmp_path / "sim"
    rows = read_outcomes(root)
    labels = ["builtin:expert", DIFF, "builtin:hold"]
    assert [(r["round"], r["policy"]) for r in rows] == [(r, labels[i]) for r, i in schedule(3, 3, "random", 7)]
    keyed = next(r for r in rows if r["round"] == 0 and r["policy"] == DIFF)
    # Cut short by the key: the sim cannot judge it, so it is kept but not counted (and re-run on resume).
    assert (keyed["label"], keyed["key_label"], keyed["length"]) == ("interrupted", "success", 6)
    finished = [r for r in rows if r is not keyed]
    for row in finished:  # the label is the sim's own outcome
        assert row["label"] == ("success" if row["sim_outcome"] == "success" else "failure")
        assert row["reason"] == (None if row["success"] else row["sim_outcome"])
    assert all(row["scene_seed"] == 7 + row["round"] for row in rows)
    expert = [r for r in rows if r["policy"] == "builtin:expert"]
    assert all(r["success"] and r["length"] == r["sim_steps_to_success"] <= 50 for r in expert)

    by_label = {c["label"]: c["summary"] for c in report["checkpoints"]}
    assert _checkpoint(report, DIFF)["not_counted"]["interrupted"] == 1
    for label in labels:
        mine = [r for r in finished if r["policy"] == label]
        k, n = sum(r["sim_outcome"] == "success" for r in mine), len(mine)
        assert (by_label[label]["successes"], by_label[label]["n_episodes"]) == (k, n) and n == (2 if label == DIFF else 3)
        assert by_label[label]["ci95"] == pytest.approx(list(wilson_interval(k, n)))
        for outcome in ("never_picked_up", "dropped_during_transport", "missed_bowl", "timeout"):
            assert by_label[label]["outcomes"][outcome] == sum(r["sim_outcome"] == outcome for r in mine)
    assert by_label["builtin:expert"]["success_rate"] == 1.0 and by_label["builtin:hold"]["successes"] == 0
    assert by_label["builtin:expert"]["mean_steps_to_success"] == pytest.approx(
        np.mean([r["sim_steps_to_success"] for r in expert]))
    pairs = {(p["reference"], p["candidate"]): p for p in report["paired"]}
    assert set(pairs) == {(labels[0], labels[1]), (labels[0], labels[2]), (labels[1], labels[2])}
    assert pairs[labels[0], labels[1]]["n_pairs"] == 2  # the rounds both finished
    assert (pairs[labels[0], labels[2]]["lost"], pairs[labels[0], labels[2]]["p_value"]) == (3, 0.25)
    assert report["seeds"] == [7, 8, 9] and "scene seeds 7–9" in report["title"]


def test_blind_sessions_never_name_the_running_checkpoint_until_the_end(tmp_path, capsys):
    """--blind: a seeded random order, episode lines without the checkpoint's name or its counts; the
    dataset and the final report still say which ran."""
    cfg = _cfg(tmp_path, "blind", ["builtin:expert", "builtin:hold"], rounds=2, label_source="sim", blind=True,
               episode_time_s=3.0)
    assert cfg.order == "random"
    report = evaluate_on_robot(cfg, key_source=ScriptedKeys([]))
    episode_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("episode")]
    assert len(episode_lines) == 8  # a start line and a saved line per episode
    assert not any("builtin:" in line for line in episode_lines), episode_lines
    assert sorted(r["policy"] for r in read_outcomes(tmp_path / "blind")) == ["builtin:expert"] * 2 + ["builtin:hold"] * 2
    assert {c["label"] for c in report["checkpoints"]} == {"builtin:expert", "builtin:hold"}


def test_schedule_interleaves_every_checkpoint_in_every_round():
    assert schedule(2, 3, "interleaved", 0) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    shuffled = schedule(20, 3, "random", 5)
    assert shuffled == schedule(20, 3, "random", 5)  # seeded: a resumed session continues the same order
    rounds = [[i for r, i in shuffled if r == k] for k in range(20)]
    assert all(sorted(order) == [0, 1, 2] for order in rounds) and len({tuple(o) for o in rounds}) > 1


# ------------------------------------------------------------------------------ refusals


def test_a_policy_that_does_not_fit_the_robot_is_refused_before_anything_moves(tmp_path, monkeypatch):
    """A camera policy with 2-d actions on an arm with no camera; every problem named with its fix."""
    import torch

    calls = []
    monkeypatch.setattr(SO101Sim, "connect", lambda self, calibrate=True: calls.append("connect"))
    monkeypatch.setattr(SO101Sim, "send_action", lambda self, action: calls.append("send_action"))
    torch.manual_seed(0)
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,)), FRONT: PolicyFeature(FeatureType.VISUAL, (3, H, W))}
    folder = save_base(*tiny_diffusion(inputs, action_dim=2, crop_shape=None), tmp_path / "camera_policy")
    cfg = _cfg(tmp_path, "refused", ["builtin:hold", str(folder)], rounds=1)
    with pytest.raises(FeatureMismatchError) as err:
        evaluate_real(cfg, key_source=ScriptedKeys([]))
    message = str(err.value)
    assert is_user_error(err.value) and "nothing was moved" in message
    assert "missing camera 'observation.images.front'" in message and "--robot.cameras='{front:" in message
    assert "wrong action dim for 'action': the base expects (2,), got (6,)" in message
    assert calls == [] and not (tmp_path / "refused").exists()


def test_a_real_arm_gets_the_safety_cap_and_is_refused_a_sim_only_policy_before_it_connects(tmp_path):
    """so101_follower config (no arm here): max_relative_target is set by default, and builtin:expert
    (which reads the sim's scene) is refused before the serial port is opened."""
    from lerobot.robots.so_follower import SO101FollowerConfig

    cfg = _cfg(tmp_path, "real", ["builtin:expert"], rounds=1)
    cfg.robot = SO101FollowerConfig(port="/dev/null/not_a_port", id="test_arm", calibration_dir=tmp_path / "cal")
    with pytest.raises(FeatureMismatchError, match="so101_sim only"):
        evaluate_on_robot(cfg, key_source=ScriptedKeys([]))
    assert cfg.robot.max_relative_target == DEFAULT_MAX_RELATIVE_TARGET
    sim = _cfg(tmp_path, "sim_cap", ["builtin:hold"], rounds=1)
    assert sim.apply_safety_defaults() is None  # the sim keeps lerobot-steer-eval's dynamics


def test_a_missing_port_camera_or_calibration_is_refused_before_anything_connects(tmp_path, monkeypatch):
    """A real arm whose serial port, camera device or calibration file is missing: one error naming the
    flag and the LeRobot command that fixes it, before connect() (which would trace back or start the
    interactive calibration)."""
    from lerobot.cameras.opencv import OpenCVCameraConfig
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    monkeypatch.setattr(SO101Follower, "connect", lambda self, calibrate=True: pytest.fail("connect() was called"))
    port = tmp_path / "ttyACM0"  # stands for a plugged-in arm's device node
    port.touch()
    cases = [
        (dict(port="/dev/ttyNO_SUCH_ARM"), "--robot.port=/dev/ttyNO_SUCH_ARM: no such device", "lerobot-find-port"),
        (dict(port=str(port), cameras={"front": OpenCVCameraConfig(index_or_path="/dev/video_missing", fps=30,
                                                                   width=640, height=480)}),
         "--robot.cameras.front.index_or_path=/dev/video_missing", "lerobot-find-cameras"),
        (dict(port=str(port)), "--robot.id=test_arm: no calibration file", "lerobot-calibrate --robot.type=<this --robot.type> --robot.port="),
    ]
    for fields, problem, fix in cases:
        cfg = _cfg(tmp_path, "devices", ["builtin:hold"], rounds=1)
        cfg.robot = SO101FollowerConfig(id="test_arm", calibration_dir=tmp_path / "cal", **fields)
        with pytest.raises(ConfigError) as err:
            evaluate_on_robot(cfg, key_source=ScriptedKeys([]))
        assert problem in str(err.value) and fix in str(err.value)  # a ConfigError: `error: ...`, exit 2
        assert not (tmp_path / "devices").exists()


def test_config_parses_like_the_recorder_and_refuses_what_cannot_run():
    cfg = draccus.parse(EvalRealConfig, args=[
        "--robot.type=so101_sim", "--policy_paths=[builtin:hold,builtin:expert]", "--dataset.repo_id=local/x",
        "--reset.mode=start_pose", "--reset.start_pose={shoulder_pan: 10, gripper.pos: 20}", "--max_relative_target=null",
        "--dataset.reset_time_s=7"])
    assert cfg.reset.start_pose == {"shoulder_pan": 10.0, "gripper.pos": 20.0} and cfg.reset.time_s == 7.0
    assert cfg.max_relative_target is None and cfg.dataset.push_to_hub is False and cfg.dataset.num_episodes == 10
    base = dict(robot=SO101SimConfig(), dataset=EvalDatasetConfig(repo_id="local/x"), policy_paths=["builtin:hold"])
    with pytest.raises(ConfigError, match="needs --robot.type=so101_sim"):
        from lerobot.robots.so_follower import SO101FollowerConfig

        EvalRealConfig(**{**base, "robot": SO101FollowerConfig(port="/dev/null")}, label_source="sim")
    with pytest.raises(ConfigError, match="needs a leader arm"):
        EvalRealConfig(**base, reset=ResetConfig(mode="teleop"))
    with pytest.raises(ConfigError, match="--robot.fps=10 and --dataset.fps=30"):
        EvalRealConfig(**{**base, "robot": SO101SimConfig(fps=10)})
    with pytest.raises(ConfigError, match="at least one checkpoint"):
        EvalRealConfig(**{**base, "policy_paths": []})


# ------------------------------------------------------------------------------ Ctrl-C and resume


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Two rounds of hold vs expert, Ctrl-C in round 1's first episode."""
    tmp_path = tmp_path_factory.mktemp("interrupted")
    keys = ScriptedKeys([(0, 3, "s"), (1, 2, "2"), (2, 4, "ctrl-c")])
    cfg = _cfg(tmp_path, "session", ["builtin:hold", "builtin:expert"], rounds=2)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with pytest.raises(EvaluationInterrupted) as err:
            evaluate_real(cfg, key_source=keys)
    finally:
        root.setLevel(level)
    return tmp_path, err.value


def test_ctrl_c_keeps_the_finished_episodes_and_the_report(interrupted):
    tmp_path, error = interrupted
    root = tmp_path / "session"
    assert error.exit_code == 130 and "--resume=true" in str(error) and str(root / "eval") in str(error)
    rows = read_outcomes(root)
    assert [(r["policy"], r["round"], r["label"], r["length"]) for r in rows] == [
        ("builtin:hold", 0, "success", 4), ("builtin:expert", 0, "failure", 3),
        ("builtin:hold", 1, "interrupted", 4)]
    assert LeRobotDataset("local/session", root=root).meta.total_episodes == 3
    report = _report(root)
    hold = _checkpoint(report, "builtin:hold")
    assert hold["summary"]["n_episodes"] == 1 and hold["not_counted"]["interrupted"] == 1
    assert _checkpoint(report, "builtin:expert")["summary"]["outcomes"]["dropped_during_transport"] == 1
    assert (root / "eval" / "results.md").exists() and (root / SESSION_FILE).exists()


def test_resume_runs_what_is_left_and_refuses_other_checkpoints(interrupted, tmp_path, scenes):
    source, _ = interrupted
    root = tmp_path / "session"
    shutil.copytree(source / "session", root)
    other = _cfg(tmp_path, "session", ["builtin:expert", "builtin:hold"], rounds=2, resume=True)
    with pytest.raises(ValueError, match="other settings") as err:
        evaluate_on_robot(other, key_source=ScriptedKeys([]))
    assert is_user_error(err.value)
    # The interrupted episode (round 1, hold) runs again, then round 1's expert; then one more round.
    keys = ScriptedKeys([(0, 1, "f"), (1, 2, "s"), (2, 1, "s"), (3, 1, "s")])
    report = evaluate_on_robot(_cfg(tmp_path, "session", ["builtin:hold", "builtin:expert"], rounds=3, resume=True),
                               key_source=keys)
    rows = read_outcomes(root)
    assert [(r["policy"], r["round"], r["label"]) for r in rows[3:]] == [
        ("builtin:hold", 1, "failure"), ("builtin:expert", 1, "success"),
        ("builtin:hold", 2, "success"), ("builtin:expert", 2, "success")]
    assert [seed for seed, _ in scenes[1:]] == [1001, 1001, 1002, 1002]
    assert LeRobotDataset("local/session", root=root).meta.total_episodes == 7
    summaries = {c["label"]: c["summary"] for c in report["checkpoints"]}
    assert (summaries["builtin:hold"]["successes"], summaries["builtin:hold"]["n_episodes"]) == (2, 3)
    assert (summaries["builtin:expert"]["successes"], summaries["builtin:expert"]["n_episodes"]) == (2, 3)
    assert report["rounds"] == [0, 1, 2] and report == _report(root)


# ------------------------------------------------------------------------------ resets


def test_start_pose_reset_moves_the_arm_before_episodes_and_at_the_end(tmp_path, monkeypatch):
    pose = {"shoulder_pan": -15.0, "wrist_roll.pos": 30.0}
    before_scene = []
    reset_scene = SO101Sim.reset_scene

    def spy(self, seed=None):
        before_scene.append(self.env.joint_positions().copy())
        reset_scene(self, seed=seed)

    monkeypatch.setattr(SO101Sim, "reset_scene", spy)
    at_disconnect = []
    disconnect = SO101Sim.disconnect
    monkeypatch.setattr(SO101Sim, "disconnect",
                        lambda self: (at_disconnect.append(self.env.joint_positions().copy()), disconnect(self)))
    cfg = _cfg(tmp_path, "start_pose", ["builtin:hold"], rounds=2, return_to_start=True,
               reset=ResetConfig(mode="start_pose", time_s=0, start_pose=pose, move_time_s=0.5))
    evaluate_on_robot(cfg, key_source=ScriptedKeys([(0, 2, "s"), (1, 2, "f")]))
    # Before each episode's scene is drawn the arm has reached the start pose (the first one: at the start).
    for joints in [*before_scene[1:], *at_disconnect]:  # and, with --return_to_start, at the end
        assert joints[0] == pytest.approx(-15.0, abs=1) and joints[4] == pytest.approx(30.0, abs=1)
    assert [r["length"] for r in read_outcomes(tmp_path / "start_pose")] == [3, 3]
    session = json.loads((tmp_path / "start_pose" / SESSION_FILE).read_text())
    assert session["start_pose"] == {"shoulder_pan.pos": -15.0, "wrist_roll.pos": 30.0}
    assert len(before_scene) == 3  # at connect, then before each of the 2 episodes


def test_teleop_reset_lets_the_leader_drive_between_episodes(tmp_path, monkeypatch):
    """The sim's expert teleoperator stands in for the leader arm."""
    calls = {"n": 0}
    get_action = SO101SimExpert.get_action

    def counted(self):
        calls["n"] += 1
        return get_action(self)

    monkeypatch.setattr(SO101SimExpert, "get_action", counted)
    cfg = _cfg(tmp_path, "teleop", ["builtin:hold"], rounds=2, reset=ResetConfig(mode="teleop", time_s=0.3),
               teleop=SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"))
    evaluate_on_robot(cfg, key_source=ScriptedKeys([(0, 2, "s"), (1, 2, "f")]))
    assert calls["n"] >= 2  # the handover and the reset loop (one reset period: none after the last episode)
    assert [r["length"] for r in read_outcomes(tmp_path / "teleop")] == [3, 3]


def test_console_script_help_lists_the_keys_and_the_session_flags(monkeypatch, capsys):
    import sys
    from importlib.metadata import entry_points

    from lerobot_steer.record import eval_cli

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "lerobot-steer-eval-real"]
    assert script.value == "lerobot_steer.record.eval_cli:main"
    monkeypatch.setattr(sys, "argv", ["lerobot-steer-eval-real", "--help"])
    with pytest.raises(SystemExit) as done:
        eval_cli.evaluate_real()  # what main() runs after setting up logging and plugins
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "s          success" in out and "--reset.mode" in out and "--policy_paths" in out and "--label_source" in out


def test_resume_refuses_a_dataset_that_is_not_an_evaluation(tmp_path):
    """E.g. lerobot-steer-record demonstrations with the same features: appending policy episodes to them
    would mix evaluation into training data."""
    from lerobot.processor import make_default_processors

    from lerobot_steer.record.dataset import recording_features
    from lerobot_steer.record.outcomes import frame_defaults

    cfg = _cfg(tmp_path, "demos", ["builtin:hold"], rounds=1, resume=True)
    teleop_proc, _, obs_proc = make_default_processors()
    features = recording_features(SO101Sim(cfg.robot), teleop_proc, obs_proc, use_videos=False)
    ds = LeRobotDataset.create("local/demos", FPS, root=tmp_path / "demos", robot_type="so101_sim", features=features,
                               use_videos=False)
    ds.add_frame({STATE: np.zeros(6, np.float32), "action": np.zeros(6, np.float32), **frame_defaults(), "task": TASK})
    ds.save_episode()
    ds.finalize()
    with pytest.raises(ValueError, match="not recorded by lerobot-steer-eval-real") as err:
        evaluate_on_robot(cfg, key_source=ScriptedKeys([]))
    assert is_user_error(err.value)
