"""The dataset a labelled recording writes into: created new, or resumed after checking it fits.

The features are the ones `lerobot-record` would record for this robot and these processors (built
with LeRobot's own functions), plus the outcome columns. Resuming appends to a dataset only when its
features are exactly these: a dataset recorded without the outcome columns (by `lerobot-record`, or
with other cameras) would either be refused by LeRobot's writer on the first frame or end up with
columns missing from its earlier episodes, so it is refused up front with the fix spelled out.
"""

from __future__ import annotations

from pathlib import Path

from lerobot.common.control_utils import sanity_check_dataset_robot_compatibility
from lerobot.datasets import LeRobotDataset, aggregate_pipeline_dataset_features, create_initial_features
from lerobot.utils.constants import DEFAULT_FEATURES, HF_LEROBOT_HOME
from lerobot.utils.feature_utils import combine_feature_dicts

from lerobot_steer.cli_errors import mark_user_error

from .outcomes import OUTCOME_FEATURES


def recording_features(robot, teleop_action_processor, robot_observation_processor, use_videos: bool) -> dict:
    """`lerobot-record`'s dataset features for `robot` (action, observation.state, cameras) + the outcome columns."""
    recorded = combine_feature_dicts(
        aggregate_pipeline_dataset_features(
            pipeline=teleop_action_processor,
            initial_features=create_initial_features(action=robot.action_features),
            use_videos=use_videos,
        ),
        aggregate_pipeline_dataset_features(
            pipeline=robot_observation_processor,
            initial_features=create_initial_features(observation=robot.observation_features),
            use_videos=use_videos,
        ),
    )
    return {**recorded, **OUTCOME_FEATURES}


def dataset_root(cfg) -> Path:
    """`--dataset.root`, or LeRobot's default `$HF_LEROBOT_HOME/<repo_id>`."""
    return Path(cfg.dataset.root) if cfg.dataset.root else HF_LEROBOT_HOME / cfg.dataset.repo_id


def feature_mismatch(existing: dict, wanted: dict) -> str:
    """What differs between a dataset's features and this recording's ('' when nothing does)."""
    existing = {k: v for k, v in existing.items() if k not in DEFAULT_FEATURES}
    wanted = {k: v for k, v in wanted.items() if k not in DEFAULT_FEATURES}
    lines = []
    if missing := sorted(set(wanted) - set(existing)):
        lines.append(f"the dataset has no {missing}")
    if extra := sorted(set(existing) - set(wanted)):
        lines.append(f"this recording would not write {extra}")
    for key in sorted(set(existing) & set(wanted)):
        a, b = existing[key], wanted[key]
        for attr in ("dtype", "shape", "names"):
            va, vb = a.get(attr), b.get(attr)
            if attr == "shape":
                va, vb = tuple(va or ()), tuple(vb or ())
            elif attr == "names" and va is not None and vb is not None:
                va, vb = list(va), list(vb)
            if va != vb:
                lines.append(f"'{key}' {attr}: dataset {va}, this recording {vb}")
    return "; ".join(lines)


def open_dataset(cfg, robot, features: dict) -> LeRobotDataset:
    """`LeRobotDataset.create` (with LeRobot's repo-id stamp) or, with `--resume=true`, `.resume` on a
    dataset whose features, fps and robot type are this recording's."""
    num_cameras = len(getattr(robot, "cameras", {}))
    writer_args = dict(
        batch_encoding_size=cfg.dataset.video_encoding_batch_size,
        rgb_encoder=cfg.dataset.rgb_encoder,
        depth_encoder=cfg.dataset.depth_encoder,
        encoder_threads=cfg.dataset.encoder_threads,
        streaming_encoding=cfg.dataset.streaming_encoding,
        encoder_queue_maxsize=cfg.dataset.encoder_queue_maxsize,
        image_writer_processes=cfg.dataset.num_image_writer_processes if num_cameras else 0,
        image_writer_threads=cfg.dataset.num_image_writer_threads_per_camera * num_cameras,
    )
    if cfg.resume:
        root = dataset_root(cfg)
        if not (root / "meta" / "info.json").exists():
            raise mark_user_error(FileNotFoundError(
                f"--resume=true: no dataset at {root} (no meta/info.json). Give the --dataset.root (and the "
                "--dataset.repo_id, with its date stamp if it got one) of the recording to append to, or drop "
                "--resume to start a new one."))
        dataset = LeRobotDataset.resume(cfg.dataset.repo_id, root=root, **writer_args)
        mismatch = feature_mismatch(dataset.features, features)
        if mismatch:
            dataset.finalize()
            raise mark_user_error(ValueError(
                f"--resume=true: cannot append to {root}: its features differ from this recording's "
                f"(field 'features': {mismatch}). A dataset recorded without the outcome columns "
                "(next.reward, next.success, next.done), e.g. by lerobot-record, or with other cameras or "
                "--dataset.video, cannot take labelled episodes. Fix: record into a new --dataset.root "
                "(and --dataset.repo_id), or resume with the robot, cameras and --dataset.video it was "
                "recorded with."))
        try:
            sanity_check_dataset_robot_compatibility(dataset, robot, cfg.dataset.fps, features)
        except ValueError as e:
            dataset.finalize()
            raise mark_user_error(ValueError(
                f"--resume=true: cannot append to {root}: {e}\nFix: use the --robot.type and --dataset.fps it "
                "was recorded with, or record into a new --dataset.root.")) from e
        return dataset
    cfg.dataset.stamp_repo_id()
    root = dataset_root(cfg)
    if root.exists():
        raise mark_user_error(FileExistsError(
            f"--dataset.root={root} already exists: pass --resume=true to append to it, or choose a new folder."))
    return LeRobotDataset.create(
        cfg.dataset.repo_id, cfg.dataset.fps, root=root, robot_type=robot.name, features=features,
        use_videos=cfg.dataset.video, **writer_args,
    )
