"""The session of `lerobot-steer-eval-real`: checkpoints compared on one robot, episode by episode.

Order of work, so that a mistake costs no motion: every checkpoint is loaded and checked against the
features the robot records (`evaluation/loading.load_policy_on_robot`) before anything connects; then
the dataset is created (or resumed, after checking the session's checkpoints are the same), then the
robot connects.

The schedule: round i runs every checkpoint once, in the order given (`--order=interleaved`) or in a
seeded shuffle of it (`random`), so slow drift (lighting, a warming motor, the operator's resets) hits
all checkpoints alike. On `so101_sim` round i draws the scene `--seed` + i before each of its episodes,
so every checkpoint meets the same block and bowl poses (paired seeds, as in `lerobot-steer-eval`).
The sim robot would also redraw a scene on its own when it hears LeRobot's "Recording episode N"
announcement (see `sim/robot.py`), but a seeded `reset_scene` right after it is what makes the scenes
equal across checkpoints; the announcement is still made, for the operator of a real arm.

One episode, as `lerobot-steer-record`'s take (`recorder.LabelledRecorder`, whose label wait, drop and
interrupted-episode handling this class inherits): the policy runs for up to `--dataset.episode_time_s`
(LeRobot's `predict_action` and `make_robot_action`, the robot's processors, frames written through
`frames.OutcomeFrames`), then the reset period (skipped after the last episode), then the label (keys,
or the sim's outcome with `--label_source=sim`), then LeRobot's `save_episode`, a row in
`meta/outcomes.jsonl` (with the checkpoint, round and scene) and the report, rewritten from those rows.
Left arrow / r runs the same checkpoint on the same round again; the slot is only done once saved.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from pprint import pformat

import numpy as np
import torch

from lerobot.common.control_utils import follower_smooth_move_to, predict_action
from lerobot.datasets import LeRobotDataset, VideoEncodingManager
from lerobot.policies.utils import make_robot_action
from lerobot.processor import make_default_processors
from lerobot.robots import make_robot_from_config
from lerobot.teleoperators import make_teleoperator_from_config
from lerobot.utils.constants import ACTION, OBS_STR
from lerobot.utils.feature_utils import build_dataset_frame
from lerobot.utils.robot_utils import precise_sleep
from lerobot.utils.utils import log_say
from lerobot.utils.visualization_utils import (
    init_visualization,
    log_visualization_data,
)

from lerobot_steer.cli_errors import mark_user_error
from lerobot_steer.evaluation.loading import load_policy_on_robot, unique_labels
from lerobot_steer.evaluation.report import markdown_table
from lerobot_steer.evaluation.rollout import PolicyUnderTest
from lerobot_steer.sim.robot import SO101Sim

from .dataset import dataset_root, open_dataset, recording_features
from .devices import check_devices
from .eval_config import EvalRealConfig
from .eval_report import COUNTED, write_real_report
from .frames import OutcomeFrames, label_episode, pending_frames
from .keys import KeyboardKeys, KeySource, OutcomeKeys, describe
from .outcome_log import OUTCOMES_FILE, read_outcomes
from .outcomes import INTERRUPTED, Outcome
from .recorder import LabelledRecorder, default_outcome, disconnect_devices, push_and_exit

logger = logging.getLogger(__name__)

SESSION_FILE = "meta/eval_session.json"
ENDED_BY_KEY = "ended by a key before --dataset.episode_time_s (the sim labels only finished episodes)"
SETTLE_S = 0.5  # start_pose: seconds the final pose is held after the move (position control lags)


def schedule(n_rounds: int, n_policies: int, order: str, seed: int) -> list[tuple[int, int]]:
    """(round, checkpoint index) in the order they run; the same for the same arguments (resume)."""
    slots = []
    for r in range(n_rounds):
        if order == "random":
            ranks = [int(i) for i in np.random.default_rng([seed, r]).permutation(n_policies)]
        else:
            ranks = list(range(n_policies))
        slots += [(r, i) for i in ranks]
    return slots


def session_rows(root: Path, labels: list[str]) -> list[dict]:
    """The outcome rows of this session's checkpoints."""
    return [row for row in read_outcomes(root) if row.get("policy") in labels]


def done_slots(rows: list[dict]) -> set[tuple[int, str]]:
    """(round, checkpoint) pairs with a saved episode that was not cut short (those run again on resume)."""
    return {(row["round"], row["policy"]) for row in rows if row["label"] != INTERRUPTED}


def _motor_key(name: str) -> str:
    return name if name.endswith(".pos") else f"{name}.pos"


class EvalSession(LabelledRecorder):
    """The episodes of one evaluation session on a connected robot."""

    def __init__(self, cfg: EvalRealConfig, robot, teleop, dataset: LeRobotDataset, keys: OutcomeKeys,
                 source: KeySource, processors: tuple, policies: list[PolicyUnderTest], session: dict,
                 output_dir: Path):
        super().__init__(cfg, robot, teleop, dataset, keys, source, processors)
        self.policies, self.session, self.output_dir = policies, session, Path(output_dir)
        self.labels = [put.label for put in policies]
        self.is_sim = isinstance(robot, SO101Sim)
        self.realtime = cfg.realtime if cfg.realtime is not None else not self.is_sim
        self.slot: tuple[int, int] = (0, 0)
        self.last_slot = False
        self.sim_first_success: int | None = None  # so101_sim: frames up to the first success
        self.ended_by_key = False  # the running episode was ended by a key, not by its time or the sim
        self._interrupting: BaseException | None = None  # the error whose episode is being saved
        self.report: dict | None = None

    # ------------------------------------------------------------------ schedule
    def pending(self) -> list[tuple[int, int]]:
        done = done_slots(session_rows(self.dataset.root, self.labels))
        slots = schedule(self.cfg.dataset.num_episodes, len(self.policies), self.cfg.order, self.cfg.seed)
        return [(r, i) for r, i in slots if (r, self.labels[i]) not in done]

    def run(self) -> None:
        """Every pending (round, checkpoint) slot, until done or a stop key."""
        slots = self.pending()
        if not slots:
            print(f"Nothing left to run: {self.cfg.dataset.num_episodes} episodes per checkpoint are saved.")
            return
        if self.cfg.reset.mode == "start_pose":
            self.move_to_start()
        attempt = k = 0
        while k < len(slots) and not self.keys.events["stop_recording"]:
            self.slot, self.last_slot = slots[k], k == len(slots) - 1
            saved = self.saved
            self.take(attempt)
            attempt += 1
            k += self.saved > saved  # a dropped (re-run) or empty take runs the same slot again

    # ------------------------------------------------------------------ one episode
    def take(self, attempt: int) -> None:
        cfg, keys, dataset = self.cfg, self.keys, self.dataset
        round_, p = self.slot
        put = self.policies[p]
        keys.start_episode()
        pending = True
        try:
            log_say(f"Recording episode {dataset.num_episodes}", cfg.play_sounds)
            scene = f", scene seed {self.scene_seed}" if self.is_sim else ""
            shown = "checkpoint hidden (--blind)" if cfg.blind else put.label
            print(f"episode {dataset.num_episodes}: round {round_ + 1}/{cfg.dataset.num_episodes}, "
                  f"{shown}{scene}")
            self.run_policy(put, attempt)
            keys.phase = "reset"
            if not keys.events["stop_recording"] and (not self.last_slot or keys.events["rerecord_episode"]):
                self.reset_period()
            self.source.after_episode(attempt)
            if (cfg.label_source == "keys" and keys.outcome is None and not self._dropping()
                    and self.source.interactive):
                self._wait_for_label()
            if self._dropping():
                pending = False
                self._drop()
                return
            outcome = self.outcome()
            pending = False
            self._save(outcome)
        except BaseException as error:
            if pending:
                self._interrupting = error
                try:
                    self._keep_interrupted(error)
                finally:
                    self._interrupting = None
            raise

    @property
    def scene_seed(self) -> int | None:
        return self.cfg.seed + self.slot[0] if self.is_sim else None

    def outcome(self) -> Outcome:
        """The label: the sim's outcome (`--label_source=sim`), else the last label key, else the default."""
        if self.cfg.label_source == "sim":
            if self.sim_first_success is not None:
                return Outcome.of_success()
            if self.ended_by_key:  # the sim cannot judge an episode cut short: not counted, run again on resume
                return Outcome(INTERRUPTED, ENDED_BY_KEY)
            return Outcome.of_failure(self.robot.env.outcome(False))
        return self.keys.outcome or default_outcome(self.cfg.outcome.default_label)

    def run_policy(self, put: PolicyUnderTest, attempt: int) -> None:
        """One episode of `put` on the robot, its frames written to the dataset's episode buffer."""
        cfg, robot, dataset, events = self.cfg, self.robot, self.dataset, self.keys.events
        fps = cfg.dataset.fps
        for part in (put.policy, put.preprocessor, put.postprocessor):
            if hasattr(part, "reset"):
                part.reset()  # a fresh episode: action queues, observation history, processor state
        if self.is_sim:
            robot.reset_scene(seed=self.scene_seed)
        self.sim_first_success = None
        self.ended_by_key = False
        device = torch.device(getattr(getattr(put.policy, "config", None), "device", None) or "cpu")
        use_amp = bool(getattr(getattr(put.policy, "config", None), "use_amp", False))
        frames = OutcomeFrames(dataset, lambda frame: self.source.on_frame(attempt, frame))
        max_frames = round(cfg.dataset.episode_time_s * fps)
        start = time.perf_counter()
        while True:
            if self.realtime and time.perf_counter() - start >= cfg.dataset.episode_time_s:
                break
            if not self.realtime and frames.frames >= max_frames:
                break
            if events["exit_early"]:
                events["exit_early"] = False
                self.ended_by_key = True
                break
            loop_start = time.perf_counter()
            obs = robot.get_observation()
            obs_processed = self.robot_observation_processor(obs)
            observation_frame = build_dataset_frame(dataset.features, obs_processed, prefix=OBS_STR)
            action = predict_action(observation_frame, put.policy, device, put.preprocessor, put.postprocessor,
                                    use_amp, task=cfg.dataset.single_task, robot_type=robot.robot_type)
            action_values = make_robot_action(action, dataset.features)
            robot.send_action(self.robot_action_processor((action_values, obs)))
            action_frame = build_dataset_frame(dataset.features, action_values, prefix=ACTION)
            frames.add_frame({**observation_frame, **action_frame, "task": cfg.dataset.single_task})
            if self.is_sim and self.sim_first_success is None and robot.last_info.get("is_success"):
                self.sim_first_success = frames.frames
                if cfg.label_source == "sim":
                    break  # as lerobot-steer-eval: the episode ends at the first success
            if cfg.display_data:
                log_visualization_data(cfg.display_mode, observation=obs_processed, action=action_values,
                                       compress_images=self.display_compressed_images)
            if self.realtime:
                precise_sleep(max(1 / fps - (time.perf_counter() - loop_start), 0.0))

    # ------------------------------------------------------------------ resets
    def reset_period(self) -> None:
        cfg = self.cfg
        log_say("Reset the environment", cfg.play_sounds)
        if cfg.reset.mode == "teleop":
            self.hand_over_to_teleop()
            self._loop(None, cfg.reset.time_s)  # lerobot-record's reset period: the leader drives
            return
        if cfg.reset.mode == "start_pose":
            self.move_to_start()
        self.countdown(cfg.reset.time_s)

    def countdown(self, seconds: float) -> None:
        """Wait `seconds` while the operator resets the scene; right arrow / n (or a stop key) ends it."""
        events = self.keys.events
        end = time.perf_counter() + seconds
        shown = None
        while not events["exit_early"] and not events["stop_recording"]:
            left = end - time.perf_counter()
            if left <= 0:
                break
            if shown != int(left):
                shown = int(left)
                print(f"reset: {shown + 1} s left (right arrow / n: start the next episode now)", flush=True)
            time.sleep(min(0.05, left))
        events["exit_early"] = False

    def start_pose(self) -> dict[str, float]:
        return self.session["start_pose"]

    def move_to_start(self) -> None:
        """Move the arm slowly to the start pose (LeRobot's `follower_smooth_move_to`; the robot's
        `max_relative_target` caps each step), then hold it for `SETTLE_S`."""
        move_to_pose(self.robot, self.start_pose(), self.cfg.reset.move_time_s, self.cfg.dataset.fps)

    def hand_over_to_teleop(self) -> None:
        """Slide the follower to the leader's pose before the leader drives (as lerobot-rollout's
        episodic strategy does for a leader that cannot be driven), so it does not jump."""
        slide_to_teleop(self.robot, self.teleop, self.teleop_action_processor, self.robot_action_processor,
                        self.cfg.dataset.fps)

    # ------------------------------------------------------------------ saving and the report
    def _save(self, outcome: Outcome) -> None:
        dataset, cfg = self.dataset, self.cfg
        round_, p = self.slot
        put = self.policies[p]
        length = pending_frames(dataset)
        if length == 0:
            logger.warning("episode %d has no frame: nothing to save", dataset.num_episodes)
            return
        key_label = self.keys.outcome
        if self._interrupting is not None and cfg.label_source == "sim":
            outcome = Outcome.interrupted(self._interrupting)  # a key label does not label a sim episode
        label_episode(dataset, outcome)
        index = dataset.num_episodes
        dataset.save_episode()
        self.saved += 1
        extra = {"policy": put.label, "policy_path": put.path, "round": round_, "label_source": cfg.label_source}
        if self.is_sim:
            extra.update(scene_seed=self.scene_seed, sim_outcome=self.robot.env.outcome(),
                         sim_steps_to_success=self.sim_first_success)
            if cfg.label_source == "sim" and key_label is not None:
                extra["key_label"] = describe(key_label)
        self.log.add(index, outcome, length, cfg.dataset.single_task, extra)
        print(self.status(index, put.label, outcome, length))
        self.write_report()

    def status(self, index: int, label: str, outcome: Outcome, length: int) -> str:
        """One line: the episode just saved, then every checkpoint's successes over counted episodes."""
        rows = session_rows(self.dataset.root, self.labels)
        counts = []
        for name in self.labels:
            counted = [r for r in rows if r["policy"] == name and r["label"] in COUNTED]
            counts.append(f"{name} {sum(r['success'] for r in counted)}/{len(counted)}")
        if self.cfg.blind:  # the running counts per checkpoint would name it too
            return f"episode {index} (round {self.slot[0] + 1}): {describe(outcome)}, {length} frames | {len(rows)} saved"
        return f"episode {index} ({label}, round {self.slot[0] + 1}): {describe(outcome)}, {length} frames | " + ", ".join(counts)

    def write_report(self) -> dict:
        dataset = {"root": str(self.dataset.root), "repo_id": self.cfg.dataset.repo_id,
                   "outcomes": str(Path(self.dataset.root) / OUTCOMES_FILE)}
        self.report, _ = write_real_report(self.session, session_rows(self.dataset.root, self.labels), dataset,
                                           self.output_dir)
        return self.report


# ---------------------------------------------------------------------- session file


def move_to_pose(robot, pose: dict[str, float], move_time_s: float, fps: int) -> None:
    """Move the arm slowly from where it is to `pose` (joint -> position; joints it does not name stay)
    with LeRobot's `follower_smooth_move_to` (the robot's `max_relative_target` caps each step), then hold
    it for `SETTLE_S` while the joints catch up. The start-pose reset of eval-real and rl-robot."""
    obs = robot.get_observation()
    current = {k: float(obs[k]) for k in robot.action_features if k in obs}
    target = {**current, **pose}
    print(f"moving to the start pose over {move_time_s:g} s")
    follower_smooth_move_to(robot, current, target, duration_s=move_time_s, fps=fps)
    for _ in range(max(1, round(SETTLE_S * fps))):  # hold the pose while the joints catch up
        robot.send_action(target)
        precise_sleep(1 / fps)


def slide_to_teleop(robot, teleop, teleop_action_processor, robot_action_processor, fps: int) -> None:
    """Slide the follower to the leader's pose over 1 s before the leader drives (as lerobot-rollout's
    episodic strategy does for a leader that cannot be driven), so it does not jump."""
    obs = robot.get_observation()
    current = {k: v for k, v in obs.items() if k.endswith(".pos")}
    action = teleop_action_processor((teleop.get_action(), obs))
    target = robot_action_processor((action, obs))
    follower_smooth_move_to(robot, current, target, duration_s=1.0, fps=fps)


def _start_pose_of(cfg: EvalRealConfig, robot) -> dict[str, float] | None:
    """`--reset.start_pose` with motor keys, checked against the robot's action features."""
    if cfg.reset.start_pose is None:
        return None
    pose = {_motor_key(k): float(v) for k, v in cfg.reset.start_pose.items()}
    unknown = sorted(set(pose) - set(robot.action_features))
    if unknown:
        raise mark_user_error(ValueError(
            f"--reset.start_pose: unknown joint(s) {unknown}; the robot {robot.name} has {list(robot.action_features)}."))
    return pose


def new_session(cfg: EvalRealConfig, robot, policies: list[PolicyUnderTest], cap) -> dict:
    return {
        "policy_paths": list(cfg.policy_paths), "labels": [p.label for p in policies],
        "policy_types": [p.policy_type for p in policies], "order": cfg.order, "seed": cfg.seed,
        "label_source": cfg.label_source, "robot_type": cfg.robot.type, "robot_id": robot.id,
        "is_sim": isinstance(robot, SO101Sim), "fps": cfg.dataset.fps, "task": cfg.dataset.single_task,
        "reset_mode": cfg.reset.mode, "start_pose": _start_pose_of(cfg, robot),
        "max_relative_target": cap,
    }


def check_resumable(cfg: EvalRealConfig, root: Path) -> dict | None:
    """The saved session of `root`, refused (naming the fix) when this command would run another one.
    None when there is none yet (a session that failed before its robot connected)."""
    path = root / SESSION_FILE
    if not path.exists():
        info = root / "meta" / "info.json"
        if info.exists() and json.loads(info.read_text()).get("total_episodes", 0) > 0:
            raise mark_user_error(ValueError(
                f"--resume=true: {root} has episodes but no {SESSION_FILE}: it was not recorded by "
                "lerobot-steer-eval-real (e.g. lerobot-steer-record demonstrations). Evaluate into a new --dataset.root."))
        return None
    saved = json.loads(path.read_text())
    differ = [f"--{name}: saved {saved[key]}, now {value}" for name, key, value in (
        ("policy_paths", "policy_paths", list(cfg.policy_paths)), ("order", "order", cfg.order),
        ("seed", "seed", cfg.seed), ("label_source", "label_source", cfg.label_source),
        ("robot.type", "robot_type", cfg.robot.type)) if saved[key] != value]
    if differ:
        raise mark_user_error(ValueError(
            f"--resume=true: {root} holds an evaluation of other settings ({'; '.join(differ)}). Resume with the "
            "saved ones (the same checkpoints in the same order), or evaluate into a new --dataset.root."))
    return saved


def write_session(root: Path, session: dict) -> None:
    path = root / SESSION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(session, indent=2))


# ---------------------------------------------------------------------- entry


def evaluate_on_robot(cfg: EvalRealConfig, key_source: KeySource | None = None) -> dict:
    """Run the session; returns the report (also written to the output folder after every episode).

    Ctrl-C (KeyboardInterrupt) and errors propagate after the current episode is saved (labelled
    `interrupted` unless labelled), the dataset finalized and the report written.
    """
    logger.info(pformat(asdict(cfg)))
    cap = cfg.apply_safety_defaults()
    robot = make_robot_from_config(cfg.robot)
    processors = make_default_processors()
    features = recording_features(robot, processors[0], processors[2], cfg.dataset.video)
    # Every checkpoint loads and is checked against the robot's features before anything connects.
    labels = unique_labels(cfg.policy_paths)
    policies = [load_policy_on_robot(path, robot, features, cfg.device, label)
                for path, label in zip(cfg.policy_paths, labels, strict=True)]
    start_pose = _start_pose_of(cfg, robot)
    saved = check_resumable(cfg, dataset_root(cfg)) if cfg.resume else None
    teleop = make_teleoperator_from_config(cfg.teleop) if cfg.teleop is not None else None
    check_devices(robot, teleop)
    if cfg.display_data:
        init_visualization(cfg.display_mode, session_name="evaluation", ip=cfg.display_ip, port=cfg.display_port)
    dataset = open_dataset(cfg, robot, features)
    root = Path(dataset.root)
    session = saved or new_session(cfg, robot, policies, cap)
    if start_pose is not None:
        session["start_pose"] = start_pose
    output_dir = Path(cfg.output_dir) if cfg.output_dir else root / "eval"
    keys = OutcomeKeys(cfg.outcome.failure_reasons, cfg.outcome.digits, cfg.outcome.label_ends_episode)
    source = key_source if key_source is not None else KeyboardKeys()
    runner = None
    try:
        if teleop is not None:
            teleop.connect()
        robot.connect()
        if session["start_pose"] is None:  # the pose the arm has now, kept for --resume
            obs = robot.get_observation()
            session["start_pose"] = {k: float(obs[k]) for k in robot.action_features if k in obs}
        write_session(root, session)
        source.start(keys.press)
        runner = EvalSession(cfg, robot, teleop, dataset, keys, source, processors, policies, session, output_dir)
        with VideoEncodingManager(dataset):
            runner.run()
    finally:
        log_say("Stop recording", cfg.play_sounds, blocking=True)
        dataset.finalize()
        if runner is not None and robot.is_connected and cfg.return_to_start_at_end(runner.is_sim):
            try:  # before the motors go limp (so101_follower disables torque on disconnect)
                runner.move_to_start()
            except BaseException:  # noqa: BLE001  (a second Ctrl-C stops the move; disconnect anyway)
                logger.warning("Could not return the arm to the start pose", exc_info=True)
        disconnect_devices(cfg, robot, teleop, source)
        if runner is not None:
            try:  # the report of what was done, also after Ctrl-C or an error (which must stay the one raised)
                print(markdown_table(runner.write_report()))
            except Exception:
                logger.exception("Could not write the report to %s", output_dir)
            print(f"{dataset.num_episodes} episodes in {root} (repo_id {cfg.dataset.repo_id}); report in {output_dir}.")
    push_and_exit(cfg, dataset)
    return runner.report
