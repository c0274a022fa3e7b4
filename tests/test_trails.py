"""`lerobot-steer-eval --videos.trails=true`: predicted action chunks drawn as end-effector trails.

What a user relies on when reading such a video: a trail is where the chunk really takes the gripper
(it is simulated, and ends where the env goes when the chunk is executed); drawing it changes nothing
in the evaluated episode (the sim state is copied, never stepped; the policy acts exactly as
without trails); it sits where the gripper is in the picture (the camera projects it); and for a
steering checkpoint the base's unsteered chunk is drawn beside the steered one, in its own colour.
"""

from __future__ import annotations

import av
import mujoco
import numpy as np
import pytest
import torch

from lerobot_steer.evaluation import PolicyUnderTest, run_episodes
from lerobot_steer.evaluation.cli import main as eval_main
from lerobot_steer.evaluation.loading import load_policy
from lerobot_steer.evaluation.trails import BASE, POLICY, TRAIL_RGBA, render_with_trails
from lerobot_steer.evaluation.video import VideoConfig, VideoRecorder
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.sim.expert import ScriptedExpert
from lerobot_steer.sim.pick_place_env import HOME_POSE, SO101PickPlaceEnv


def _full_state(env: SO101PickPlaceEnv) -> dict:
    """Everything the episode's future depends on, plus derived quantities, as arrays."""
    d = env.data
    state = {k: np.array(v, dtype=object if k in ("np_random", "release_outcome") else None)
             for k, v in env.sim_state.items()}
    for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "qacc", "site_xpos", "xpos", "time"):
        state[name] = np.array(getattr(d, name)).copy()
    return state


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype == object:
            assert a[k].tolist() == b[k].tolist(), k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bit-identical


# ------------------------------------------------------------------ the forward simulation
def test_forecast_leaves_the_real_episode_bit_identical():
    """Forecasting at every step changes nothing: the env's state is bit-identical right after each
    forecast, and the episode goes exactly as in a twin env that never forecast."""
    env, twin = SO101PickPlaceEnv(obs_type="state"), SO101PickPlaceEnv(obs_type="state")
    expert, twin_expert = ScriptedExpert(env.model), ScriptedExpert(twin.model)
    env.reset(seed=5)
    twin.reset(seed=5)
    chunk = np.tile(HOME_POSE + [15.0, 20.0, -20.0, 10.0, 30.0, -20.0], (6, 1))
    for _ in range(60):
        before = _full_state(env)
        path = env.forecast_gripper_path(chunk)
        assert path.shape == (7, 3) and np.isfinite(path).all()
        _assert_same(_full_state(env), before)
        env.step(expert.act(env))
        twin.step(twin_expert.act(twin))
        _assert_same(_full_state(env), _full_state(twin))


def test_trail_of_an_expert_chunk_is_the_path_the_env_takes():
    """From mid-episode (approach, descent, grasp: contacts included), the forecast of the expert's next
    40 actions visits the gripper positions the env then reaches, and ends where it ends."""
    recorder, env = SO101PickPlaceEnv(obs_type="state"), SO101PickPlaceEnv(obs_type="state")
    expert = ScriptedExpert(recorder.model)
    recorder.reset(seed=11)
    env.reset(seed=11)
    for _ in range(30):
        action = expert.act(recorder)
        recorder.step(action)
        env.step(action)
    chunk, reached = [], [env.gripper_position()]
    for _ in range(40):
        chunk.append(expert.act(recorder))
        recorder.step(chunk[-1])
        reached.append(recorder.gripper_position())
    path = env.forecast_gripper_path(np.stack(chunk))
    assert np.linalg.norm(reached[-1] - reached[0]) > 0.03  # the chunk really moves the gripper
    np.testing.assert_allclose(path, np.stack(reached), atol=1e-6)
    for a in chunk:  # and the env, executing the chunk, goes there
        env.step(a)
    np.testing.assert_allclose(path[-1], env.gripper_position(), atol=1e-6)


def test_trail_of_a_constant_target_clips_like_the_env_and_ends_where_it_goes():
    env = SO101PickPlaceEnv(obs_type="state")
    env.reset(seed=2)
    target = HOME_POSE + [40.0, 25.0, -30.0, 0.0, 0.0, 500.0]  # gripper far past its limit: clipped
    path = env.forecast_gripper_path(np.tile(target, (10, 1)))
    for _ in range(10):
        env.step(target)
    assert np.linalg.norm(path[-1] - path[0]) > 0.03
    np.testing.assert_allclose(path[-1], env.gripper_position(), atol=1e-6)


# ------------------------------------------------------------------ drawing
def _project(model, data, cam: str, point, height: int, width: int) -> np.ndarray:
    """Pixel (column, row) of a world point in a MuJoCo camera (pinhole, looking down -z, y up)."""
    c = model.camera(cam).id
    p = data.cam_xmat[c].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[c])
    f = 0.5 * height / np.tan(np.deg2rad(model.cam_fovy[c]) / 2)
    return np.array([width / 2 + f * p[0] / -p[2], height / 2 - f * p[1] / -p[2]])


def test_trail_is_drawn_where_the_camera_sees_its_points():
    env = SO101PickPlaceEnv(obs_type="state", render_height=240, render_width=320)
    env.reset(seed=3)
    renderer = mujoco.Renderer(env.model, 240, 320)
    try:
        plain = render_with_trails(renderer, env, {})
        np.testing.assert_array_equal(plain, env.render())  # same camera and size as the env's video
        for point in ([0.22, -0.04, 0.09], env.gripper_position() + [0.0, 0.05, 0.03]):
            drawn = render_with_trails(renderer, env, {POLICY: np.array([point])})
            rows, cols = np.nonzero(np.abs(drawn.astype(int) - plain.astype(int)).sum(-1) > 30)
            assert len(rows) > 10
            centre = np.array([cols.mean(), rows.mean()])
            np.testing.assert_allclose(centre, _project(env.model, env.data, "front", point, 240, 320), atol=2.0)
    finally:
        renderer.close()
        env.close()


# ------------------------------------------------------------------ a steering checkpoint
@pytest.fixture(scope="module")
def dsrl_checkpoint(state_checkpoint, tmp_path_factory):
    """An untrained dsrl checkpoint over the tiny state diffusion base, saved as lerobot-train saves one
    (weights, config, the base in base_policy/, processors): its actor's noise is not the base's N(0, I)."""
    from lerobot_steer.policies.dsrl.configuration_dsrl import DSRLConfig
    from lerobot_steer.policies.dsrl.modeling_dsrl import DSRLPolicy
    from lerobot_steer.policies.dsrl.processor_dsrl import make_dsrl_pre_post_processors

    torch.manual_seed(0)
    config = DSRLConfig(base_policy_path=str(state_checkpoint), device="cpu", hidden_dims=[32, 32])
    out = tmp_path_factory.mktemp("dsrl") / "pretrained_model"
    DSRLPolicy(config).save_pretrained(out)
    for pipeline in make_dsrl_pre_post_processors(config):
        pipeline.save_pretrained(out)
    return out


def _colour_pixels(frame: np.ndarray) -> dict[str, int]:
    """Pixels of each trail colour in the scene part of a frame (caption band and legend cut off)."""
    scene = frame[frame.shape[0] // 10 : -frame.shape[0] // 10].astype(int)
    r, g, b = scene[..., 0], scene[..., 1], scene[..., 2]
    return {POLICY: int(((r - g > 80) & (b - g > 60)).sum()),  # magenta
            BASE: int(((g - r > 60) & (b - r > 60) & (g > 130)).sum())}  # cyan (the bowl is darker blue)


def test_colours_stay_distinct_from_the_scene():
    assert TRAIL_RGBA[POLICY] != TRAIL_RGBA[BASE]
    env = SO101PickPlaceEnv(obs_type="state")
    env.reset(seed=1000)
    assert _colour_pixels(env.render()) == {POLICY: 0, BASE: 0}
    env.close()


class ActionLog(PolicyUnderTest):
    """Records every action the policy sends to the envs."""

    def act(self, raw_obs, tasks):
        action = super().act(raw_obs, tasks)
        self.log.append(action.copy())
        return action


@pytest.mark.slow  # state_checkpoint runs lerobot-train in a subprocess
def test_steering_checkpoint_video_shows_steered_and_base_trails_and_acts_as_without(dsrl_checkpoint, tmp_path):
    env = SO101SimEnvConfig(obs_type="state", episode_length=10, render_height=240, render_width=320)
    logs = {}
    for trails in (False, True):
        put = load_policy(str(dsrl_checkpoint), env, "cpu", "dsrl")
        put = ActionLog(**{f: getattr(put, f) for f in put.__dataclass_fields__})
        put.log = []
        torch.manual_seed(0)
        recorder = VideoRecorder(VideoConfig(first=2, trails=trails, hold_seconds=0.1), tmp_path / str(trails),
                                 "dsrl", env.fps)
        episodes = run_episodes(put, env, [1000, 1001], batch_size=2, recorder=recorder, progress=False)
        logs[trails] = np.stack(put.log)
        assert "predict_action_chunk" not in vars(put.policy)  # the tap is removed after the run
        videos = [e.video for e in episodes]
        assert all(videos)
        for video in videos:
            with av.open(video) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            assert len(frames) == 1 + 10 + 3  # reset frame, 10 steps, held outcome
            counts = [_colour_pixels(f) for f in frames]
            if trails:
                assert counts[0] == {POLICY: 0, BASE: 0}  # no chunk predicted yet
                assert all(c[POLICY] > 3 and c[BASE] > 3 for c in counts[1:]), counts
            else:
                assert all(c == {POLICY: 0, BASE: 0} for c in counts), counts
    # Drawing the base's chunk took nothing from the episode: the same actions, bit for bit.
    np.testing.assert_array_equal(logs[True], logs[False])


@pytest.mark.slow  # state_checkpoint runs lerobot-train in a subprocess
def test_cli_writes_trail_videos_for_a_plain_lerobot_checkpoint(state_checkpoint, tmp_path):
    out = tmp_path / "eval"
    eval_main([f"--policy_paths=[{state_checkpoint},builtin:hold]", "--env.obs_type=state", "--env.episode_length=6",
               "--env.render_height=120", "--env.render_width=160", "--n_episodes=1", "--batch_size=1",
               "--device=cpu", "--videos.first=1", "--videos.trails=true", "--videos.hold_seconds=0.1",
               "--progress=false", f"--output_dir={out}"])
    videos = {p.parent.name: p for p in (out / "videos").rglob("*.mp4")}
    assert set(videos) == {"run@last", "builtin_hold"}
    for name, path in videos.items():
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 1 + 6 + 3 and frames[0].shape == (120, 160, 3)
        drawn = sum(_colour_pixels(f)[POLICY] for f in frames[1:])
        assert (drawn > 0) == (name == "run@last")  # hold predicts no chunks: no trail, no failure


@pytest.mark.slow  # state_checkpoint runs lerobot-train in a subprocess
def test_dyna_vgd_base_trail_decodes_the_same_noise_unguided(state_checkpoint):
    """For value guidance the comparison is paired: the base's trail is the same N(0, I) noise decoded
    without guidance, so it coincides with the policy's when guidance is off and departs when it is on."""
    from lerobot_steer.evaluation.rollout import make_vector_env
    from lerobot_steer.evaluation.trails import TrailOverlay
    from lerobot_steer.policies.dyna_vgd.configuration_dyna_vgd import DynaVGDConfig
    from lerobot_steer.policies.dyna_vgd.modeling_dyna_vgd import DynaVGDPolicy
    from lerobot_steer.policies.dyna_vgd.processor_dyna_vgd import make_dyna_vgd_pre_post_processors

    env = SO101SimEnvConfig(obs_type="state", episode_length=10)
    ends = {}
    for scale in (0.0, 5.0):
        torch.manual_seed(0)
        config = DynaVGDConfig(base_policy_path=str(state_checkpoint), device="cpu", hidden_dims=[32, 32],
                               guidance_scale=scale)
        pre, post = make_dyna_vgd_pre_post_processors(config)
        put = PolicyUnderTest("vgd", DynaVGDPolicy(config), preprocessor=pre, postprocessor=post)
        overlay, vec = TrailOverlay(put, env), make_vector_env(env, 1)
        try:
            obs, _ = vec.reset(seed=[3])
            put.policy.reset()
            put.act(obs, [env.task_description])
            overlay.after_act(vec, [0])
            ends[scale] = overlay.paths[0]
        finally:
            overlay.close()
            vec.close()
        assert "predict_action_chunk" not in vars(put.policy)
    np.testing.assert_array_equal(ends[0.0][POLICY], ends[0.0][BASE])
    assert np.linalg.norm(ends[5.0][POLICY][-1] - ends[5.0][BASE][-1]) > 1e-3
    np.testing.assert_array_equal(ends[5.0][BASE], ends[0.0][BASE])  # the same noise: the same unguided chunk


def test_a_third_steering_type_gets_base_trails_from_its_own_methods():
    """Trails ask the policy what its reference is (`reference_chunk`, `reference_noise`,
    `reference_labels`), never its type name: a steering idea that is neither dsrl nor dyna_vgd gets
    the base's chunk beside its own, and its episode is the one it acts without the tap."""
    from helpers_bases import tiny_adapter

    from lerobot_steer.evaluation.trails import ChunkTap
    from lerobot_steer.policies.common.frozen_base import observations

    adapter, make_batch = tiny_adapter("diffusion", None)

    class ShiftedNoise(torch.nn.Module):
        name = "shifted_noise"
        reference_labels = ("shifted", "base, same noise")

        def __init__(self):
            super().__init__()
            self.adapter = adapter

        def predict_action_chunk(self, batch, noise=None, **kwargs):
            obs = observations(batch)
            noise = self.reference_noise(next(iter(obs.values())).shape[0]) if noise is None else noise
            return self.adapter.sample(obs, noise + 0.5)

        def reference_noise(self, batch_size):
            return self.adapter.sample_noise(batch_size)

        def reference_chunk(self, obs, noise, generator=None):
            return self.adapter.sample(obs, noise)

    policy, batch = ShiftedNoise(), make_batch(3, 0)
    adapter.reset()
    torch.manual_seed(0)
    untapped = policy.predict_action_chunk(batch)

    adapter.reset()
    torch.manual_seed(0)
    tap = ChunkTap(policy)
    tapped = policy.predict_action_chunk(batch)
    chunks = tap.take()
    tap.close()

    assert tap.labels == ("shifted", "base, same noise")
    torch.testing.assert_close(tapped, untapped)  # the tap changes nothing the policy does
    torch.testing.assert_close(chunks[POLICY], untapped)
    torch.manual_seed(0)
    same_noise = adapter.sample_noise(3)
    torch.testing.assert_close(chunks[BASE], adapter.sample({**observations(batch), **adapter.history_frames()}, same_noise))
    assert not torch.allclose(chunks[BASE], chunks[POLICY])
    assert "predict_action_chunk" not in vars(policy)
