"""Turn `--policy_paths` entries into runnable policies, exactly as `lerobot-eval` builds them.

A checkpoint's processors (normalization stats, renames, tokenizers) are part of the policy: we load
them from the checkpoint with LeRobot's `make_pre_post_processors(pretrained_path=...)` and add the
env's own processors, so every registered policy type, ours included, loads through one path.
The features are checked against the env first, so a mismatch fails in seconds, not after a rollout.
An entry written as a local path (absolute, ./, ../, ~, more than the one slash of a Hub id owner/name)
is never sent to the Hub: a missing folder, or one without config.json, is named as such.
`builtin:expert` and `builtin:hold` name the reference policies of `baselines.py`;
`noise:<gaussian|zero|tanh>:<checkpoint>` a base decoded from that initial noise (`noise_baselines.py`).
`load_policy_on_robot` is the same for a LeRobot robot (`lerobot-steer-eval-real`): the features are
checked against what the robot records, and there are no env processors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.policies.factory import get_policy_class, make_policy, make_pre_post_processors

from lerobot_steer.cli_errors import user_input
from lerobot_steer.steering.base_adapter import CheckpointError, load_checkpoint_config

from .baselines import BUILTIN_PREFIX, make_builtin, make_robot_builtin
from .checks import check_policy_matches_env, check_policy_matches_robot
from .noise_baselines import NOISE_PREFIX, FixedNoiseBase, parse_noise_spec
from .rollout import PolicyUnderTest


def checkpoint_label(path: str) -> str:
    """A short readable name: `<run>@<step>` for `<run>/checkpoints/<step>/pretrained_model`."""
    if path.startswith(BUILTIN_PREFIX):
        return path
    if path.startswith(NOISE_PREFIX):
        with user_input():  # a malformed noise:<kind>:<checkpoint> entry
            kind, base = parse_noise_spec(path)
        return f"{checkpoint_label(base)}[noise={kind}]"
    parts = Path(path).parts
    if parts and parts[-1] == "pretrained_model":
        parts = parts[:-1]
    if len(parts) >= 3 and parts[-2] == "checkpoints":
        return f"{parts[-3]}@{parts[-1]}"
    return parts[-1] if parts else path


def unique_labels(paths: list[str]) -> list[str]:
    labels, seen = [], {}
    for path in paths:
        label = checkpoint_label(path)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return labels


def load_policy_config(path: str, device: str | None) -> PreTrainedConfig:
    """The checkpoint's config, with the inference device chosen here (a checkpoint trained on
    CUDA must still evaluate on a CPU machine).

    A local path that does not exist or holds no config.json, and a Hub repo id (owner/name) that
    cannot be fetched, fail with a CheckpointError saying which (`load_checkpoint_config`).
    """
    config = load_checkpoint_config(path)
    config.pretrained_path = Path(path)
    # Not LeRobot's auto_select_torch_device: it warns on every CPU-only call (one line per checkpoint
    # of an evaluation) and would pick mps, where the bases' DDIM/flow decoding is untested.
    config.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return config


def load_policy(path: str, env_cfg, device: str | None = None, label: str | None = None) -> PolicyUnderTest:
    """Policy, its processors and the env's processors for one `--policy_paths` entry."""
    label = label or checkpoint_label(path)
    if path.startswith(BUILTIN_PREFIX):
        with user_input():  # an unknown builtin:<name>
            return make_builtin(path, env_cfg, label)
    if path.startswith(NOISE_PREFIX):
        with user_input():  # a malformed noise:<kind>:<checkpoint> entry
            kind, base = parse_noise_spec(path)
        put = load_policy(base, env_cfg, device, label)
        put.policy, put.path = FixedNoiseBase(put.policy, kind), path
        return put
    config = load_policy_config(path, device)
    check_policy_matches_env(config, env_cfg, label)
    policy = make_policy(cfg=config, env_cfg=env_cfg)
    policy.eval()
    preprocessor, postprocessor = checkpoint_processors(config, path)
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=config)
    return PolicyUnderTest(
        label=label, path=str(path), policy_type=config.type, policy=policy,
        preprocessor=preprocessor, postprocessor=postprocessor,
        env_preprocessor=env_preprocessor, env_postprocessor=env_postprocessor,
    )


def checkpoint_processors(config: PreTrainedConfig, path: str):
    """The checkpoint's own pre- and postprocessor (normalization stats, renames, tokenizer), on `config.device`."""
    return make_pre_post_processors(
        policy_cfg=config,
        pretrained_path=str(path),
        preprocessor_overrides={"device_processor": {"device": str(config.device)}},
    )


def load_policy_on_robot(path: str, robot, dataset_features: dict, device: str | None = None,
                         label: str | None = None) -> PolicyUnderTest:
    """Policy and processors for one `--policy_paths` entry, to run on `robot`.

    `dataset_features`: what LeRobot records for the robot (`record.dataset.recording_features`); a
    checkpoint whose inputs or actions differ is refused here, before anything connects or moves.
    The weights load as `lerobot-rollout` loads them (the policy class's `from_pretrained`).
    """
    label = label or checkpoint_label(path)
    if path.startswith(BUILTIN_PREFIX):
        with user_input():  # an unknown builtin:<name>
            return make_robot_builtin(path, robot, dataset_features, label)
    if path.startswith(NOISE_PREFIX):
        with user_input():  # a malformed noise:<kind>:<checkpoint> entry
            kind, base = parse_noise_spec(path)
        put = load_policy_on_robot(base, robot, dataset_features, device, label)
        put.policy, put.path = FixedNoiseBase(put.policy, kind), path
        return put
    config = load_policy_config(path, device)
    check_policy_matches_robot(config, dataset_features, robot.name, label)
    if getattr(config, "use_peft", False):
        raise CheckpointError(f"{path}: a PEFT adapter; lerobot-steer-eval-real loads full checkpoints only "
                              "(merge the adapter into its base first, or run it with lerobot-rollout)")
    policy = get_policy_class(config.type).from_pretrained(str(path), config=config)
    policy.to(config.device)
    policy.eval()
    preprocessor, postprocessor = checkpoint_processors(config, path)
    return PolicyUnderTest(label=label, path=str(path), policy_type=config.type, policy=policy,
                           preprocessor=preprocessor, postprocessor=postprocessor)
