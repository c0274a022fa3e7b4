"""Offline data mixed into online training (`lerobot-steer-rl --dataset.*`, RLPD-style).

* the dataset's chunks land in a buffer with the online layout and the online MDP's returns: episodes
  cut at their first success (the generator records a retreat after it), the success chunk terminal
  with reward 1, actions normalized as acting normalizes them;
* every update batch is half online, half offline, and the offline half carries NaN where only
  acting knows the value (DSRL's noise), so a learner that read it would fail loudly;
* the CLI picks DSRL-NA when a dataset is given, refuses DSRL-SAC with one, and resumes exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import BIN, run_cli
from safetensors.torch import load_file
from test_rl_train import FAST

from lerobot.configs.default import DatasetConfig

pytestmark = pytest.mark.slow  # needs `state_checkpoint` (lerobot-train in a subprocess)


def _dataset_cfg(state_dataset) -> DatasetConfig:
    root, _ = state_dataset
    return DatasetConfig(repo_id="local/so101_state", root=str(root), video_backend="pyav")


@pytest.fixture(scope="module")
def na_policy(state_checkpoint):
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from lerobot_steer.policies.dsrl import DSRLConfig
    from lerobot_steer.sim.env_config import SO101SimEnvConfig

    env_cfg = SO101SimEnvConfig(obs_type="state")
    policy = make_policy(DSRLConfig(base_policy_path=str(state_checkpoint), variant="na", device="cpu",
                                    hidden_dims=[32, 32]), env_cfg=env_cfg)
    pre, _ = make_pre_post_processors(policy_cfg=policy.config)
    return policy, pre


def test_offline_chunks_follow_the_online_mdp(na_policy, state_dataset):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_steer.policies.common.frozen_base import first_success_frames
    from lerobot_steer.rl.offline_data import load_offline_buffer

    policy, pre = na_policy
    buffer = load_offline_buffer(_dataset_cfg(state_dataset), policy, pre, cut_at_success=True, seed=0, progress=False)
    root, report = state_dataset
    data = LeRobotDataset("local/so101_state", root=root, video_backend="pyav")
    first = first_success_frames(data.meta)
    assert (first >= 0).all()  # every expert episode succeeded
    # one chunk per frame up to and including each episode's first success; the retreat is dropped
    assert len(buffer) == int((first + 1).sum()) < data.num_frames
    rows = {k: v[: len(buffer)] for k, v in buffer.storage.items()}
    done, reward, n_steps = rows["done"], rows["reward"], rows["complementary_info.n_steps"]
    n_exec = policy.config.n_exec
    # the chunks that start 1..n_exec steps before the first success end with it: terminal, paid 1 once
    assert int(done.sum()) == len(first) * n_exec
    torch.testing.assert_close(reward[done], torch.ones(int(done.sum())))
    assert float(reward[~done].abs().max()) == 0.0
    assert sorted(n_steps[done].tolist()) == sorted(list(range(1, n_exec + 1)) * len(first))
    assert bool((n_steps[~done] == n_exec).all())
    assert rows["action"].shape[1:] == (n_exec, 6) and float(rows["action"].abs().max()) <= 1.0 + 1e-5  # MIN_MAX
    assert {k.split(".", 1)[1] for k in rows if k.startswith("state.")} == {
        "observation.state", "observation.environment_state"}
    assert rows["state.observation.state"].shape[1:] == (6,)  # one frame, as the online buffer stores


def test_update_batches_mix_half_offline_with_nan_for_acting_only_columns(na_policy, state_dataset):
    from lerobot_steer.rl.chunk_rollout import ChunkBatch
    from lerobot_steer.rl.offline_data import load_offline_buffer, mixed_with_offline
    from lerobot_steer.rl.replay_buffer import ChunkReplayBuffer

    policy, pre = na_policy
    offline = load_offline_buffer(_dataset_cfg(state_dataset), policy, pre, cut_at_success=True, seed=0, progress=False)
    online = ChunkReplayBuffer(64, seed=0)
    n, n_exec = 4, policy.config.n_exec
    obs = {"agent_pos": np.zeros((n, 6), np.float32), "environment_state": np.zeros((n, 10), np.float32)}
    online.add(ChunkBatch(obs=obs, action=np.full((n, n_exec, 6), 0.5, np.float32), reward=np.zeros(n),
                          next_obs=obs, terminated=np.zeros(n, bool), truncated=np.zeros(n, bool),
                          n_steps=np.full(n, n_exec), extras={"noise": np.zeros((n, 6), np.float32)}))
    batch = mixed_with_offline(online, offline, online_ratio=0.5).sample(16)
    noise = batch["complementary_info"]["noise"]
    assert noise.shape == (16, 6)
    assert not noise[:8].isnan().any() and noise[8:].isnan().all()  # online half first, then the dataset's
    assert bool((batch["action"][:8] == 0.5).all()) and not bool((batch["action"][8:] == 0.5).all())
    t = policy.transitions_from_replay(batch)
    loss, _ = policy.compute_loss(t)  # DSRL-NA never reads the noise: a finite loss on the mixed batch
    assert torch.isfinite(loss)

    cameras = ChunkReplayBuffer(8)
    cameras.add_columns({**{k: v[:2].numpy() for k, v in offline.storage.items()},
                         "state.observation.images.front": np.zeros((2, 3, 4, 4), np.uint8)})
    with pytest.raises(ValueError, match="observation.images.front"):
        mixed_with_offline(online, cameras, online_ratio=0.5)


def _rl(base, out, dataset_root, *extra, ok=True):
    return run_cli([BIN / "lerobot-steer-rl", "--policy.type=dsrl", f"--policy.base_policy_path={base}", *FAST,
                    "--dataset.repo_id=local/so101_state", f"--dataset.root={dataset_root}",
                    "--dataset.video_backend=pyav", "--eval.n_episodes=0", f"--output_dir={out}", *extra],
                   cwd=out.parent, ok=ok)


def test_cli_trains_dsrl_na_on_mixed_batches_and_resumes_exactly(state_checkpoint, state_dataset, tmp_path):
    root, _ = state_dataset
    straight = tmp_path / "straight"
    _rl(state_checkpoint, straight, root, "--steps=128", "--save_freq=64", "--log_freq=64")
    saved = json.loads((straight / "train_config.json").read_text())
    assert saved["policy"]["variant"] == "na" and saved["online_ratio"] == 0.5
    assert saved["dataset"]["repo_id"] == "local/so101_state"
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["updates"] > 0 and "noise_critic_loss" in rows[-1]

    resumed = tmp_path / "resumed"
    _rl(state_checkpoint, resumed, root, "--steps=64", "--save_freq=64", "--log_freq=64")
    run_cli([BIN / "lerobot-steer-rl", "--resume=true", f"--output_dir={resumed}", "--steps=128"], cwd=tmp_path)
    for part in ("pretrained_model/model.safetensors", "algorithm/model.safetensors"):
        a = load_file(str(straight / "checkpoints" / "last" / part))
        b = load_file(str(resumed / "checkpoints" / "last" / part))
        for key in a:  # the offline sampling stream continues where it stopped
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{part}: {key}")


def test_dsrl_sac_refuses_a_dataset_naming_the_variant(state_checkpoint, state_dataset, tmp_path):
    root, _ = state_dataset
    result = _rl(state_checkpoint, tmp_path / "sac", root, "--policy.variant=sac", "--steps=8", ok=False)
    log = result.stdout + result.stderr
    last = log.strip().splitlines()[-1]  # one line, not our traceback (LeRobot logs torchcodec's own here)
    assert result.returncode == 2 and last.startswith("error:") and "--policy.variant=na" in last
    assert not (tmp_path / "sac").exists()


def test_dyna_vgd_trains_its_critic_on_mixed_batches(state_checkpoint, state_dataset, tmp_path):
    root, _ = state_dataset
    out = tmp_path / "vgd"
    run_cli([BIN / "lerobot-steer-rl", "--policy.type=dyna_vgd", f"--policy.base_policy_path={state_checkpoint}", *FAST,
             "--dataset.repo_id=local/so101_state", f"--dataset.root={root}", "--dataset.video_backend=pyav",
             "--eval.n_episodes=0", "--steps=64", "--log_freq=64", "--save_freq=64", f"--output_dir={out}"], cwd=tmp_path)
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["updates"] > 0 and np.isfinite(row["critic_loss"])
    assert (out / "checkpoints" / "last" / "training_state" / "offline_sampler.safetensors").is_file()


def test_a_dataset_folder_that_is_not_a_dataset_is_named_before_any_work(state_checkpoint, tmp_path):
    from lerobot_steer.config_error import ConfigError
    from lerobot_steer.policies.dsrl import DSRLConfig
    from lerobot_steer.rl.config import SteerRLConfig

    for root, why in ((tmp_path / "missing", "does not exist"), (tmp_path, "has no meta/info.json")):
        cfg = SteerRLConfig(policy=DSRLConfig(base_policy_path=str(state_checkpoint)), output_dir=tmp_path / "run",
                            dataset=DatasetConfig(repo_id="local/x", root=str(root), video_backend="pyav"))
        with pytest.raises(ConfigError, match=why):
            cfg.validate()
    assert not (tmp_path / "run").exists()


def test_a_dataset_with_other_observations_is_refused_before_the_prefill(state_checkpoint, pixel_dataset, tmp_path):
    """Cameras in the dataset, none in the (state) env: the batch halves could not be joined."""
    root, _ = pixel_dataset
    out = tmp_path / "run"
    result = run_cli([BIN / "lerobot-steer-rl", "--policy.type=dsrl", f"--policy.base_policy_path={state_checkpoint}",
                      *FAST, "--dataset.repo_id=local/so101_pixels", f"--dataset.root={root}",
                      "--dataset.video_backend=pyav", "--steps=64", f"--output_dir={out}"], cwd=tmp_path, ok=False)
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode == 2 and "observation.images.front" in last and "--env.obs_type" in last
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
