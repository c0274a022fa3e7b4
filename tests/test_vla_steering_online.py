"""Steering a VLA base online: `lerobot-steer-rl --policy.type=dsrl|dyna_vgd` over a SmolVLA checkpoint.

The learner's batches come from the replay buffer through LeRobot's `RLTrainer`, which runs the
policy's preprocessor on observations alone; a VLA's tokenizer step needs the task string, so before
`LearnerPreprocessor` every update failed with `KeyError: 'task'`. These runs use a tiny random-weight
SmolVLA (LeRobot's class and processors, built offline) on the sim's front camera and joints.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers_bases import one_thread, sim_smolvla, vla_builds  # noqa: F401  (pytest fixtures)

from lerobot_steer.rl.acting import LearnerPreprocessor
from lerobot_steer.sim.env_config import SO101SimEnvConfig

SIM = ["--env.type=so101_sim", "--env.obs_type=pixels", "--env.cameras=[front]", "--env.image_height=32",
       "--env.image_width=32", "--env.episode_length=16", "--n_envs=2", "--policy.device=cpu", "--progress=false",
       "--batch_size=4", "--prefill_steps=32", "--eval.freq=0", "--log_freq=32", "--seed=3"]


def steer_rl(monkeypatch, *args) -> None:
    """`lerobot-steer-rl <args>` in this process (the tiny SmolVLA builds only with `vla_builds` active)."""
    from lerobot_steer.rl.train import main

    monkeypatch.setattr(sys, "argv", ["lerobot-steer-rl", *map(str, args)])
    main()


def last_row(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_learner_preprocessor_tokenizes_the_run_task_into_replayed_observations(sim_smolvla):
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    config = SmolVLAConfig.from_pretrained(sim_smolvla)
    preprocessor, _ = make_pre_post_processors(config, pretrained_path=str(sim_smolvla))
    replayed = {"observation.state": torch.zeros(3, 6), "observation.images.front": torch.rand(3, 3, 32, 32)}
    # LeRobot's RLTrainer call, as it is in 0.6.1 (a seam: if this stops raising, LeRobot passes the task
    # itself and LearnerPreprocessor can go)
    with pytest.raises(KeyError, match="task"):
        preprocessor.process_observation(dict(replayed))
    task = SO101SimEnvConfig().task_description
    out = LearnerPreprocessor(preprocessor, task).process_observation(dict(replayed))
    tokens = out["observation.language.tokens"]
    assert tokens.shape[0] == 3 and (tokens == tokens[0]).all()
    # the same tokens the actor's batch gets for the task, and the observations normalized as usual
    acting = preprocessor({**replayed, "task": [task] * 3})
    assert torch.equal(tokens, acting["observation.language.tokens"])
    assert torch.allclose(out["observation.state"], acting["observation.state"])


@pytest.mark.slow  # three short runs of a tiny SmolVLA on the sim (~10 s each)
@pytest.mark.parametrize("policy_args", [
    ["--policy.type=dsrl"],  # DSRL-SAC, the online default
    ["--policy.type=dsrl", "--policy.variant=na"],  # its updates decode the base on replayed observations
    ["--policy.type=dyna_vgd"],
], ids=["dsrl_sac", "dsrl_na", "dyna_vgd"])
def test_dsrl_and_dyna_vgd_fine_tune_a_smolvla_base_online(sim_smolvla, policy_args, tmp_path, monkeypatch):
    out = tmp_path / "run"
    steer_rl(monkeypatch, *policy_args, f"--policy.base_policy_path={sim_smolvla}", *SIM, "--steps=64",
             "--save_freq=64", f"--output_dir={out}")
    row = last_row(out)
    assert row["env_steps"] == 64 and row["updates"] > 0
    assert math.isfinite(row["critic_loss"])
    # the checkpoint resumes: the updates go on from the replay buffer it saved
    steer_rl(monkeypatch, "--resume=true", "--steps=96", f"--output_dir={out}")
    resumed = last_row(out)
    assert resumed["env_steps"] == 96 and resumed["updates"] > row["updates"]
