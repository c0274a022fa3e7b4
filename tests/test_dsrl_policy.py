"""The `dsrl` policy on real LeRobot bases built tiny offline: steering, acting, losses, checkpoints."""

from __future__ import annotations

import subprocess
import sys
import types
from fnmatch import fnmatch

import pytest
import torch
from helpers_bases import (  # noqa: F401  (one_thread, vla_builds, diffusion_base: pytest fixtures)
    ACTION,
    ENV,
    STATE,
    batch_maker,
    diffusion_base,
    diffusion_dataset_meta,
    one_thread,
    tiny_adapter,
    vla_builds,
)

from lerobot.rl.algorithms.factory import make_algorithm

from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy, make_dsrl_pre_post_processors
from lerobot_steer.rl import DSRLAlgorithmConfig
from lerobot_steer.steering import BasePolicyAdapter, CheckpointError, FeatureMismatchError

BASES = ["diffusion", "smolvla", "pi0", "pi05"]
SMALL = dict(device="cpu", hidden_dims=[32, 32])


@pytest.fixture(scope="module", params=BASES)
def base(request, vla_builds):
    """(adapter, make_batch) for each base family."""
    return tiny_adapter(request.param, vla_builds)


def _dsrl(adapter, **overrides) -> DSRLPolicy:
    return DSRLPolicy(DSRLConfig(**{**SMALL, "variant": "na", **overrides}), base_adapter=adapter)


def _dataset_batch(policy: DSRLPolicy, obs: dict, action, reward, *, ended=None) -> dict:
    """A lerobot-train batch for `policy`'s delta indices: each observation repeated over its frames."""
    c = policy.config
    n_frames, b = len(c.observation_delta_indices), action.shape[0]
    batch = {}
    for key, value in obs.items():
        if key.startswith("observation.language"):
            batch[key] = value
            continue
        batch[key] = value.unsqueeze(1).expand(b, n_frames, *value.shape[1:]).clone()
        batch[f"{key}_is_pad"] = torch.zeros(b, n_frames, dtype=torch.bool)
        if ended is not None:
            batch[f"{key}_is_pad"][:, -1] = ended
    batch[ACTION] = action
    batch[f"{ACTION}_is_pad"] = torch.zeros(b, c.n_exec, dtype=torch.bool)
    rewards = torch.zeros(b, c.n_exec)
    rewards[:, 0] = reward
    batch["next.reward"] = rewards
    return batch


# --------------------------------------------------------------------------------- steering


@pytest.mark.parametrize("layout", ["full", "executed", "repeat", "repeat_executed"])
def test_same_noise_same_chunk_other_noise_other_chunk(base, layout):
    adapter, make_batch = base
    policy = _dsrl(adapter, noise_layout=layout)
    obs = make_batch(2, 0)
    w1, w2 = torch.randn(2, policy.noise_dim), torch.randn(2, policy.noise_dim)
    a1 = policy.decode(obs, w1)
    assert a1.shape == (2, policy.config.n_exec, adapter.action_dim)
    assert torch.equal(a1, policy.decode(obs, w1))
    assert not torch.allclose(a1, policy.decode(obs, w2), atol=1e-4)
    if layout == "repeat":  # one noise_width vector shared by every step of the chunk
        assert policy.noise_dim == adapter.noise_shape(1)[2]
        assert torch.equal(policy.base_noise(w1)[:, 0], policy.base_noise(w1)[:, -1])
    if layout == "executed":  # the actor's noise fills the executed steps; the others stay at zero
        n_exec, start = policy.config.n_exec, adapter.executed_start
        assert policy.noise_dim == n_exec * adapter.noise_shape(1)[2]
        full = policy.base_noise(w1)
        assert torch.equal(full[:, start : start + n_exec].reshape(2, -1), w1)
        assert full[:, :start].abs().sum() == 0 and full[:, start + n_exec :].abs().sum() == 0
    if layout == "repeat_executed":  # one vector on every executed step, zero elsewhere
        n_exec, start = policy.config.n_exec, adapter.executed_start
        assert policy.noise_dim == adapter.noise_shape(1)[2]
        full = policy.base_noise(w1)
        assert torch.equal(full[:, start], w1) and torch.equal(full[:, start + n_exec - 1], w1)
        assert full[:, :start].abs().sum() == 0 and full[:, start + n_exec :].abs().sum() == 0


def test_actor_output_changes_the_executed_actions_and_reset_clears_the_queue(base):
    adapter, make_batch = base
    policy = _dsrl(adapter, n_action_steps=2, deterministic_actions=True)
    obs = make_batch(1, 1)
    first = [policy.select_action(obs) for _ in range(2)]  # one chunk of 2 executed steps
    assert not policy._queue
    policy.reset()
    again = [policy.select_action(obs) for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))  # deterministic mode
    with torch.no_grad():
        policy.actor.head.mu.bias.add_(0.7)  # another mean noise
    policy.reset()
    moved = policy.select_action(obs)
    assert not torch.allclose(moved, first[0], atol=1e-4)
    # Stochastic mode samples other noise each chunk.
    policy.reset()
    s1 = policy.predict_action_chunk(obs, deterministic=False)
    s2 = policy.predict_action_chunk(obs, deterministic=False)
    assert not torch.allclose(s1, s2, atol=1e-5)


def test_one_training_step_trains_only_the_steering_networks(base):
    adapter, make_batch = base
    policy = _dsrl(adapter)
    obs = make_batch(3, 2)
    action = policy.decode(obs, torch.randn(3, policy.noise_dim))
    loss, metrics = policy.forward(_dataset_batch(policy, obs, action, torch.ones(3), ended=torch.tensor([1, 0, 0]).bool()))
    for name in ("critic_loss", "actor_loss", "alpha", "noise_critic_loss", "q_mean", "td_error", "entropy"):
        assert isinstance(metrics[name], float)
    loss.backward()
    assert all(p.grad is None for p in adapter.parameters())
    optimized = {id(p) for g in policy.get_optim_params() for p in g["params"]}
    assert not optimized & {id(p) for p in adapter.parameters()}
    assert not optimized & {id(p) for p in policy.critic_target.parameters()}
    assert all(p.grad is not None for p in policy.actor.head.parameters())


# ----------------------------------------------------------------------------- toy problems


def _toy(adapter, make_batch, variant, steps, seed=0):
    """One observation, one-chunk episodes, reward -|chunk - target chunk|^2: the best noise is known."""
    torch.manual_seed(seed)
    policy = _dsrl(adapter, variant=variant, hidden_dims=[64, 64], actor_lr=3e-3, critic_lr=3e-3,
                   noise_critic_lr=3e-3, temperature_lr=3e-3, init_temperature=0.01)
    obs = make_batch(1, 3)
    target = policy.decode(obs, torch.full((1, policy.noise_dim), 0.8))

    def reward_of(chunk):
        return -(chunk - target).pow(2).mean(dim=(1, 2))

    return policy, obs, target, reward_of


@pytest.mark.slow  # about 20 s on CPU
def test_dsrl_na_losses_decrease_and_the_actor_finds_better_noise_through_forward(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy, obs, target, reward_of = _toy(adapter, batch_maker(adapter.policy), "na", 0)
    b = 32
    batch_obs = {k: v.expand(b, *v.shape[1:]) for k, v in obs.items()}
    optimizer = torch.optim.Adam(policy.get_optim_params())
    history = []
    for _ in range(120):
        w = torch.rand(b, policy.noise_dim) * 2 - 1
        action = policy.decode(batch_obs, w)
        batch = _dataset_batch(policy, batch_obs, action, reward_of(action), ended=torch.ones(b, dtype=torch.bool))
        loss, metrics = policy.forward(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.update()
        history.append(metrics)
    first, last = history[:10], history[-10:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "critic_loss") < 0.5 * mean(first, "critic_loss")
    assert mean(last, "noise_critic_loss") < 0.5 * mean(first, "noise_critic_loss")
    random_reward = reward_of(policy.decode(batch_obs, torch.rand(b, policy.noise_dim) * 2 - 1)).mean()
    steered = reward_of(policy.predict_action_chunk(obs, deterministic=True)).mean()
    assert steered > random_reward


def test_dsrl_sac_losses_decrease_through_the_registered_rl_algorithm(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy, obs, target, reward_of = _toy(adapter, batch_maker(adapter.policy), "sac", 0)
    algorithm = make_algorithm(DSRLAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=5), policy)
    assert type(algorithm).__name__ == "DSRLAlgorithm"  # LeRobot's factory builds our type
    b = 32
    batch_obs = {k: v.expand(b, *v.shape[1:]) for k, v in obs.items()}

    def replay():
        while True:
            w = (torch.rand(b, policy.noise_dim) * 2 - 1) * policy.config.noise_bound
            chunk = policy.decode(batch_obs, w)
            yield {"state": batch_obs, "action": chunk, "reward": reward_of(chunk), "next_state": batch_obs,
                   "done": torch.ones(b), "truncated": torch.zeros(b), "complementary_info": {"noise": w}}

    iterator = replay()
    stats = [algorithm.update(iterator) for _ in range(25)]
    assert algorithm.optimization_step == 125
    assert sum(s.losses["critic_loss"] for s in stats[-5:]) < 0.5 * sum(s.losses["critic_loss"] for s in stats[:5])
    assert {"actor_loss", "alpha_loss"} <= set(stats[-1].losses) and "alpha" in stats[-1].extra
    # Algorithm state round trip keeps the optimizers' parameters.
    state = {k: v.clone() for k, v in algorithm.state_dict().items()}
    alpha_param = policy.log_alpha
    algorithm.load_state_dict({k: torch.zeros_like(v) for k, v in state.items()})
    assert policy.log_alpha is alpha_param and float(policy.log_alpha.detach()) == 0.0
    algorithm.load_state_dict(state)
    assert set(algorithm.get_weights()) == {"actor"}


# ------------------------------------------------------------------------------ checkpoints

LOAD_AND_ACT = """
import sys, torch
torch.set_num_threads(1)  # the same reduction order as the saving process
import lerobot_steer
from lerobot_steer.policies.dsrl import DSRLPolicy
path, inputs, out = sys.argv[1:]
batch = torch.load(inputs)
policy = DSRLPolicy.from_pretrained(path)
torch.save({"mean": policy.predict_action_chunk(batch["obs"], deterministic=True),
            "noise": policy.predict_action_chunk(batch["obs"], noise=batch["noise"])}, out)
"""


@pytest.mark.slow  # loads the checkpoint in a fresh Python process
def test_save_then_load_in_a_fresh_process_gives_identical_actions(diffusion_base, tmp_path):
    torch.manual_seed(1)
    policy = DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), **SMALL))
    with torch.no_grad():
        policy.actor.head.mu.bias.add_(0.3)
    obs = batch_maker(policy.adapter.policy)(2, 5)
    noise = policy.adapter.sample_noise(2)
    policy.reset()
    expected = {"mean": policy.predict_action_chunk(obs, deterministic=True),
                "noise": policy.predict_action_chunk(obs, noise=noise)}
    policy.save_pretrained(tmp_path / "ckpt")
    torch.save({"obs": obs, "noise": noise}, tmp_path / "in.pt")
    result = subprocess.run([sys.executable, "-c", LOAD_AND_ACT, str(tmp_path / "ckpt"), str(tmp_path / "in.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["mean"], expected["mean"]) and torch.equal(got["noise"], expected["noise"])


def test_processors_are_the_bases_own_with_standard_step_names(diffusion_base):
    from lerobot.processor import PolicyProcessorPipeline

    config = DSRLConfig(base_policy_path=str(diffusion_base), **SMALL)
    pre, post = make_dsrl_pre_post_processors(config, dataset_stats={"action": {"min": torch.zeros(2)}})
    base_pre = PolicyProcessorPipeline.from_pretrained(diffusion_base, config_filename="policy_preprocessor.json")
    names = [s.get_config and type(s).__name__ for s in pre.steps]
    assert "NormalizerProcessorStep" in names
    ours = next(s for s in pre.steps if type(s).__name__ == "NormalizerProcessorStep").state_dict()
    theirs = next(s for s in base_pre.steps if type(s).__name__ == "NormalizerProcessorStep").state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(type(s).__name__ == "UnnormalizerProcessorStep" for s in post.steps)


def test_hub_upload_contains_the_base_and_a_card_naming_it(diffusion_base, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setattr(ModelCard, "validate", lambda self, *a, **k: None)  # asks the Hub; offline here
    policy = DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), **SMALL))
    policy.save_pretrained(tmp_path)
    # The patterns of LeRobot's push_model_to_hub upload_folder call.
    uploaded = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                and any(fnmatch(str(p.relative_to(tmp_path)), pat) for pat in ["*.safetensors", "*.json", "*.md"])}
    assert {"config.json", "model.safetensors", "base_policy/config.json", "base_policy/model.safetensors",
            "base_policy/policy_preprocessor.json", "base_policy/policy_postprocessor.json"} <= uploaded
    card = policy.generate_model_card("local/so101", "dsrl", None, None)
    assert "diffusion" in card.text and str(diffusion_base) in card.text and "base_policy/" in card.text


# ------------------------------------------------------------------------------ bad input


def test_dataset_without_reward_fails_naming_the_options(diffusion_base):
    meta = diffusion_dataset_meta()
    with pytest.raises(ValueError, match="reward_from_success"):
        DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), **SMALL), dataset_meta=meta)
    # With the option, it builds, and the reward is 1 at the end of a successful episode.
    policy = DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), reward_from_success=True, **SMALL),
                        dataset_meta=meta)
    obs = batch_maker(policy.adapter.policy)(2, 0)
    batch = _dataset_batch(policy, obs, torch.zeros(2, 4, 2), torch.zeros(2), ended=torch.tensor([True, False]))
    del batch["next.reward"]
    t = policy.transitions_from_dataset(batch)
    assert t.reward.tolist() == [1.0, 0.0] and t.terminated.tolist() == [1.0, 0.0]


def test_features_that_do_not_match_the_base_fail_with_the_mismatch_spelled_out(diffusion_base):
    meta = types.SimpleNamespace(features={
        STATE: {"dtype": "float32", "shape": (5,), "names": None},
        ACTION: {"dtype": "float32", "shape": (2,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    })
    with pytest.raises(FeatureMismatchError) as err:
        DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), **SMALL), dataset_meta=meta)
    assert "observation.state" in str(err.value) and ENV in str(err.value)


def test_missing_or_corrupt_base_checkpoint_fails_naming_the_path(diffusion_base, tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nowhere")):
        DSRLConfig(base_policy_path=str(tmp_path / "nowhere")).observation_delta_indices  # noqa: B018
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in diffusion_base.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=str(broken)):
        DSRLPolicy(DSRLConfig(base_policy_path=str(broken), **SMALL))


def test_episode_end_truncated_bootstraps_and_chunk_rewards_stop_at_the_episode_end(diffusion_base):
    policy = DSRLPolicy(DSRLConfig(base_policy_path=str(diffusion_base), episode_end="truncated", **SMALL))
    obs = batch_maker(policy.adapter.policy)(1, 0)
    batch = _dataset_batch(policy, obs, torch.zeros(1, 4, 2), torch.zeros(1), ended=torch.tensor([True]))
    batch["next.reward"] = torch.ones(1, 4)
    batch["next.reward_is_pad"] = torch.tensor([[False, False, True, True]])
    batch["action_is_pad"] = torch.tensor([[False, False, True, True]])
    t = policy.transitions_from_dataset(batch)
    assert t.reward.tolist() == [2.0] and t.n_steps.tolist() == [2.0] and t.terminated.tolist() == [0.0]


def test_env_features_the_base_leaves_raw_reach_the_critics_standardized(diffusion_base, tmp_path):
    """LeRobot's diffusion normalizes STATE but not ENV: block and bowl poses would reach the
    critics in raw metres. The networks standardize them with the base's dataset statistics, and
    the statistics travel with the checkpoint."""
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy = _dsrl(adapter, variant="na")
    assert "ENV" not in policy.config.normalization_mapping
    encoder = policy.critic.encoder.state
    env_slice = slice(4, 7)  # tiny base: state (4) then env state (3); stats_for gives mean 0.1, std 2
    torch.testing.assert_close(encoder.center[env_slice], torch.full((3,), 0.1))
    torch.testing.assert_close(encoder.scale[env_slice], torch.full((3,), 2.0))
    torch.testing.assert_close(encoder.center[:4], torch.zeros(4))  # STATE is already normalized
    obs = batch_maker(adapter.policy)(2, 0)
    features = encoder(obs)
    torch.testing.assert_close(features[:, env_slice], (obs["observation.environment_state"] - 0.1) / 2.0)
    policy.save_pretrained(tmp_path)
    reloaded = DSRLPolicy.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.actor.encoder.state.scale, policy.actor.encoder.state.scale)


def test_a_batch_from_another_dataset_is_refused_instead_of_clamped_to_its_episodes(diffusion_base):
    policy = _dsrl(BasePolicyAdapter.from_pretrained(diffusion_base))
    policy._episode_success = torch.tensor([True, False])
    assert policy._success_of({"episode_index": torch.tensor([1, 0])}, 2, "cpu").tolist() == [False, True]
    with pytest.raises(ValueError, match="episode_index 0..5 is outside the dataset's episodes 0..1"):
        policy._success_of({"episode_index": torch.tensor([0, 5])}, 2, "cpu")


def test_episode_success_is_read_from_the_recorded_frames_of_a_real_dataset(tmp_path):
    """LeRobot 0.6.1's loaded episode metadata has no per-episode stats columns: reading success from
    them made every episode a success under --policy.reward_from_success. It comes from the frames."""
    from helpers_bases import write_success_dataset

    from lerobot_steer.policies.common.frozen_base import episode_success

    meta = write_success_dataset(tmp_path / "ds", "local/success_test", frames_per_episode=4)
    assert episode_success(meta).tolist() == [True, False, True]


def test_time_limit_ends_bootstrap_unless_asked_to_end_the_return_like_the_references(diffusion_base):
    policy = _dsrl(BasePolicyAdapter.from_pretrained(diffusion_base))
    obs = batch_maker(policy.adapter.policy)(3, 0)
    batch = {"state": obs, "next_state": obs, "action": torch.zeros(3, 4, 2), "reward": torch.zeros(3),
             "done": torch.tensor([1.0, 0.0, 0.0]), "truncated": torch.tensor([0.0, 1.0, 0.0])}
    assert policy.transitions_from_replay(batch).terminated.tolist() == [1.0, 0.0, 0.0]
    policy.config.bootstrap_time_limit = False
    assert policy.transitions_from_replay(batch).terminated.tolist() == [1.0, 1.0, 0.0]


def test_prefill_noise_is_the_prior_clipped_to_the_actor_bound(base):
    """Prefill transitions must lie where the actor can act: the critic learns on them."""
    adapter, _ = base
    policy = _dsrl(adapter, noise_bound=0.5)
    torch.manual_seed(0)
    w = policy.prefill_noise(512)
    assert w.shape == (512, policy.noise_dim)
    assert w.abs().max() <= 0.5 and (w.abs() == 0.5).float().mean() > 0.3  # N(0, I) clipped, not rescaled


def test_acting_mode_switches_to_the_mean_noise_for_a_block_and_restores(base):
    """What lerobot-steer-rl's `--eval.also_deterministic` relies on: the mode holds inside the block
    only, whatever the block raises."""
    adapter, make_batch = base
    policy = _dsrl(adapter, deterministic_actions=False)
    assert policy.has_deterministic_mode
    obs = make_batch(2, 0)
    with policy.acting_mode(True):
        first, again = policy.predict_action_chunk(obs), policy.predict_action_chunk(obs)
        assert torch.equal(first, again)  # the actor's mean noise, no sample
    assert policy.config.deterministic_actions is False
    assert not torch.equal(policy.predict_action_chunk(obs), policy.predict_action_chunk(obs))
    with pytest.raises(RuntimeError), policy.acting_mode(True):
        raise RuntimeError("an evaluation that fails")
    assert policy.config.deterministic_actions is False
