"""`lerobot-steer-record`: LeRobot's recording with an outcome label per episode.

What a user relies on:

* the keys pressed become the columns offline training reads (`next.reward`, `next.success`,
  `next.done`, as `lerobot-steer-generate` writes them) and a row of `meta/outcomes.jsonl` each;
* Ctrl-C or an error mid-episode keeps every episode, the current one included, in a dataset that
  loads; `d` drops the current one, LeRobot's left arrow / r records it again;
* `--resume=true` appends, and refuses a dataset recorded with other features, naming the fix;
* `dsrl` accepts the recorded dataset as it is and reads the labelled successes;
* the LeRobot internals the recorder calls are where it expects them.

The recordings run in process on the `so101_sim` robot with the scripted expert teleop, state only
(one test with a small camera and video), with keys from `ScriptedKeys` (no terminal, no pynput).
Takes are ended by keys, not by the episode timer, so their lengths are exact.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata

from lerobot_steer.cli_errors import is_user_error
from lerobot_steer.record.cli import RecordingInterrupted, record
from lerobot_steer.record.config import LabelledDatasetRecordConfig, LabelledRecordConfig, OutcomeConfig
from lerobot_steer.record.dataset import recording_features
from lerobot_steer.record.keys import KeyboardKeys, OutcomeKeys, ScriptedKeys
from lerobot_steer.record.outcome_log import read_outcomes
from lerobot_steer.record.outcomes import OUTCOME_FEATURES, SIM_FAILURE_REASONS, Outcome, frame_defaults
from lerobot_steer.record.recorder import record_labelled
from lerobot_steer.sim.generate import dataset_features as generated_features
from lerobot_steer.sim.pick_place_env import PickPlaceConfig
from lerobot_steer.sim.robot import SimCameraConfig, SO101Sim, SO101SimConfig, get_live_robot
from lerobot_steer.sim.teleop import SO101SimExpert, SO101SimExpertConfig

FPS = 20  # record_loop paces frames in real time: a 5-frame take lasts 0.25 s
TASK = "Pick up the red block and place it in the blue bowl."
H, W = 24, 32


def _cfg(tmp_path, name: str, num_episodes: int, *, cameras=None, resume=False, **outcome) -> LabelledRecordConfig:
    outcome.setdefault("label_wait_s", 0.0)
    return LabelledRecordConfig(
        robot=SO101SimConfig(cameras=cameras or {}, fps=FPS, seed=0, calibration_dir=tmp_path / "calibration"),
        teleop=SO101SimExpertConfig(calibration_dir=tmp_path / "calibration"),
        dataset=LabelledDatasetRecordConfig(
            repo_id=f"local/{name}", root=str(tmp_path / name), single_task=TASK, fps=FPS, episode_time_s=60,
            reset_time_s=0, num_episodes=num_episodes, video=bool(cameras), no_stamp=True),
        play_sounds=False, resume=resume, outcome=OutcomeConfig(**outcome),
    )


def _frames(root) -> dict[str, np.ndarray]:
    """Every frame's columns, from the parquet files as saved (a resumed recording adds a file)."""
    tables = [pq.read_table(f) for f in sorted(Path(root).glob("data/**/*.parquet"))]
    return {name: np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for t in tables])
            for name in tables[0].column_names}


@contextlib.contextmanager
def _info_logging():
    """The root logger at INFO, as LeRobot's init_logging leaves it in the CLI: the sim robot hears
    LeRobot's "Recording episode N" announcements through it (pytest's default level drops them)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)


@pytest.fixture(autouse=True)
def info_logging():
    with _info_logging():
        yield


def _last_frames(frames) -> np.ndarray:
    episodes = frames["episode_index"]
    return np.append(episodes[1:] != episodes[:-1], True)


# ------------------------------------------------------------------------------ labels -> columns


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Four takes with a small front camera: s at frame 4; 3 (missed_bowl) at frame 2; n at frame 3 then
    2 (dropped) after it; n at frame 2 and no label."""
    tmp_path = tmp_path_factory.mktemp("labelled")
    keys = ScriptedKeys([(0, 4, "s"), (1, 2, "3"), (2, 3, "n"), (2, None, "2"), (3, 2, "n")])
    cfg = _cfg(tmp_path, "labelled", num_episodes=4, cameras={"front": SimCameraConfig(width=W, height=H)})
    with _info_logging():
        dataset = record_labelled(cfg, key_source=keys)
    return tmp_path / "labelled", dataset


def test_keys_become_the_reward_success_and_done_columns_training_reads(labelled, capsys):
    root, _ = labelled
    data = LeRobotDataset("local/labelled", root=root, video_backend="pyav")
    assert data.meta.total_episodes == 4 and data.meta.total_frames == 5 + 3 + 4 + 3
    # The same names, dtypes and shapes as the generator's columns.
    generated = generated_features(PickPlaceConfig(obs_type="state"))
    for key in OUTCOME_FEATURES:
        assert data.features[key]["dtype"] == generated[key]["dtype"]
        assert tuple(data.features[key]["shape"]) == tuple(generated[key]["shape"]) == (1,)
    frames = _frames(root)
    last = _last_frames(frames)
    assert np.bincount(frames["episode_index"]).tolist() == [5, 3, 4, 3]
    assert frames["next.done"].tolist() == last.tolist()
    assert frames["next.reward"].dtype == np.float32 and frames["next.success"].dtype == bool
    # Sparse: the score on the last frame of the successful episode only.
    assert np.flatnonzero(frames["next.reward"]).tolist() == [4] and frames["next.reward"][4] == 1.0
    assert np.flatnonzero(frames["next.success"]).tolist() == [4]
    item = data[len(data) - 1]
    assert bool(item["next.done"]) and item["observation.state"].shape == (6,)
    assert item["observation.images.front"].shape == (3, H, W)


def test_outcome_table_has_one_row_per_episode_with_label_reason_score_and_length(labelled):
    root, dataset = labelled
    rows = read_outcomes(root)
    assert [r["episode_index"] for r in rows] == [0, 1, 2, 3]
    assert [r["label"] for r in rows] == ["success", "failure", "failure", "unlabelled"]
    assert [r["reason"] for r in rows] == [None, "missed_bowl", "dropped_during_transport", None]
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.0, None]
    assert [r["length"] for r in rows] == [5, 3, 4, 3]
    assert [r["success"] for r in rows] == [True, False, False, False]
    assert all(r["task"] == TASK and r["recorded_at"] for r in rows)
    assert dataset.meta.total_episodes == 4


def test_a_score_key_pays_its_score_on_the_last_frame_and_is_no_success(tmp_path, capsys):
    keys = ScriptedKeys([(0, 2, "7"), (1, 1, "0")])
    record_labelled(_cfg(tmp_path, "scored", num_episodes=2, digits="score"), key_source=keys)
    frames = _frames(tmp_path / "scored")
    assert frames["next.reward"].tolist() == pytest.approx([0, 0, 0.7, 0, 0])
    assert not frames["next.success"].any()
    assert [(r["label"], r["score"]) for r in read_outcomes(tmp_path / "scored")] == [("partial", 0.7), ("failure", 0.0)]
    out = capsys.readouterr().out
    assert "episode 0: partial 0.70, 3 frames | 0 success, 0 failure, 1 partial" in out
    assert "episode 1: failure, 2 frames | 0 success, 1 failure, 1 partial" in out


# ------------------------------------------------------------------------------ interruptions


def test_ctrl_c_mid_episode_keeps_every_episode_including_the_current_one(tmp_path):
    """With a camera: the images written so far become the interrupted episode's video."""
    cameras = {"front": SimCameraConfig(width=W, height=H)}
    keys = ScriptedKeys([(0, 3, "s"), (1, 4, "ctrl-c")])
    cfg = _cfg(tmp_path, "interrupted", num_episodes=3, cameras=cameras)
    with pytest.raises(RecordingInterrupted) as err:
        record(cfg, key_source=keys)
    assert err.value.exit_code == 130 and "--resume=true" in str(err.value)
    root = tmp_path / "interrupted"
    data = LeRobotDataset("local/interrupted", root=root, video_backend="pyav")
    assert data.meta.total_episodes == 2 and data.meta.total_frames == 4 + 4
    rows = read_outcomes(root)
    assert [(r["label"], r["reason"], r["length"]) for r in rows] == [
        ("success", None, 4), ("interrupted", "KeyboardInterrupt", 4)]
    frames = _frames(root)
    assert frames["next.done"].tolist() == _last_frames(frames).tolist()
    assert frames["next.reward"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    image = data[len(data) - 1]["observation.images.front"]  # decoded from the interrupted episode's video
    assert image.shape == (3, H, W) and float(image.max()) > 0
    assert not (root / "images").exists() or not any((root / "images").rglob("*.png"))
    with pytest.raises(LookupError):  # the robot was disconnected: no live sim robot is left
        get_live_robot(None)


def test_ctrl_c_inside_lerobots_add_frame_keeps_the_complete_frames(tmp_path, monkeypatch, caplog):
    """LeRobot appends a frame one feature at a time: a Ctrl-C while it writes the camera image of frame 2
    leaves the state of frame 2 in the buffer but not its image. The take is saved with frames 0-1."""
    from lerobot.datasets.dataset_writer import DatasetWriter

    save_image = DatasetWriter._save_image
    calls = {"n": 0}

    def interrupted_at_the_third_image(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return save_image(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "_save_image", interrupted_at_the_third_image)
    cfg = _cfg(tmp_path, "half", num_episodes=1, cameras={"front": SimCameraConfig(width=W, height=H)})
    with pytest.raises(KeyboardInterrupt):
        record_labelled(cfg, key_source=ScriptedKeys([]))
    data = LeRobotDataset("local/half", root=tmp_path / "half", video_backend="pyav")
    assert data.meta.total_episodes == 1 and data.meta.total_frames == 2
    assert [(r["label"], r["length"]) for r in read_outcomes(tmp_path / "half")] == [("interrupted", 2)]
    assert data[1]["observation.images.front"].shape == (3, H, W)
    assert _frames(tmp_path / "half")["next.done"].tolist() == [False, True]
    assert "Dropped the half-added frame 2" in caplog.text


def test_an_error_mid_episode_keeps_the_episode_then_propagates(tmp_path, monkeypatch):
    calls = {"n": 0}
    act = SO101SimExpert.get_action

    def unplugged_after_six(self):
        calls["n"] += 1
        if calls["n"] > 6:
            raise ConnectionError("leader arm unplugged")
        return act(self)

    monkeypatch.setattr(SO101SimExpert, "get_action", unplugged_after_six)
    keys = ScriptedKeys([(0, 3, "s")])  # take 0: 4 frames; take 1 fails at its 3rd action
    with pytest.raises(ConnectionError, match="unplugged"):
        record_labelled(_cfg(tmp_path, "failed", num_episodes=3), key_source=keys)
    rows = read_outcomes(tmp_path / "failed")
    assert [(r["label"], r["reason"], r["length"]) for r in rows] == [
        ("success", None, 4), ("interrupted", "ConnectionError: leader arm unplugged", 2)]
    assert LeRobotDataset("local/failed", root=tmp_path / "failed").meta.total_episodes == 2


def test_discard_key_drops_the_take_and_stops_and_left_arrow_records_it_again(tmp_path, capsys):
    keys = ScriptedKeys([(0, 2, "left"), (1, 3, "s"), (2, 2, "d")])
    record_labelled(_cfg(tmp_path, "discarded", num_episodes=5), key_source=keys)
    data = LeRobotDataset("local/discarded", root=tmp_path / "discarded")
    assert data.meta.total_episodes == 1 and data.meta.total_frames == 4
    assert [(r["label"], r["length"]) for r in read_outcomes(tmp_path / "discarded")] == [("success", 4)]
    assert keys.pressed[-1].key == "d" and len(keys.pressed) == 3
    assert "episode 1: discarded | 2 discarded; stopping." in capsys.readouterr().out


def test_esc_stops_and_keeps_the_current_episode_with_the_default_label(tmp_path):
    keys = ScriptedKeys([(0, 2, "q")])
    record_labelled(_cfg(tmp_path, "stopped", num_episodes=3, default_label="success"), key_source=keys)
    assert [(r["label"], r["length"]) for r in read_outcomes(tmp_path / "stopped")] == [("success", 3)]
    assert _frames(tmp_path / "stopped")["next.success"].tolist() == [False, False, True]


# ------------------------------------------------------------------------------ resume


def test_resume_appends_episodes_and_outcome_rows(tmp_path, capsys):
    record_labelled(_cfg(tmp_path, "resumed", num_episodes=1), key_source=ScriptedKeys([(0, 2, "s")]))
    record_labelled(_cfg(tmp_path, "resumed", num_episodes=1, resume=True), key_source=ScriptedKeys([(0, 1, "1")]))
    root = tmp_path / "resumed"
    data = LeRobotDataset("local/resumed", root=root)
    assert data.meta.total_episodes == 2 and data.meta.total_frames == 3 + 2
    assert [(r["episode_index"], r["label"], r["reason"]) for r in read_outcomes(root)] == [
        (0, "success", None), (1, "failure", SIM_FAILURE_REASONS[0])]
    assert "episode 1: failure (never_picked_up), 2 frames | 1 success, 1 failure" in capsys.readouterr().out
    assert _frames(root)["next.done"].tolist() == [False, False, True, False, True]


def test_resume_refuses_a_dataset_recorded_without_the_outcome_columns_naming_the_fix(tmp_path):
    """What plain lerobot-record writes for this robot: the same features minus next.*."""
    from lerobot.processor import make_default_processors

    cfg = _cfg(tmp_path, "plain", num_episodes=1, resume=True)
    teleop_proc, _, obs_proc = make_default_processors()
    features = recording_features(SO101Sim(cfg.robot), teleop_proc, obs_proc, use_videos=False)
    plain = {k: v for k, v in features.items() if k not in OUTCOME_FEATURES}
    ds = LeRobotDataset.create("local/plain", FPS, root=tmp_path / "plain", robot_type="so101_sim", features=plain,
                               use_videos=False)
    ds.add_frame({"observation.state": np.zeros(6, np.float32), "action": np.zeros(6, np.float32), "task": TASK})
    ds.save_episode()
    ds.finalize()
    with pytest.raises(ValueError) as err:
        record_labelled(cfg, key_source=ScriptedKeys([]))
    message = str(err.value)
    assert is_user_error(err.value)
    assert "'features'" in message and "next.reward" in message and "new --dataset.root" in message
    assert LeRobotDatasetMetadata("local/plain", root=tmp_path / "plain").total_episodes == 1
    assert read_outcomes(tmp_path / "plain") == []


def test_resume_without_a_dataset_and_a_new_recording_over_one_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        record_labelled(_cfg(tmp_path, "nothing", num_episodes=1, resume=True), key_source=ScriptedKeys([]))
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="--resume=true"):
        record_labelled(_cfg(tmp_path, "exists", num_episodes=1), key_source=ScriptedKeys([]))


def test_push_to_hub_is_off_by_default():
    assert LabelledDatasetRecordConfig().push_to_hub is False


def test_a_push_writes_the_outcome_table_into_the_dataset_card(tmp_path):
    """What `--dataset.push_to_hub=true` hands LeRobot's card template: the columns' meaning, the label
    counts, the success rate with its Wilson interval, the failure reasons (no network: the push itself
    is LeRobot's and needs the Hub)."""
    from lerobot.datasets.utils import create_lerobot_dataset_card

    from lerobot_steer.record.outcome_log import OutcomeLog, dataset_card_description
    from lerobot_steer.record.outcomes import Outcome

    log = OutcomeLog(tmp_path, 0)
    for i, outcome in enumerate([Outcome.of_success(), Outcome.of_failure("missed_bowl"), Outcome.of_success(),
                                 Outcome.of_failure("missed_bowl")]):
        log.add(i, outcome, 10, "task")
    text = dataset_card_description(tmp_path)
    assert "| success | 2 |" in text and "| failure | 2 |" in text and "next.reward" in text
    assert "50.0% (Wilson 95 % interval 15.0% - 85.0%)" in text and "missed_bowl 2" in text
    card = create_lerobot_dataset_card(dataset_description=text)
    assert "| success | 2 |" in str(card)


# ------------------------------------------------------------------------------ keys


def test_outcome_keys_map_labels_and_lerobots_controls():
    keys = OutcomeKeys(SIM_FAILURE_REASONS)
    keys.press("S")
    assert keys.outcome == Outcome.of_success() and keys.events["exit_early"]
    keys.start_episode()
    keys.phase = "reset"  # labelling in the reset period does not cut it short
    keys.press("4")
    assert keys.outcome == Outcome("failure", "timeout", 0.0) and not keys.events["exit_early"]
    keys.press("9")  # no ninth reason: ignored
    assert keys.outcome.reason == "timeout"
    keys.start_episode()
    keys.press("r")
    assert keys.events["rerecord_episode"] and keys.events["exit_early"] and keys.outcome is None
    keys.start_episode()
    keys.press("esc")
    assert keys.events["stop_recording"] and not keys.discard
    keys.press("d")
    assert keys.discard and keys.events["stop_recording"]
    scores = OutcomeKeys(SIM_FAILURE_REASONS, digits="score")
    scores.press("3")
    assert (scores.outcome.label, scores.outcome.score) == ("partial", pytest.approx(0.3))


def test_keyboard_keys_reach_the_recorder_through_lerobots_terminal_listener(monkeypatch):
    """No pynput, no X: LeRobot's terminal backend reads a TTY (here a pseudo-terminal)."""
    import pty
    import sys

    import lerobot.utils.keyboard_input as keyboard_input

    master, slave = pty.openpty()
    tty_file = os.fdopen(slave, "r")
    monkeypatch.setattr(sys, "stdin", tty_file)
    monkeypatch.setattr(keyboard_input, "pynput_can_capture", lambda: False)
    keys, source = OutcomeKeys(SIM_FAILURE_REASONS), KeyboardKeys()
    try:
        source.start(keys.press)
        assert source.interactive
        os.write(master, b"2\x1b[C")  # reason 2, then the right arrow
        deadline = time.time() + 5
        while (keys.outcome is None or not keys.events["exit_early"]) and time.time() < deadline:
            time.sleep(0.02)
    finally:
        source.stop()
        tty_file.close()
        os.close(master)
    assert keys.outcome == Outcome("failure", "dropped_during_transport", 0.0) and keys.events["exit_early"]


# ------------------------------------------------------------------------------ offline training


def test_dsrl_accepts_the_recorded_dataset_and_reads_its_labelled_successes(labelled, tmp_path):
    """The offline path's checks (reward column, features against the base) pass on a recording as it is,
    and the chunk MDP pays the label's reward at the labelled episode's end."""
    from helpers_bases import save_base, tiny_diffusion

    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.datasets.factory import resolve_delta_timestamps

    from lerobot_steer.policies.common.frozen_base import first_success_frames
    from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy

    root, _ = labelled
    torch.manual_seed(0)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
              "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, H, W))}
    base = save_base(*tiny_diffusion(inputs, action_dim=6, crop_shape=None), tmp_path / "base")
    meta = LeRobotDatasetMetadata("local/labelled", root=root)
    policy = DSRLPolicy(DSRLConfig(base_policy_path=str(base), device="cpu", hidden_dims=[32, 32]), dataset_meta=meta)
    assert policy._episode_success.tolist() == [True, False, False, False]
    assert first_success_frames(meta).tolist() == [4, -1, -1, -1]
    data = LeRobotDataset("local/labelled", root=root, delta_timestamps=resolve_delta_timestamps(policy.config, meta),
                          video_backend="pyav")
    # Chunks of 4 executed steps from: episode 0's first frame (inside it), its last frame (the success),
    # episode 1's first frame (a 3-frame failure: the chunk runs into its end, which pays nothing).
    assert policy.config.n_exec == 4
    t = policy.transitions_from_dataset(torch.utils.data.default_collate([data[0], data[4], data[5]]))
    assert t.reward.tolist() == [0.0, 1.0, 0.0] and t.terminated.tolist() == [0.0, 1.0, 1.0]


# ------------------------------------------------------------------------------ LeRobot seams


def test_lerobot_recording_parts_the_recorder_calls_are_where_it_expects_them(tmp_path):
    """record/recorder.py, dataset.py, frames.py and keys.py call these; a LeRobot upgrade that moves
    one fails here, naming it."""
    from lerobot.configs.dataset import DatasetRecordConfig
    from lerobot.scripts.lerobot_record import RecordConfig, record_loop
    from lerobot.utils.keyboard_input import apply_recording_control, create_key_listener

    # record_loop is wrapped by safe_stop_image_writer (no functools.wraps): read the function inside.
    inner = next((c.cell_contents for c in record_loop.__closure__ or ()
                  if getattr(c.cell_contents, "__name__", "") == "record_loop"), record_loop)
    loop_args = set(inspect.signature(inner).parameters)
    assert {"robot", "events", "fps", "teleop_action_processor", "robot_action_processor",
            "robot_observation_processor", "dataset", "teleop", "control_time_s", "single_task", "display_data",
            "display_mode", "display_compressed_images"} <= loop_args, f"record_loop takes {sorted(loop_args)}"
    assert {"robot", "dataset", "teleop", "display_data", "display_mode", "display_ip", "display_port",
            "display_compressed_images", "play_sounds", "resume"} <= {f.name for f in fields(RecordConfig)}
    assert {"repo_id", "single_task", "root", "fps", "episode_time_s", "reset_time_s", "num_episodes", "video",
            "push_to_hub", "private", "tags", "num_image_writer_processes", "num_image_writer_threads_per_camera",
            "video_encoding_batch_size", "rgb_encoder", "depth_encoder", "streaming_encoding",
            "encoder_queue_maxsize", "encoder_threads", "no_stamp"} <= {f.name for f in fields(DatasetRecordConfig)}
    assert callable(DatasetRecordConfig.stamp_repo_id)
    assert "controls_help" in inspect.signature(create_key_listener).parameters
    events = {"exit_early": False, "rerecord_episode": False, "stop_recording": False}
    for control in ("right", "left", "esc"):
        apply_recording_control(control, events)
    assert all(events.values()), "apply_recording_control no longer sets LeRobot's three event flags"
    # The episode buffer frames.label_episode writes the label into: feature -> one value per frame, "size".
    features = {"observation.state": {"dtype": "float32", "shape": (2,), "names": None}, **OUTCOME_FEATURES}
    ds = LeRobotDataset.create("local/seam", 10, root=tmp_path / "seam", features=features, use_videos=False)
    for _ in range(2):
        ds.add_frame({"observation.state": np.zeros(2, np.float32), **frame_defaults(), "task": "t"})
    buffer = ds.writer.episode_buffer
    assert ds.has_pending_frames() and buffer["size"] == 2 and len(buffer["next.reward"]) == 2
    buffer["next.reward"][1] = np.array([0.5], dtype=np.float32)  # what label_episode does
    ds.save_episode()
    ds.finalize()
    assert _frames(tmp_path / "seam")["next.reward"].tolist() == [0.0, 0.5], (
        "seam moved: a value set in dataset.writer.episode_buffer before save_episode no longer reaches the parquet")
    assert {"repo_id", "root", "image_writer_processes", "image_writer_threads", "streaming_encoding"} <= set(
        inspect.signature(LeRobotDataset.resume).parameters)

