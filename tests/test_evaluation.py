"""`lerobot-steer-eval`: the numbers a checkpoint comparison rests on, and the command that makes them.

What a user relies on: the interval is the textbook Wilson interval; a policy that always succeeds
(scripted expert) or never moves (hold) is reported as such, with the right failure labels; every
checkpoint meets the same seeds whatever the batch size; a checkpoint that cannot see the env's
observations is refused before any rollout, with the flag that fixes it; and the command writes a
report, a table, a chart and videos that open.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

from lerobot_steer.evaluation import (
    PolicyUnderTest,
    paired_comparison,
    run_episodes,
    summarize,
    wilson_interval,
)
from lerobot_steer.evaluation.baselines import HoldPolicy, make_builtin
from lerobot_steer.evaluation.checks import FeatureMismatchError, env_feature_problems
from lerobot_steer.evaluation.cli import main as eval_main
from lerobot_steer.evaluation.video import VideoConfig, VideoRecorder
from lerobot_steer.sim.env_config import SO101SimEnvConfig

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score without correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_rejects_impossible_counts_and_is_uninformative_without_episodes():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_paired_comparison_counts_only_discordant_seeds():
    assert paired_comparison([1, 1, 1], [0, 0, 0]) == {"gained": 0, "lost": 3, "p_value": 0.25}
    assert paired_comparison([1, 0, 1, 0], [0, 1, 1, 0])["p_value"] == 1.0


# ------------------------------------------------------------------ known policies
@pytest.fixture(scope="module")
def state_env():
    return SO101SimEnvConfig(obs_type="state", episode_length=200)


def test_scripted_expert_is_reported_as_always_successful(state_env):
    episodes = run_episodes(make_builtin("builtin:expert", state_env), state_env, [1000, 1001, 1002], batch_size=2,
                            progress=False)
    s = summarize(episodes)
    assert (s.successes, s.n_episodes, s.outcomes["success"]) == (3, 3, 3)
    assert s.ci95 == pytest.approx(wilson_interval(3, 3))
    assert all(e.steps == e.steps_to_success for e in episodes)  # terminate_on_success ends the episode there
    assert 60 < s.mean_steps_to_success < 200 and s.median_steps_to_success is not None
    assert s.mean_return == pytest.approx(1.0)  # sparse reward: 1 on the success step


class SpyHold(HoldPolicy):
    """Holds still and records what a LeRobot policy would see: resets and first observations."""

    def __init__(self):
        self.resets, self.first_obs, self._fresh = 0, [], False

    def reset(self):
        self.resets += 1
        self._fresh = True

    def select_action(self, batch):
        if self._fresh:
            self.first_obs += list(batch["observation.environment_state"].numpy())
            self._fresh = False
        return super().select_action(batch)


def test_do_nothing_policy_never_picks_up_and_seeds_pair_across_batch_sizes():
    env = SO101SimEnvConfig(obs_type="state", episode_length=15)
    seeds = [7, 8, 9]
    spies = {}
    for batch_size in (1, 2):
        spy = SpyHold()
        episodes = run_episodes(PolicyUnderTest("hold", spy), env, seeds, batch_size=batch_size, progress=False)
        s = summarize(episodes)
        assert s.successes == 0 and s.outcomes["never_picked_up"] == 3
        assert [e.steps for e in episodes] == [15, 15, 15] and s.mean_steps_to_success is None
        assert [e.seed for e in episodes] == seeds
        assert spy.resets == -(-len(seeds) // batch_size)  # policy.reset() once per lock-step batch
        spies[batch_size] = spy
    # Same seed, same block and bowl: comparisons between checkpoints are paired.
    np.testing.assert_allclose(np.stack(spies[1].first_obs), np.stack(spies[2].first_obs))


def test_videos_keep_the_first_episodes_and_the_requested_failures(tmp_path):
    env = SO101SimEnvConfig(obs_type="state", episode_length=5, render_height=48, render_width=64)
    recorder = VideoRecorder(VideoConfig(first=1, failures=1, hold_seconds=0.1), tmp_path, "hold", env.fps)
    episodes = run_episodes(make_builtin("builtin:hold", env), env, [1, 2, 3], batch_size=2, recorder=recorder,
                            progress=False)
    assert [e.video is not None for e in episodes] == [True, True, False]
    assert sorted(p.name for p in tmp_path.rglob("*.mp4")) == [
        "episode_0000_seed1_never_picked_up.mp4", "episode_0001_seed2_never_picked_up.mp4"]
    with av.open(episodes[0].video) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1 + 5 + 3  # reset frame, 5 steps, held outcome


# ------------------------------------------------------------------ feature checks
def _diffusion(inputs: dict[str, tuple]) -> DiffusionConfig:
    cfg = DiffusionConfig(crop_shape=None, pretrained_backbone_weights=None)
    types = {"observation.state": FeatureType.STATE, "observation.environment_state": FeatureType.ENV}
    cfg.input_features = {k: PolicyFeature(type=types.get(k, FeatureType.VISUAL), shape=s) for k, s in inputs.items()}
    cfg.output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    return cfg


def test_feature_check_names_camera_size_and_unknown_camera_fixes():
    cfg = _diffusion({"observation.state": (6,), "observation.images.front": (3, 48, 64),
                      "observation.images.top": (3, 48, 64)})
    problems = "\n".join(env_feature_problems(cfg, SO101SimEnvConfig(obs_type="pixels")))
    assert "--env.image_height=48 --env.image_width=64" in problems
    assert "observation.images.top" in problems and "front" in problems and "wrist" in problems
    assert env_feature_problems(cfg, SO101SimEnvConfig(obs_type="state")) != []
    ok = _diffusion({"observation.state": (6,), "observation.images.wrist": (3, 96, 128)})
    assert env_feature_problems(ok, SO101SimEnvConfig(obs_type="pixels", cameras=("wrist",))) == []


@pytest.mark.slow  # state_checkpoint runs lerobot-train in a subprocess
def test_state_checkpoint_on_pixel_env_fails_before_rollout_naming_the_feature(state_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:  # the CLI exits 2 with `error: <message>`, not a traceback
        eval_main([f"--policy_paths=[{state_checkpoint}]", "--env.obs_type=pixels", "--n_episodes=1",
                   f"--output_dir={tmp_path}"])
    assert isinstance(err.value.__cause__, FeatureMismatchError) and err.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "observation.environment_state" in message
    assert "--env.obs_type=state" in message
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


# ------------------------------------------------------------------ the command
@pytest.mark.slow  # lerobot-train and lerobot-steer-eval in subprocesses
def test_cli_evaluates_a_lerobot_checkpoint_and_writes_report_table_chart_and_video(state_checkpoint, tmp_path):
    out = tmp_path / "eval"
    cmd = [str(BIN / "lerobot-steer-eval"), f"--policy_paths=[{state_checkpoint},builtin:hold]",
           "--env.obs_type=state", "--env.episode_length=8", "--env.render_height=48", "--env.render_width=64",
           "--n_episodes=2", "--batch_size=2", "--device=cpu", "--videos.first=1", "--progress=false",
           f"--output_dir={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((out / "eval_report.json").read_text())
    assert report["n_episodes"] == 2 and report["env"]["obs_type"] == "state"
    trained, hold = report["checkpoints"]
    assert trained["policy_type"] == "diffusion" and trained["label"] == "run@last"
    s = trained["summary"]
    assert s["n_episodes"] == 2 and sum(s["outcomes"].values()) == 2 and 0 <= s["ci95"][0] <= s["ci95"][1] <= 1
    assert [e["seed"] for e in trained["episodes"]] == [e["seed"] for e in hold["episodes"]]
    assert report["paired_vs_first"][0]["candidate"] == "builtin:hold"

    table = (out / "results.md").read_text()
    assert "| run@last |" in table and "| builtin:hold |" in table and "95 % CI" in table
    assert "| run@last |" in result.stdout  # the table is printed too
    with Image.open(out / "success_rates.png") as png:
        assert png.format == "PNG" and png.width > 100
    videos = sorted((out / "videos").rglob("*.mp4"))
    assert len(videos) == 2 and not list((out / "videos").rglob("*.tmp.mp4"))
    with av.open(str(videos[0])) as container:
        assert next(container.decode(video=0)).width == 64


def test_noise_baselines_draw_the_documented_noise():
    """Each free baseline hands the base the noise its name promises, on the base's own noise shape:
    `executed` keeps N(0, I) only on the steps a diffusion base executes (n_obs_steps - 1 onwards)."""
    from lerobot_steer.evaluation.noise_baselines import FixedNoiseBase, parse_noise_spec
    from lerobot_steer.steering.tiny_bases import batch_maker, tiny_diffusion

    policy = tiny_diffusion(n_obs_steps=2, horizon=8, n_action_steps=4)[0]
    seen = []
    real_select = policy.select_action
    policy.select_action = lambda batch, noise=None, **kw: (seen.append(noise), real_select(batch, noise=noise))[1]
    batch = batch_maker(policy)(3, 0)
    for kind in ("zero", "gaussian", "tanh", "executed"):
        seen.clear()
        base = FixedNoiseBase(policy, kind)
        base.reset()
        base.select_action(batch)
        noise = seen[0]
        assert noise.shape == (3, 8, policy.config.action_feature.shape[0])
        if kind == "zero":
            assert noise.abs().sum() == 0
        elif kind == "tanh":
            assert noise.abs().max() < 1
        elif kind == "executed":
            assert noise[:, :1].abs().sum() == 0 and noise[:, 5:].abs().sum() == 0
            assert noise[:, 1:5].abs().min() > 0
    with pytest.raises(ValueError, match="executed"):
        parse_noise_spec("noise:uniform:/some/base")


def test_sync_evaluation_batches_every_episode_into_one_decode_by_default():
    """Lock-step sync envs share one batched base decode, so the default batch is not the core count
    (on 2 cores that meant one episode at a time); async envs keep lerobot-eval's rule."""
    import os

    from lerobot_steer.evaluation.cli import SteerEvalConfig

    assert SteerEvalConfig(policy_paths=["builtin:hold"], n_episodes=100).batch_size == 50
    assert SteerEvalConfig(policy_paths=["builtin:hold"], n_episodes=20).batch_size == 20
    parallel = SteerEvalConfig(policy_paths=["builtin:hold"], n_episodes=100, use_async_envs=True).batch_size
    assert parallel == max(1, min(int(0.7 * (os.cpu_count() or 1)), 64))
