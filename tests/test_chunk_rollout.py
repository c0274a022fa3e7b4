"""Chunk-level collection and replay: what an online steering run relies on.

* one transition per executed chunk per env, with the chunk's summed reward and `n_steps`;
* an episode that ends inside a chunk ends that env's transition there: `next_obs` is the pre-reset
  final observation, terminated and truncated stay apart, and nothing executed after gymnasium's
  SAME_STEP autoreset leaks into the transition or into the next episode's first chunk;
* episode statistics (return, length, success, failure label);
* the replay buffer keeps images uint8, samples LeRobot's batch layout, overwrites the oldest rows,
  mixes through LeRobot's `OnlineOfflineMixer`, and round-trips through safetensors.
"""

from __future__ import annotations

import logging
import sys
from contextlib import closing
from types import SimpleNamespace

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from lerobot.envs.utils import preprocess_observation
from lerobot.rl.data_sources import OnlineOfflineMixer

from lerobot_steer.policies.common.frozen_base import FrozenBasePolicyMixin
from lerobot_steer.rl.chunk_rollout import ActedChunk, ChunkBatch, ChunkCollector
from lerobot_steer.rl.replay_buffer import ChunkReplayBuffer

K = 3  # chunk length in the toy tests


class CounterEnv(gym.Env):
    """Deterministic toy: reward = step number (1, 2, ...); terminates at `terminate_at` (success),
    truncates at `time_limit`. The observation shows the step, the episode count and the last action,
    so a transition's `next_obs` tells which step and which action produced it."""

    def __init__(self, terminate_at: int | None = None, time_limit: int = 100):
        self.terminate_at, self.time_limit = terminate_at, time_limit
        self.observation_space = gym.spaces.Dict({
            "step": gym.spaces.Box(0, np.inf, (1,), np.float32),
            "episode": gym.spaces.Box(0, np.inf, (1,), np.float32),
            "last_action": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
        })
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.episode = -1

    def _obs(self, last_action: float = -1.0):
        return {"step": np.array([self.t], np.float32), "episode": np.array([self.episode], np.float32),
                "last_action": np.array([last_action], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        terminated = self.t == self.terminate_at
        truncated = self.t >= self.time_limit and not terminated
        info = {"is_success": terminated}
        if terminated or truncated:
            info["failure"] = "success" if terminated else "timeout"
        return self._obs(float(action[0])), float(self.t), terminated, truncated, info


# env 0 terminates mid-chunk (step 5), env 1 times out mid-chunk (step 7), env 2 never ends,
# env 3 terminates on a chunk's last step (6), env 4 times out after every step (its ghost steps
# end ghost episodes too).
TOY = [dict(terminate_at=5), dict(time_limit=7), {}, dict(terminate_at=6), dict(time_limit=1)]


def make_toy(vector_cls=gym.vector.SyncVectorEnv, **kwargs) -> gym.vector.VectorEnv:
    return vector_cls([lambda kw=kw: CounterEnv(**kw) for kw in TOY], autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)


def labelled_policy(obs):
    """Chunk action 100 * env + 10 * (episode) + step-in-chunk: every executed action is traceable."""
    n = len(obs["step"])
    base = 100 * np.arange(n)[:, None] + 10 * obs["episode"]
    chunk = (base + np.arange(K)[None, :])[..., None].astype(np.float32)
    return chunk, {"noise": np.zeros((n, 2), np.float32)}


def run_toy_chunks(envs, n_chunks=3):
    collector = ChunkCollector(envs)
    collector.reset(seed=0)
    out = [collector.collect(labelled_policy) for _ in range(n_chunks)]
    return collector, out


def test_chunk_bookkeeping_on_toy_vector_env():
    """Summed rewards, n_steps, terminated vs truncated, pre-reset next_obs, no leakage, episode stats."""
    with closing(make_toy()) as envs:
        collector, out = run_toy_chunks(envs)
    (b1, e1), (b2, e2), (b3, e3) = out

    # chunk 1: steps 1..3 everywhere except env 4 (times out after 1 step)
    np.testing.assert_array_equal(b1.n_steps, [3, 3, 3, 3, 1])
    np.testing.assert_array_equal(b1.reward, [6, 6, 6, 6, 1])
    np.testing.assert_array_equal(b1.terminated, [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b1.truncated, [0, 0, 0, 0, 1])
    # chunk 2: env 0 terminates at step 5 (2 steps), env 3 at step 6 (the chunk's last step)
    np.testing.assert_array_equal(b2.n_steps, [2, 3, 3, 3, 1])
    np.testing.assert_array_equal(b2.reward, [4 + 5, 15, 15, 15, 1])
    np.testing.assert_array_equal(b2.terminated, [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(b2.truncated, [0, 0, 0, 0, 1])
    # chunk 3: env 1 times out at step 7 after one step: truncated, not terminated
    np.testing.assert_array_equal(b3.n_steps, [3, 1, 3, 3, 1])
    np.testing.assert_array_equal(b3.reward, [6, 7, 24, 6, 1])
    np.testing.assert_array_equal(b3.terminated, [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b3.truncated, [0, 1, 0, 0, 1])

    # next_obs is the true last observation of the executed steps (pre-reset at episode ends) ...
    np.testing.assert_array_equal(b2.next_obs["step"][:, 0], [5, 6, 6, 6, 1])
    np.testing.assert_array_equal(b3.next_obs["step"][:, 0], [3, 7, 9, 3, 1])
    # ... produced by the last *executed* action of the chunk, not a post-reset one
    for b in (b1, b2, b3):
        executed_last = b.action[np.arange(5), b.n_steps - 1, 0]
        np.testing.assert_array_equal(b.next_obs["last_action"][:, 0], executed_last)
        np.testing.assert_array_equal(b.next_obs["episode"], b.obs["episode"])  # same episode as the chunk start

    # the chunk after an episode end starts from a fresh reset: step 0, no old action applied
    np.testing.assert_array_equal(b2.obs["step"][:, 0], [3, 3, 3, 3, 0])
    np.testing.assert_array_equal(b3.obs["step"][:, 0], [0, 6, 6, 0, 0])
    np.testing.assert_array_equal(b3.obs["last_action"][:, 0], [-1, 102, 202, -1, -1])
    np.testing.assert_array_equal(collector.episode_start, [False, True, False, False, True])

    # episode statistics: one per finished episode, ghost episodes of env 4 not counted
    stats = {(s.env_index, s.length): s for s in e1 + e2 + e3}
    assert len(e1) == 1 and len(e2) == 3 and len(e3) == 2
    s0 = stats[(0, 5)]
    assert (s0.episode_return, s0.success, s0.terminated, s0.truncated, s0.failure) == (15, True, True, False, "success")
    s1 = stats[(1, 7)]
    assert (s1.episode_return, s1.success, s1.terminated, s1.truncated, s1.failure) == (28, False, False, True, "timeout")
    assert stats[(3, 6)].episode_return == 21 and stats[(3, 6)].terminated
    assert [s.episode_return for s in e1 + e2 + e3 if s.env_index == 4] == [1, 1, 1]
    assert b1.extras["noise"].shape == (5, 2)


def test_async_vector_env_gives_the_same_transitions():
    """AsyncVectorEnv (shared memory, masked reset through worker pipes) agrees with SyncVectorEnv."""
    # Ship the toy env class by value, so the forkserver workers need not import this module (and lerobot).
    with closing(make_toy()) as envs:
        _, sync_out = run_toy_chunks(envs)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with closing(make_toy(gym.vector.AsyncVectorEnv, context="forkserver")) as envs:
            _, async_out = run_toy_chunks(envs)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    for (a, _), (b, _) in zip(sync_out, async_out, strict=True):
        for field in ("reward", "n_steps", "terminated", "truncated", "action"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        for key in a.obs:
            np.testing.assert_array_equal(a.obs[key], b.obs[key])
            np.testing.assert_array_equal(a.next_obs[key], b.next_obs[key])


def test_collector_refuses_next_step_autoreset():
    """NEXT_STEP autoreset would put a reset step inside a chunk: refuse it rather than mislabel."""
    envs = gym.vector.SyncVectorEnv([lambda: CounterEnv()], autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError, match="SAME_STEP"):
        ChunkCollector(envs)
    envs.close()


def test_so101_sim_time_limit_chunks():
    """The real env (state obs, 2 envs, 7-step episodes, 4-step chunks of 'hold still'):
    the time-out chunk runs 3 steps, is truncated (not terminated), its next_obs is the final
    pre-reset state (block where it was), and the next chunk starts in a freshly reset scene."""
    from lerobot_steer.sim.env_config import SO101SimEnvConfig

    cfg = SO101SimEnvConfig(obs_type="state", episode_length=7, reward_type="dense")
    envs = cfg.create_envs(n_envs=2, use_async_envs=False)[cfg.type][0]

    def hold_still(obs):
        return np.repeat(obs["agent_pos"][:, None, :], 4, axis=1), {}

    collector = ChunkCollector(envs)
    collector.reset(seed=3)
    (b1, e1), (b2, e2), (b3, _) = (collector.collect(hold_still) for _ in range(3))
    envs.close()

    np.testing.assert_array_equal(b1.n_steps, [4, 4])
    np.testing.assert_array_equal(b2.n_steps, [3, 3])
    assert not e1 and len(e2) == 2
    assert b2.truncated.all() and not b2.terminated.any() and not b1.truncated.any()
    block_xy = slice(0, 2)  # environment_state starts with the block position
    np.testing.assert_allclose(b2.next_obs["environment_state"][:, block_xy], b1.obs["environment_state"][:, block_xy], atol=2e-3)
    assert np.abs(b3.obs["environment_state"][:, block_xy] - b2.next_obs["environment_state"][:, block_xy]).max() > 1e-3
    for s in e2:
        assert s.length == 7 and s.truncated and not s.terminated and not s.success
        assert s.failure == "never_picked_up"
        assert s.episode_return == pytest.approx(float(b1.reward[s.env_index] + b2.reward[s.env_index]), rel=1e-5)
    assert (b1.reward != 0).all()  # dense reward: the potential changes as the arm settles


# ------------------------------------------------------------------------------------ buffer


def pixel_batch(n: int, start: int, k: int = K) -> ChunkBatch:
    """n transitions whose every field encodes its index (start, start + 1, ...)."""
    ids = np.arange(start, start + n)
    rng = np.random.default_rng(start)

    def obs(offset):
        return {"agent_pos": (ids[:, None] + offset + np.zeros((n, 6))).astype(np.float32),
                "pixels": {"front": rng.integers(0, 256, (n, 8, 10, 3), dtype=np.uint8)}}

    return ChunkBatch(
        obs=obs(0), next_obs=obs(0.5), action=np.repeat(ids[:, None, None], k, 1).repeat(2, 2).astype(np.float32),
        reward=ids.astype(np.float32), n_steps=np.full(n, k), terminated=ids % 2 == 0, truncated=ids % 3 == 0,
        extras={"noise": np.repeat(ids[:, None], 4, 1).astype(np.float32)},
    )


def test_buffer_stores_uint8_and_samples_lerobot_batches():
    """Images stored uint8 (C, H, W); sampled as float [0, 1] equal to LeRobot's own conversion."""
    buffer = ChunkReplayBuffer(capacity=10, seed=0)
    batch = pixel_batch(4, start=0)
    buffer.add(batch)
    assert buffer.storage["state.observation.images.front"].dtype == torch.uint8
    assert buffer.storage["state.observation.images.front"].shape == (10, 3, 8, 10)

    sample = buffer.sample(6)
    assert set(sample) == {"state", "next_state", "action", "reward", "done", "truncated", "complementary_info"}
    image = sample["state"]["observation.images.front"]
    assert image.dtype == torch.float32 and image.shape == (6, 3, 8, 10)
    assert sample["action"].shape == (6, K, 2) and sample["reward"].shape == (6,)
    assert sample["complementary_info"]["noise"].shape == (6, 4)
    assert all(v.dtype == torch.float32 for v in (sample["done"], sample["truncated"], sample["complementary_info"]["n_steps"]))

    ids = sample["reward"].long()
    expected = preprocess_observation({"pixels": {"front": batch.obs["pixels"]["front"][ids.numpy()]}})
    torch.testing.assert_close(image, expected["observation.images.front"])
    torch.testing.assert_close(sample["state"]["observation.state"][:, 0], ids.float())
    torch.testing.assert_close(sample["next_state"]["observation.state"][:, 0], ids.float() + 0.5)
    torch.testing.assert_close(sample["done"], (ids % 2 == 0).float())
    torch.testing.assert_close(sample["truncated"], (ids % 3 == 0).float())

    # the layout our algorithms read (done = terminated only; n_steps for gamma^n)
    fake_policy = SimpleNamespace(config=SimpleNamespace(n_exec=K), adapter=SimpleNamespace(action_dim=2))
    t = FrozenBasePolicyMixin.transitions_from_replay(fake_policy, sample)
    torch.testing.assert_close(t.n_steps, torch.full((6,), float(K)))
    torch.testing.assert_close(t.terminated, sample["done"])


def test_buffer_ring_overwrites_oldest():
    buffer = ChunkReplayBuffer(capacity=5)
    buffer.add(pixel_batch(3, start=0))
    buffer.add(pixel_batch(3, start=3))
    assert len(buffer) == 5 and buffer.position == 1
    assert buffer.storage["reward"].tolist() == [5, 1, 2, 3, 4]
    buffer.add(pixel_batch(7, start=10))  # larger than the buffer: its last 5 rows remain
    assert sorted(buffer.storage["reward"].tolist()) == [12, 13, 14, 15, 16] and len(buffer) == 5


def test_buffer_safetensors_round_trip_resumes_sampling(tmp_path):
    """save -> load gives the same rows, write position and RNG: identical samples afterwards."""
    buffer = ChunkReplayBuffer(capacity=6, seed=7)
    buffer.add(pixel_batch(4, start=0))
    buffer.add(pixel_batch(4, start=4))
    buffer.sample(3)  # advance the RNG: the saved state must carry it
    buffer.save(tmp_path / "buffer.safetensors")
    restored = ChunkReplayBuffer.load(tmp_path / "buffer.safetensors")
    assert (len(restored), restored.position) == (len(buffer), buffer.position)
    for _ in range(2):
        a, b = buffer.sample(5), restored.sample(5)
        for key in ("action", "reward", "done", "truncated"):
            torch.testing.assert_close(a[key], b[key])
        for group in ("state", "next_state", "complementary_info"):
            for key in a[group]:
                torch.testing.assert_close(a[group][key], b[group][key])
    assert restored.storage["state.observation.images.front"].dtype == torch.uint8


def test_lerobot_online_offline_mixer_accepts_chunk_buffers():
    online, offline = ChunkReplayBuffer(8, seed=0), ChunkReplayBuffer(8, seed=1)
    online.add(pixel_batch(4, start=0))
    offline.add(pixel_batch(4, start=100))
    batch = next(OnlineOfflineMixer(online, offline, online_ratio=0.5).get_iterator(8, async_prefetch=False))
    assert batch["action"].shape == (8, K, 2) and batch["state"]["observation.images.front"].shape[0] == 8
    assert (batch["reward"][:4] < 100).all() and (batch["reward"][4:] >= 100).all()


class _SimStateEnv(CounterEnv):
    """CounterEnv whose state can be read and written, like the SO-101 sim's `sim_state`."""

    @property
    def sim_state(self):
        return {"t": self.t, "episode": self.episode}

    @sim_state.setter
    def sim_state(self, state):
        self.t, self.episode = state["t"], state["episode"]


def test_learner_action_from_the_policy_is_what_the_buffer_stores():
    """The envs execute env-unit actions; a policy that gives the learner another representation of
    the same chunk (its normalized actions) has that one stored, through a named field."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(CounterEnv())] * 2,
                                    autoreset_mode=AutoresetMode.SAME_STEP)
    collector = ChunkCollector(envs)
    collector.reset(seed=0)
    env_units = np.full((2, K, 1), 0.5, np.float32)
    normalized = np.full((2, K, 1), -1.0, np.float32)

    batch, _ = collector.collect(lambda obs: ActedChunk(env_units, {"noise": np.ones((2, 3))}, normalized))
    plain, _ = collector.collect(lambda obs: (env_units, {"noise": np.ones((2, 3))}))
    envs.close()

    np.testing.assert_array_equal(batch.action, env_units)
    np.testing.assert_array_equal(batch.learner_action, normalized)
    assert plain.learner_action is None
    buffer = ChunkReplayBuffer(capacity=8, seed=0)
    buffer.add(batch)
    buffer.add(plain)
    np.testing.assert_array_equal(buffer.storage["action"][:2].numpy(), normalized)
    np.testing.assert_array_equal(buffer.storage["action"][2:4].numpy(), env_units)


class _BrokenSimStateEnv(CounterEnv):
    @property
    def sim_state(self):
        return self.no_such_field  # a bug inside the property: an AttributeError of its own


def test_collector_state_holds_env_states_and_a_broken_sim_state_raises_instead_of_restarting(caplog):
    make = lambda cls: gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(cls())] * 2,  # noqa: E731
                                                autoreset_mode=AutoresetMode.SAME_STEP)
    collector = ChunkCollector(make(_SimStateEnv))
    collector.reset(seed=0)
    collector.collect(lambda obs: (np.zeros((2, K, 1), np.float32), {}))
    assert collector.state_dict()["sim_states"] == [{"t": K, "episode": 0}] * 2

    with pytest.raises(AttributeError) as error:  # surfaces, not read as "this env has no sim_state"
        ChunkCollector(make(_BrokenSimStateEnv)).state_dict()
    causes = [error.value]
    while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    assert any("no_such_field" in str(e) for e in causes)

    plain = ChunkCollector(make(CounterEnv))
    with caplog.at_level(logging.WARNING):
        assert plain.state_dict()["sim_states"] is None and plain.state_dict()["sim_states"] is None
    assert [r.getMessage() for r in caplog.records].count(
        "the envs have no `sim_state` property: a resumed run restarts their episodes (everything else resumes exactly)"
    ) == 1
