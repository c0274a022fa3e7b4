"""Chunk-level PPO and GRPO (`lerobot-steer-ppo`): what a user fine-tuning pi0 / SmolVLA relies on.

* the arithmetic: GAE over chunk steps (terminal vs time-limit bootstrap), group-relative advantages,
  the clipped surrogate and clipped value loss, each against numbers worked out by hand;
* the update: a stored chain re-evaluates to ratio 1 before any step, micro-batches accumulate to the
  minibatch's gradient, the approx-KL early stop skips the step that would go too far, a rollout
  refuses rows from other weights;
* learning: PPO and GRPO each move a biased flow-matching policy (decoded through the same
  `StochasticEuler` chain as the VLAs) to the known optimum of a contextual bandit in seconds;
* the sim: GRPO groups share their initial state; a tiny SmolVLA (LeRobot's class and processors,
  the task string tokenized) trains end to end, writes a `smolvla_rl` checkpoint that reloads and
  exports to a stock `smolvla` one, and `--resume=true` continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers_bases import one_thread, save_base, sim_smolvla, vla_builds  # noqa: F401  (pytest fixtures)
from safetensors.torch import load_file
from torch import nn

from lerobot_steer.policies.common.vla_rl import NoiseStdHead, ValueHead, VLAChain
from lerobot_steer.rl.chunk_rollout import ChunkCollector
from lerobot_steer.rl.onpolicy import GRPOAlgorithm, GRPOConfig, PPOAlgorithm, PPOConfig
from lerobot_steer.rl.onpolicy.advantages import gae, group_relative_advantages
from lerobot_steer.rl.onpolicy.losses import clipped_surrogate, clipped_value_loss
from lerobot_steer.rl.onpolicy.rollout_buffer import RolloutBuffer
from lerobot_steer.steering.networks import build_mlp
from lerobot_steer.steering.stochastic_flow import StochasticEuler

# ----------------------------------------------------------------------- a toy flow policy and task

CTX, ACT, STEPS = 2, 2, 4
TARGET_M = torch.tensor([[0.5, -0.3], [0.2, 0.4]])
TARGET_B = torch.tensor([0.3, -0.2])
BIAS = torch.tensor([0.6, -0.5])  # the base's offset from the optimum


def optimum(context: torch.Tensor) -> torch.Tensor:
    return context @ TARGET_M.T + TARGET_B


def bandit_reward(context: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """-||a - a*(c)||^2: its maximum, 0, is at the known optimum a*(c) = M c + b."""
    return -(action - optimum(context)).square().sum(dim=-1)


class ToyFlowPolicy(nn.Module):
    """A flow-matching policy with the `*_rl` interface, small enough to learn in seconds.

    Velocity v(x, t, c) = (x - (W c + b)) / t + MLP(x, t, c): Euler steps from t = 1 to 0 decode
    exactly W c + b while the (zero-initialised) MLP is 0. W, b start at the biased base. The chain is
    `StochasticEuler`'s Flow-Noise (std from the VLAs' `NoiseStdHead` on [x, c]), the value the VLAs'
    `ValueHead` on the context: the same functions pi0_rl / smolvla_rl decode through.
    """

    def __init__(self, min_std: float = 0.05, max_std: float = 0.3):
        super().__init__()
        self.W = nn.Parameter(TARGET_M.clone())
        self.b = nn.Parameter(TARGET_B + BIAS)
        self.residual = build_mlp(ACT + 1 + CTX, [32], ACT, activation="tanh", layer_norm=False)
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)
        self.rl_noise_head = NoiseStdHead(ACT + CTX, [16], ACT, min_std, max_std)
        self.rl_value_head = ValueHead(CTX, [32])

    def velocity(self, x, t: float, c):
        mean = (c @ self.W.T + self.b).unsqueeze(1)
        inputs = torch.cat([x, torch.full_like(x[..., :1], t), c.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        return (x - mean) / t + self.residual(inputs)

    def _chain(self, batch, *, forced_chain=None, deterministic=False, generator=None) -> VLAChain:
        c = batch["context"]
        x = forced_chain[:, 0] if forced_chain is not None else torch.randn(c.shape[0], 1, ACT, generator=generator)

        def std(x_k, _v, t):
            return self.rl_noise_head(torch.cat([x_k, c.unsqueeze(1).expand(-1, x_k.shape[1], -1)], dim=-1), t)

        hook = StochasticEuler(chain_type="flow_noise", num_steps=STEPS, std_fn=std,
                               mask=torch.ones(1, ACT, dtype=torch.bool), deterministic=deterministic,
                               forced_chain=forced_chain, generator=generator)
        for k in range(STEPS):  # what LeRobot's euler_integrate does around its per-step seam
            t = 1.0 - k / STEPS
            x = x - hook.denoise_step(x, t, lambda x_k, t=t: self.velocity(x_k, t, c)) / STEPS
        record = hook.record()
        return VLAChain(actions=record.chain[:, -1], chain=record.chain,
                        log_prob=None if deterministic else record.log_prob, step_log_probs=record.step_log_probs,
                        entropy=record.entropy, stds=record.stds, value=self.rl_value_head(c))

    @torch.no_grad()
    def sample_actions_with_log_prob(self, batch, noise=None, *, deterministic=False, generator=None) -> VLAChain:
        return self._chain(batch, deterministic=deterministic, generator=generator)

    def evaluate_chain(self, batch, chain) -> VLAChain:
        return self._chain(batch, forced_chain=chain)

    def log_prob_of_chain(self, batch, chain):
        return self.evaluate_chain(batch, chain).log_prob

    def mean_action(self, context):
        return self.sample_actions_with_log_prob({"context": context}, deterministic=True).actions[:, 0]


def to_batch(obs, _env_index):
    return {"context": torch.as_tensor(obs["context"])}


def bandit_round(policy, algorithm, contexts: torch.Tensor, generator: torch.Generator):
    """One rollout of the bandit (each row one terminal chunk step) and the algorithm's update on it."""
    out = policy.sample_actions_with_log_prob({"context": contexts}, generator=generator)
    reward = bandit_reward(contexts, out.actions[:, 0])
    n = contexts.shape[0]
    buffer = RolloutBuffer(1, n)
    buffer.add({"context": contexts.numpy()}, out.chain, log_prob=out.log_prob, value=out.value, reward=reward,
               discount=torch.ones(n), terminated=torch.ones(n, dtype=torch.bool),
               truncated=torch.zeros(n, dtype=torch.bool), weights_version=algorithm.optimization_step)
    return algorithm.learn(buffer, to_batch, last_value=torch.zeros(n), generator=generator), reward


def held_out_error(policy) -> tuple[float, float]:
    """(mean |a - a*| of the deterministic action, its mean reward) on fixed held-out contexts."""
    contexts = torch.rand(512, CTX, generator=torch.Generator().manual_seed(123)) * 2 - 1
    action = policy.mean_action(contexts)
    return float((action - optimum(contexts)).norm(dim=-1).mean()), float(bandit_reward(contexts, action).mean())


# ------------------------------------------------------------------------------- hand-computed


def test_gae_matches_a_hand_computed_rollout():
    """One env, 4 chunk steps: a time-out after step 1 (bootstraps from its last observation) and a
    terminal at step 3; gamma^n differs per row (a chunk cut short by the episode end)."""
    rewards = torch.tensor([[1.0], [0.0], [2.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [1.0], [2.0]])
    discounts = torch.tensor([[0.9], [0.81], [0.9], [0.9]])
    lam = 0.5
    buffer = RolloutBuffer(4, 1)
    for t, (term, trunc) in enumerate([(False, False), (False, True), (False, False), (True, False)]):
        buffer.add({"x": np.zeros((1, 1), np.float32)}, torch.zeros(1, 2, 1, 1), log_prob=torch.zeros(1),
                   value=values[t], reward=rewards[t], discount=discounts[t], terminated=torch.tensor([term]),
                   truncated=torch.tensor([trunc]), bootstrap_value=torch.tensor([3.0 if trunc else 0.0]),
                   weights_version=0)
    buffer.compute_gae(last_value=torch.tensor([7.0]), gae_lambda=lam)
    # by hand, from the last row back:
    #   t=3 terminal:  delta = 1 - 2                    = -1.0;  A3 = -1.0
    #   t=2:           delta = 2 + 0.9*2.0 - 1.0        =  2.8;  A2 = 2.8 + 0.9*0.5*(-1.0)   = 2.35
    #   t=1 time-out:  delta = 0 + 0.81*3.0 - 0.4       = 2.03;  A1 = 2.03 (the trace stops)
    #   t=0:           delta = 1 + 0.9*0.4 - 0.5        = 0.86;  A0 = 0.86 + 0.9*0.5*2.03     = 1.7735
    expected = torch.tensor([[1.7735], [2.03], [2.35], [-1.0]])
    torch.testing.assert_close(buffer["advantage"], expected)
    torch.testing.assert_close(buffer["return"], expected + values)
    # the function itself, with a rollout that stops mid-episode: the last row bootstraps from V(s_T)
    advantages, _ = gae(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[7.0]]), torch.tensor([[0.9]]),
                        torch.tensor([[False]]), lam)
    torch.testing.assert_close(advantages, torch.tensor([[1.0 + 0.9 * 7.0 - 0.5]]))


def test_group_relative_advantages_and_flat_groups():
    returns = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])  # groups of 2: {1, 0}, {0, 1}, {2, 2}
    torch.testing.assert_close(group_relative_advantages(returns, 2),
                               torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0]), atol=1e-5, rtol=0)  # (R - 0.5) / 0.5
    torch.testing.assert_close(group_relative_advantages(returns, 2, scale=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))
    # in the buffer: each env column is one episode; rows after its end do not count, flat groups are left out
    buffer = RolloutBuffer(2, 4)
    for t in range(2):
        buffer.add({"x": np.zeros((4, 1), np.float32)}, torch.zeros(4, 2, 1, 1), log_prob=torch.zeros(4), value=None,
                   reward=torch.tensor([1.0, 0.0, 1.0, 1.0]), discount=torch.ones(4),
                   terminated=torch.tensor([t == 0, False, False, False]), truncated=torch.zeros(4, dtype=torch.bool),
                   valid=torch.tensor([t == 0, True, True, True]), weights_version=0)
    returns = buffer.compute_group_advantages(2)
    torch.testing.assert_close(returns, torch.tensor([1.0, 0.0, 2.0, 2.0]))
    assert buffer.train_rows.tolist() == [[True, True, False, False], [False, True, False, False]]


def test_clipped_surrogate_and_value_loss_match_hand_computed_values():
    ratio = torch.tensor([0.5, 1.0, 1.5])
    advantages = torch.tensor([1.0, -1.0, 2.0])
    loss, stats = clipped_surrogate(ratio.log(), torch.zeros(3), advantages, clip=0.2)
    # -min(r A, clip(r, 0.8, 1.2) A): -min(0.5, 0.8) = -0.5; -min(-1, -1) = 1; -min(3, 2.4) = -2.4
    torch.testing.assert_close(loss, torch.tensor([-0.5, 1.0, -2.4]))
    torch.testing.assert_close(stats["clipped"].mean(), torch.tensor(2 / 3))
    torch.testing.assert_close(stats["approx_kl"], ratio - 1 - ratio.log())  # k3 >= 0
    # |log rho| sees rows that moved both ways: ln 2 and ln 1.5 here, while the mean ratio is exactly 1
    torch.testing.assert_close(stats["abs_log_ratio"], torch.tensor([0.6931472, 0.0, 0.4054651]))
    torch.testing.assert_close(stats["ratio"].mean(), torch.tensor(1.0))
    values, old, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), torch.tensor([2.0, 0.0])
    # row 0: unclipped (1 - 2)^2 = 1, clipped V = 0.5 + 0.2 = 0.7 -> (0.7 - 2)^2 = 1.69: max 1.69
    # row 1: unclipped 0, clipped V = 0.5 - 0.2 = 0.3 -> 0.09: max 0.09
    torch.testing.assert_close(clipped_value_loss(values, old, returns, 0.2), 0.5 * torch.tensor([1.69, 0.09]))
    torch.testing.assert_close(clipped_value_loss(values, old, returns, None), 0.5 * torch.tensor([1.0, 0.0]))


# -------------------------------------------------------------------------------- the update


def _ppo(policy, **fields) -> PPOAlgorithm:
    defaults = dict(lr=1e-2, value_lr=1e-2, update_epochs=4, minibatch_size=64, clip_ratio=0.2, max_grad_norm=1.0)
    return PPOAlgorithm(policy, PPOConfig(**{**defaults, **fields}))


def test_a_stored_chain_reevaluates_to_ratio_one_and_micro_batches_give_the_minibatch_step():
    torch.manual_seed(0)
    contexts = torch.rand(32, CTX) * 2 - 1
    steps = []
    for micro in (None, 8):
        torch.manual_seed(1)
        policy = ToyFlowPolicy()
        algorithm = _ppo(policy, update_epochs=1, minibatch_size=32, micro_batch_size=micro, max_grad_norm=None)
        stats, _ = bandit_round(policy, algorithm, contexts, torch.Generator().manual_seed(2))
        assert stats.extra["policy/optimizer_steps"] == 1
        assert abs(stats.extra["policy/ratio"] - 1) < 1e-5 and stats.extra["policy/approx_kl"] < 1e-8, \
            "before any step the re-evaluated chain must have its acting log-likelihood"
        steps.append({k: v.detach().clone() for k, v in policy.state_dict().items()})
    for key in steps[0]:
        torch.testing.assert_close(steps[0][key], steps[1][key], atol=1e-6, rtol=1e-5)


def test_approx_kl_early_stop_skips_the_step_that_goes_too_far():
    torch.manual_seed(0)
    policy = ToyFlowPolicy()
    contexts = torch.rand(64, CTX) * 2 - 1
    out = policy.sample_actions_with_log_prob({"context": contexts})
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    for target_kl, expected_steps in ((0.05, 0), (None, 4)):
        algorithm = _ppo(policy, target_kl=target_kl, update_epochs=4, minibatch_size=64)
        buffer = RolloutBuffer(1, 64)
        # the acting policy "was" another one: its log-likelihoods are 1 nat lower, approx-KL ~ 0.72 per chain
        buffer.add({"context": contexts.numpy()}, out.chain, log_prob=out.log_prob - 1.0, value=out.value,
                   reward=bandit_reward(contexts, out.actions[:, 0]), discount=torch.ones(64),
                   terminated=torch.ones(64, dtype=torch.bool), truncated=torch.zeros(64, dtype=torch.bool),
                   weights_version=0)
        stats = algorithm.learn(buffer, to_batch, last_value=torch.zeros(64))
        assert stats.extra["policy/approx_kl"] > 0.5
        assert stats.extra["policy/optimizer_steps"] == expected_steps
        assert stats.extra["policy/early_stopped"] == float(target_kl is not None)
        if target_kl is not None:
            assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items()), "a stopped update moved"


def test_rollout_refuses_rows_of_other_weights_and_round_trips():
    buffer = RolloutBuffer(3, 2)
    row = dict(log_prob=torch.zeros(2), value=torch.zeros(2), reward=torch.ones(2), discount=torch.ones(2),
               terminated=torch.zeros(2, dtype=torch.bool), truncated=torch.zeros(2, dtype=torch.bool))
    obs = {"agent_pos": np.ones((2, 6), np.float32), "pixels": {"front": np.full((2, 4, 4, 3), 7, np.uint8)}}
    buffer.add(obs, torch.randn(2, 3, 4, 5), weights_version=5, **row)
    with pytest.raises(RuntimeError, match="weights version"):
        buffer.add(obs, torch.randn(2, 3, 4, 5), weights_version=6, **row)
    again = RolloutBuffer(3, 2)
    again.load_state_dict(buffer.state_dict())
    assert len(again) == 1 and again.weights_version == 5 and again.obs["pixels/front"].dtype == torch.uint8
    torch.testing.assert_close(again.chain[:1], buffer.chain[:1])
    with pytest.raises(ValueError, match="n_envs"):
        RolloutBuffer(3, 4).load_state_dict(buffer.state_dict())
    algorithm = _ppo(ToyFlowPolicy())
    with pytest.raises(RuntimeError, match="weights version 5"):
        algorithm.learn(buffer, to_batch, last_value=torch.zeros(2))


# ----------------------------------------------------------------------- learning: the known optimum


def test_ppo_reaches_the_bandit_optimum_from_a_biased_flow_base():
    torch.manual_seed(0)
    policy = ToyFlowPolicy()
    error0, reward0 = held_out_error(policy)
    assert error0 > 0.7  # |(0.6, -0.5)| = 0.78
    algorithm = _ppo(policy)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # 256 contexts each
        stats, _ = bandit_round(policy, algorithm, torch.rand(256, CTX, generator=generator) * 2 - 1, generator)
    error, reward = held_out_error(policy)
    # seeds 0-2 end 0.014-0.017 from the optimum (the base: 0.78), mean reward -0.61 -> -0.0004
    assert error < 0.1, f"PPO's deterministic action is {error:.3f} from the optimum (base: {error0:.3f})"
    assert reward > reward0 + 0.5, (reward0, reward)
    assert {"value/explained_variance", "value/loss", "policy/clip_fraction"} <= {*stats.extra, *stats.losses}


def test_grpo_reaches_the_bandit_optimum_from_a_biased_flow_base():
    """G = 8 decodes of each context (the bandit's "same initial state"), no value function."""
    torch.manual_seed(0)
    policy = ToyFlowPolicy()
    error0, reward0 = held_out_error(policy)
    algorithm = GRPOAlgorithm(policy, GRPOConfig(group_size=8, lr=1e-2, update_epochs=4, minibatch_size=64,
                                                 kl_coef=0.01))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        contexts = (torch.rand(32, CTX, generator=generator) * 2 - 1).repeat_interleave(8, dim=0)
        stats, _ = bandit_round(policy, algorithm, contexts, generator)
    error, reward = held_out_error(policy)
    # seeds 0-2 end 0.009-0.013 from the optimum
    assert error < 0.1, f"GRPO's deterministic action is {error:.3f} from the optimum (base: {error0:.3f})"
    assert reward > reward0 + 0.5, (reward0, reward)
    assert "policy/kl_to_reference" in stats.extra and stats.extra["policy/kl_to_reference"] >= 0
    assert "value/loss" not in stats.losses


# ------------------------------------------------------------------------------------- the sim


class _StepReward(gym.Env):
    """Reward 1, 2, 3, ... per step; terminates after `length` steps."""

    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (1,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, length: int):
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"x": np.zeros(1, np.float32)}, {}

    def step(self, action):
        self.t += 1
        return {"x": np.zeros(1, np.float32)}, float(self.t), self.t >= self.length, False, {}


def test_chunk_reward_is_summed_with_the_per_step_discount():
    envs = gym.vector.SyncVectorEnv([lambda: _StepReward(10), lambda: _StepReward(2)],
                                    autoreset_mode=AutoresetMode.SAME_STEP)
    collector = ChunkCollector(envs, gamma=0.5)
    batch, _ = collector.collect(lambda obs: (np.zeros((2, 3, 1), np.float32), {}))
    # env 0: 1 + 0.5 * 2 + 0.25 * 3 = 2.75 over 3 steps; env 1 ends after 2: 1 + 0.5 * 2 = 2
    np.testing.assert_allclose(batch.discounted_reward, [2.75, 2.0])
    np.testing.assert_allclose(batch.reward, [6.0, 3.0])
    assert batch.n_steps.tolist() == [3, 2]
    envs.close()


def test_grpo_groups_share_their_initial_state():
    from types import SimpleNamespace

    from lerobot_steer.rl.onpolicy.train import group_seeds
    from lerobot_steer.sim.env_config import SO101SimEnvConfig

    env_cfg = SO101SimEnvConfig(obs_type="state")
    cfg = SimpleNamespace(seed=3, n_envs=6, algorithm=SimpleNamespace(group_size=3))
    seeds = group_seeds(cfg, rollout=4)
    assert seeds == group_seeds(cfg, rollout=4) and seeds != group_seeds(cfg, rollout=5)
    envs = env_cfg.create_envs(n_envs=6, use_async_envs=False)[env_cfg.type][0]
    try:
        collector = ChunkCollector(envs)
        obs = collector.reset(seed=seeds)
        state = np.concatenate([obs["agent_pos"], obs["environment_state"]], axis=1)
        for group in (state[:3], state[3:]):
            assert (group == group[0]).all(), "a group's envs must start from one state"
        assert not np.allclose(state[0], state[3]), "two groups drew the same initial state"
    finally:
        envs.close()


# ------------------------------------------------------------------------ end to end on the sim

SIM = ["--env.type=so101_sim", "--env.obs_type=pixels", "--env.cameras=[front]", "--env.image_height=32",
       "--env.image_width=32", "--env.episode_length=24", "--env.reward_type=dense", "--n_envs=2",
       "--eval.batch_size=2", "--progress=false", "--seed=5"]
PPO = ["--algorithm.type=ppo", "--algorithm.rollout_chunks=4", "--algorithm.minibatch_size=4",
       "--algorithm.micro_batch_size=2", "--algorithm.update_epochs=2", "--algorithm.lr=1e-4"]


def ppo_cli(monkeypatch, *args) -> None:
    """`lerobot-steer-ppo <args>` in this process (the tiny SmolVLA builds only with `vla_builds` active)."""
    from lerobot_steer.rl.onpolicy.train import main

    monkeypatch.setattr(sys, "argv", ["lerobot-steer-ppo", *map(str, args)])
    main()


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two short runs of a tiny SmolVLA on the sim (25-30 s beside two training runs)
def test_ppo_and_grpo_runs_checkpoint_a_policy_that_reloads_and_exports(sim_smolvla, tmp_path, monkeypatch):
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from lerobot_steer.policies.common.vla_rl import export_to_base
    from lerobot_steer.policies.smolvla_rl import SmolVLARLPolicy

    out = tmp_path / "ppo"
    ppo_cli(monkeypatch, "--policy.type=smolvla_rl", f"--policy.base_policy_path={sim_smolvla}", "--policy.device=cpu",
            *PPO, *SIM, "--steps=256", "--log_freq=128", "--save_freq=128", "--eval.freq=256", "--eval.n_episodes=2",
            f"--output_dir={out}")
    table = rows(out)
    assert [r["env_steps"] for r in table] == [128, 256]
    last = table[-1]
    for name in ("policy/loss", "policy/approx_kl", "policy/clip_fraction", "policy/abs_log_ratio", "policy/entropy",
                 "value/loss", "value/explained_variance", "policy/grad_norm", "train/episode_return", "eval/success_rate",
                 "eval/ci95_high", "env_steps_per_s"):
        assert name in last, name
    assert last["rollouts"] == 8 and last["updates"] == 8 * 2 * 2  # 8 rows per rollout: 2 minibatches x 2 epochs
    ckpt = out / "checkpoints" / "last"
    assert ckpt.resolve().name == "000000256"
    for part in ("pretrained_model/model.safetensors", "pretrained_model/policy_preprocessor.json",
                 "training_state/rollout.safetensors", "training_state/policy/optimizer_state.safetensors",
                 "training_state/envs.json"):
        assert (ckpt / part).is_file(), part

    # the checkpoint reloads as the trained smolvla_rl policy, and exports to a stock smolvla one with
    # the same (deterministic) actions
    model = ckpt / "pretrained_model"
    policy = SmolVLARLPolicy.from_pretrained(model)
    weights = load_file(str(model / "model.safetensors"))
    torch.testing.assert_close(policy.state_dict()["model.action_out_proj.weight"], weights["model.action_out_proj.weight"])
    base_weights = load_file(str(sim_smolvla / "model.safetensors"))
    assert not torch.equal(weights["model.action_out_proj.weight"], base_weights["model.action_out_proj.weight"]), \
        "PPO did not move the action expert"
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(model))
    stock_dir = export_to_base(policy, tmp_path / "stock", preprocessor=pre, postprocessor=post)
    stock = SmolVLAPolicy.from_pretrained(stock_dir)
    batch = pre({"observation.state": torch.zeros(1, 6), "observation.images.front": torch.rand(1, 3, 32, 32),
                 "task": ["Pick up the red block and place it in the blue bowl."]})
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim)
    policy.eval()
    torch.testing.assert_close(stock.predict_action_chunk(batch, noise=noise), policy.predict_action_chunk(batch, noise=noise))

    out = tmp_path / "grpo"
    ppo_cli(monkeypatch, f"--policy.path={model}", "--algorithm.type=grpo", "--algorithm.group_size=2",
            "--algorithm.minibatch_size=4", "--algorithm.update_epochs=1", "--algorithm.kl_coef=0.01", *SIM,
            "--env.episode_length=8",
            "--steps=32", "--log_freq=32", "--eval.n_episodes=0", f"--output_dir={out}")
    last = rows(out)[-1]
    # 8-step episodes of 2 chunks: a rollout is 16 env steps, one episode per env
    assert last["rollouts"] == 2 and last["episodes"] == 4 and last["policy/optimizer_steps"] >= 1
    assert "value/loss" not in last and "rollout/group_return_std" in last and last["policy/kl_to_reference"] >= 0
    reference = load_file(str(out / "checkpoints/last/algorithm/model.safetensors"))
    # the KL reference is run state: what trains (the action expert and the heads), not the frozen VLM
    assert any(key.startswith("reference.model.vlm_with_expert.lm_expert.") for key in reference)
    assert any(key.startswith("reference.rl_noise_head.") for key in reference)
    assert not any(".vlm_with_expert.vlm." in key for key in reference)


@pytest.mark.slow  # the same run straight, and stopped mid-rollout then resumed (36-54 s beside two training runs)
def test_resume_continues_the_run_exactly(sim_smolvla, tmp_path, monkeypatch):
    """Stopped mid-rollout (the checkpoint holds 1 of the rollout's 4 chunk steps), `--resume=true`
    ends with the weights, optimizer state and metrics of the run that was never stopped."""
    common = ["--policy.type=smolvla_rl", f"--policy.base_policy_path={sim_smolvla}", "--policy.device=cpu", *PPO,
              *SIM, "--log_freq=40", "--save_freq=40", "--eval.n_episodes=0"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    ppo_cli(monkeypatch, *common, "--steps=96", f"--output_dir={straight}")
    ppo_cli(monkeypatch, *common, "--steps=40", f"--output_dir={stopped}")
    saved = stopped / "checkpoints" / "last" / "training_state"
    assert load_file(str(saved / "rollout.safetensors"))["pos"] == 1  # 40 env steps = 5 chunk steps: 1 into rollout 2
    ppo_cli(monkeypatch, "--resume=true", "--steps=96", f"--output_dir={stopped}")

    assert json.loads((stopped / "checkpoints/last/training_state/training_step.json").read_text())["env_steps"] == 96
    for part in ("pretrained_model/model.safetensors", "training_state/policy/optimizer_state.safetensors"):
        a, b = (load_file(str(run / "checkpoints/last" / part)) for run in (straight, stopped))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=f"{part}: {key}")
    drop = ("wall_minutes", "env_steps_per_s")
    for r, s in zip(rows(straight), rows(stopped), strict=True):
        assert {k: v for k, v in r.items() if k not in drop and not k.startswith("time_share")} == \
            {k: v for k, v in s.items() if k not in drop and not k.startswith("time_share")}


# --------------------------------------------------------------------------------- refusals


def _refusal_cases():
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    from lerobot_steer.policies.smolvla_rl import SmolVLARLConfig
    from lerobot_steer.rl.dsrl_algorithm import DSRLAlgorithmConfig

    rl = SmolVLARLConfig
    return [
        (dict(policy=SmolVLAConfig()), "--policy.type=smolvla_rl --policy.base_policy_path"),
        (dict(policy=rl(value_head="none")), "needs a value head"),
        (dict(policy=rl(), algorithm=GRPOConfig(group_size=3), n_envs=4), "multiple of --algorithm.group_size=3"),
        (dict(policy=rl(), algorithm=DSRLAlgorithmConfig()), "runs ppo or grpo"),
        (dict(policy=rl(), algorithm=PPOConfig(clip_ratio=1.5)), "--algorithm.clip_ratio=1.5"),
        (dict(policy=rl(), algorithm=GRPOConfig(group_size=1)), "--algorithm.group_size=1"),
    ]


def test_bad_settings_are_refused_naming_the_flag(tmp_path, monkeypatch):
    from lerobot_steer.config_error import ConfigError
    from lerobot_steer.rl.onpolicy.config import OnPolicyRunConfig

    monkeypatch.setattr(sys, "argv", ["lerobot-steer-ppo"])  # no --policy.path
    for fields, message in _refusal_cases():
        cfg = OnPolicyRunConfig(**fields, output_dir=tmp_path / "run")
        with pytest.raises(ConfigError) as error:
            cfg.validate()
        assert message in str(error.value), (message, str(error.value))
