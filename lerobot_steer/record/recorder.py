"""The episode loop of `lerobot-steer-record`: `lerobot-record`'s, with a label before every save.

Per take: LeRobot's "Recording episode N" announcement (the `so101_sim` robot starts a new scene on
it, an operator starts the task), LeRobot's `record_loop` with the dataset, the reset period (the
same loop without a dataset; skipped after the last episode, as in lerobot-record), then the label:
the last label key pressed, else, with a keyboard, up to `--outcome.label_wait_s` of waiting for one,
else `--outcome.default_label`. The label is written into the episode buffer, then LeRobot's
`save_episode` writes it with the frames.

Where it differs from lerobot-record, on purpose:

* Ctrl-C or an error during a take saves the take (frames so far, labelled "interrupted" unless a
  label key was pressed) before the dataset is finalized; lerobot-record loses it. The error is
  raised again afterwards.
* `d` discards the current take and stops (lerobot-record's Esc keeps it).
* A take with no frame (e.g. Esc right at its start) is not saved (lerobot-record fails on it).
* Nothing is uploaded unless the recording ends normally and `--dataset.push_to_hub=true`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pprint import pformat

from lerobot.datasets import LeRobotDataset, VideoEncodingManager
from lerobot.processor import make_default_processors
from lerobot.robots import make_robot_from_config
from lerobot.scripts.lerobot_record import record_loop
from lerobot.teleoperators import make_teleoperator_from_config
from lerobot.utils.utils import log_say
from lerobot.utils.visualization_utils import init_visualization, shutdown_visualization

from .config import LabelledRecordConfig
from .dataset import open_dataset, recording_features
from .devices import check_devices
from .frames import OutcomeFrames, keep_complete_frames, label_episode, pending_frames
from .keys import KeyboardKeys, KeySource, OutcomeKeys
from .outcome_log import OUTCOMES_FILE, OutcomeLog, dataset_card_description
from .outcomes import FAILURE, SUCCESS, Outcome

logger = logging.getLogger(__name__)


def default_outcome(label: str) -> Outcome:
    """The outcome of an episode no label key was pressed for (`--outcome.default_label`)."""
    if label == SUCCESS:
        return Outcome.of_success()
    if label == FAILURE:
        return Outcome.of_failure()
    return Outcome.unlabelled()


class LabelledRecorder:
    """One recording session: a connected robot and teleop, an open dataset, keys, the outcome log."""

    def __init__(self, cfg: LabelledRecordConfig, robot, teleop, dataset: LeRobotDataset, keys: OutcomeKeys,
                 source: KeySource, processors: tuple):
        self.cfg, self.robot, self.teleop, self.dataset = cfg, robot, teleop, dataset
        self.keys, self.source = keys, source
        self.teleop_action_processor, self.robot_action_processor, self.robot_observation_processor = processors
        self.log = OutcomeLog(dataset.root, dataset.num_episodes)
        self.saved = 0

    def _loop(self, dataset, control_time_s: float) -> None:
        """LeRobot's `record_loop`, with this session's settings (dataset None: the reset period)."""
        cfg = self.cfg
        record_loop(
            robot=self.robot, events=self.keys.events, fps=cfg.dataset.fps,
            teleop_action_processor=self.teleop_action_processor,
            robot_action_processor=self.robot_action_processor,
            robot_observation_processor=self.robot_observation_processor,
            dataset=dataset, teleop=self.teleop, control_time_s=control_time_s,
            single_task=cfg.dataset.single_task, display_data=cfg.display_data, display_mode=cfg.display_mode,
            display_compressed_images=self.display_compressed_images,
        )

    @property
    def display_compressed_images(self) -> bool:
        cfg = self.cfg  # as lerobot-record: compressed when streaming to a remote viewer
        remote = cfg.display_data and cfg.display_ip is not None and cfg.display_port is not None
        return True if remote else cfg.display_compressed_images

    def run(self) -> None:
        """Takes until `--dataset.num_episodes` are saved, or a stop key."""
        attempt = 0
        while self.saved < self.cfg.dataset.num_episodes and not self.keys.events["stop_recording"]:
            self.take(attempt)
            attempt += 1

    def take(self, attempt: int) -> None:
        """Record one take, its reset period, then label and save it (or drop it)."""
        cfg, keys, dataset = self.cfg, self.keys, self.dataset
        keys.start_episode()
        pending = True
        try:
            log_say(f"Recording episode {dataset.num_episodes}", cfg.play_sounds)
            self._loop(OutcomeFrames(dataset, lambda frame: self.source.on_frame(attempt, frame)),
                       cfg.dataset.episode_time_s)
            keys.phase = "reset"
            last = self.saved == cfg.dataset.num_episodes - 1
            if not keys.events["stop_recording"] and (not last or keys.events["rerecord_episode"]):
                log_say("Reset the environment", cfg.play_sounds)
                self._loop(None, cfg.dataset.reset_time_s)
            self.source.after_episode(attempt)
            if keys.outcome is None and not self._dropping() and self.source.interactive:
                self._wait_for_label()
            if self._dropping():
                pending = False
                self._drop()
                return
            outcome = keys.outcome or default_outcome(cfg.outcome.default_label)
            pending = False
            self._save(outcome)
        except BaseException as error:
            if pending:
                self._keep_interrupted(error)
            raise

    def _dropping(self) -> bool:
        return self.keys.discard or self.keys.events["rerecord_episode"]

    def _drop(self) -> None:
        """Left arrow / r (record it again) or d (discard and stop): the take is not saved."""
        self.dataset.clear_episode_buffer()
        self.log.discarded += 1
        if self.keys.events["rerecord_episode"] and not self.keys.discard:
            log_say("Re-record episode", self.cfg.play_sounds)
            self.keys.events["rerecord_episode"] = False
            self.keys.events["exit_early"] = False
        else:
            print(f"episode {self.dataset.num_episodes}: discarded | {self.log.discarded} discarded; stopping.")

    def _wait_for_label(self) -> None:
        wait_s = self.cfg.outcome.label_wait_s
        if wait_s <= 0 or pending_frames(self.dataset) == 0:
            return
        events = self.keys.events
        print(f"episode {self.dataset.num_episodes}: label it (s, f, 1-9; d discards, r re-records) or press n "
              f"to save it as {self.cfg.outcome.default_label}; waiting {wait_s:g} s.")
        deadline = time.perf_counter() + wait_s
        while (self.keys.outcome is None and not self._dropping() and not events["exit_early"]
               and time.perf_counter() < deadline):
            time.sleep(0.05)
        events["exit_early"] = False

    def _save(self, outcome: Outcome) -> None:
        dataset = self.dataset
        length = pending_frames(dataset)
        if length == 0:
            logger.warning("episode %d has no frame: nothing to save", dataset.num_episodes)
            return
        label_episode(dataset, outcome)
        index = dataset.num_episodes
        dataset.save_episode()
        self.saved += 1
        self.log.add(index, outcome, length, self.cfg.dataset.single_task)
        print(self.log.status(index, outcome, length))

    def _keep_interrupted(self, error: BaseException) -> None:
        """Save the take that `error` cut short (or drop it if a drop key was pressed), then let it go on."""
        try:
            if self._dropping():
                self.dataset.clear_episode_buffer()
                return
            if pending_frames(self.dataset) == 0 or not keep_complete_frames(self.dataset):
                return
            self._save(self.keys.outcome or Outcome.interrupted(error))
        except Exception:  # the original error is the one to report; this one is logged
            logger.exception("Could not save the interrupted episode")


def record_labelled(cfg: LabelledRecordConfig, key_source: KeySource | None = None,
                    teleop_action_processor=None, robot_action_processor=None,
                    robot_observation_processor=None) -> LeRobotDataset:
    """Record `cfg.dataset.num_episodes` labelled episodes; returns the finalized dataset.

    `key_source`: where keys come from (default: LeRobot's keyboard listener). The processors default
    to LeRobot's identity pipelines, as in `lerobot-record`. Ctrl-C (KeyboardInterrupt) and errors
    propagate after the current take is saved and the dataset finalized.
    """
    logger.info(pformat(asdict(cfg)))
    if cfg.display_data:
        init_visualization(cfg.display_mode, session_name="recording", ip=cfg.display_ip, port=cfg.display_port)
    robot = make_robot_from_config(cfg.robot)
    teleop = make_teleoperator_from_config(cfg.teleop)
    check_devices(robot, teleop)
    defaults = make_default_processors()
    processors = (teleop_action_processor or defaults[0], robot_action_processor or defaults[1],
                  robot_observation_processor or defaults[2])
    features = recording_features(robot, processors[0], processors[2], cfg.dataset.video)
    dataset = open_dataset(cfg, robot, features)
    keys = OutcomeKeys(cfg.outcome.failure_reasons, cfg.outcome.digits, cfg.outcome.label_ends_episode)
    source = key_source if key_source is not None else KeyboardKeys()
    recorder = None
    try:
        teleop.connect()  # before the robot, as lerobot-record (no idle robot while the teleop starts)
        robot.connect()
        source.start(keys.press)
        recorder = LabelledRecorder(cfg, robot, teleop, dataset, keys, source, processors)
        with VideoEncodingManager(dataset):  # finalizes the dataset, also on errors
            recorder.run()
    finally:
        log_say("Stop recording", cfg.play_sounds, blocking=True)
        dataset.finalize()
        disconnect_devices(cfg, robot, teleop, source)
        print(f"{dataset.num_episodes} episodes in {dataset.root} (repo_id {cfg.dataset.repo_id}); "
              f"outcomes in {OUTCOMES_FILE}.")
    push_and_exit(cfg, dataset)
    return dataset


def disconnect_devices(cfg, robot, teleop, source: KeySource) -> None:
    """The end of a recording session, also after Ctrl-C or an error: disconnect the robot and the
    teleoperator (if any) that are connected, stop the key source, close the visualization."""
    if robot.is_connected:
        robot.disconnect()
    if teleop is not None and teleop.is_connected:
        teleop.disconnect()
    source.stop()
    if cfg.display_data:
        shutdown_visualization(cfg.display_mode)


def push_and_exit(cfg, dataset: LeRobotDataset) -> None:
    """`--dataset.push_to_hub`: upload the dataset (when it has an episode), then say goodbye."""
    if cfg.dataset.push_to_hub:
        if dataset.num_episodes > 0:
            dataset.push_to_hub(tags=cfg.dataset.tags, private=cfg.dataset.private,
                                dataset_description=dataset_card_description(dataset.root))
        else:
            logger.warning("No episodes saved: nothing pushed to the hub")
    log_say("Exiting", cfg.play_sounds)
