"""The online update shared by `dsrl` and `dyna_vgd` (rl/steering_algorithm.py): one meaning per setting.

* `update()` makes exactly `grad_steps_per_update` gradient steps (one batch, one optimizer step per
  network and one `policy.update()` each); the update-to-data ratio is lerobot-steer-rl's `--utd_ratio`;
* the gradient clip is the policy's `grad_clip_norm`, the value lerobot-train uses offline: online
  DSRL clips each network at it, and None or 0 turns clipping off in both.
"""

from __future__ import annotations

import pytest
import torch
from helpers_bases import batch_maker, diffusion_base, one_thread  # noqa: F401  (pytest fixtures)

from lerobot.rl.algorithms.factory import make_algorithm

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy
from lerobot_steer.policies.dyna_vgd import DynaVGDConfig, DynaVGDPolicy
from lerobot_steer.rl.dsrl_algorithm import DSRLAlgorithmConfig
from lerobot_steer.rl.dyna_vgd_algorithm import DynaVGDAlgorithmConfig
from lerobot_steer.steering import BasePolicyAdapter

SMALL = dict(device="cpu", hidden_dims=[32, 32])
B = 8


@pytest.fixture(scope="module")
def adapter(diffusion_base):
    return BasePolicyAdapter.from_pretrained(diffusion_base)


def _dsrl(adapter, **overrides) -> DSRLPolicy:
    torch.manual_seed(0)
    return DSRLPolicy(DSRLConfig(**{**SMALL, "variant": "sac", **overrides}), base_adapter=adapter)


def _vgd(adapter, **overrides) -> DynaVGDPolicy:
    torch.manual_seed(0)
    return DynaVGDPolicy(DynaVGDConfig(**{**SMALL, **overrides}), base_adapter=adapter)


class CountingReplay:
    """Replay batches of one-chunk episodes (reward -|a|^2) that count how many were drawn."""

    def __init__(self, policy):
        self.policy, self.drawn = policy, 0
        self.obs = {k: v.expand(B, *v.shape[1:]) for k, v in batch_maker(policy.adapter.policy)(1, 3).items()}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        self.drawn += 1
        p = self.policy
        noise = p.adapter.sample_noise(B)
        with torch.no_grad():
            chunk = p.adapter.sample(p._as_history(self.obs), noise)[:, : p.config.n_exec]
        batch = {"state": self.obs, "action": chunk, "reward": -chunk.pow(2).sum((1, 2)), "next_state": self.obs,
                 "done": torch.ones(B), "truncated": torch.zeros(B)}
        if isinstance(p, DSRLPolicy):
            batch["complementary_info"] = {"noise": torch.rand(B, p.noise_dim) * 2 - 1}
        return batch


def _algorithm(kind: str, adapter, n_steps: int = 1, **policy_overrides):
    if kind == "dsrl":
        policy = _dsrl(adapter, **policy_overrides)
        config = DSRLAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=n_steps)
    else:
        policy = _vgd(adapter, **policy_overrides)
        config = DynaVGDAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=n_steps)
    return make_algorithm(config, policy), policy


def _grad_norm(optimizer) -> float:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads))


@pytest.mark.parametrize("kind", ["dsrl", "dyna_vgd"])
@pytest.mark.parametrize("n_steps", [1, 3])
def test_update_makes_exactly_the_gradient_steps_it_is_asked_for(adapter, kind, n_steps):
    algorithm, policy = _algorithm(kind, adapter, n_steps)
    replay = CountingReplay(policy)
    polyak_calls = []
    real_update = policy.update
    policy.update = lambda: (polyak_calls.append(1), real_update())[1]

    stats = algorithm.update(replay)

    assert replay.drawn == n_steps  # one fresh batch per gradient step
    assert len(polyak_calls) == n_steps  # one target update per gradient step
    assert algorithm.optimization_step == n_steps
    expected = {"dsrl": {"actor", "critic", "temperature"}, "dyna_vgd": {"critic"}}[kind]
    assert set(algorithm.get_optimizers()) == expected
    for name, optimizer in algorithm.get_optimizers().items():
        steps = {int(s["step"]) for s in optimizer.state.values()}
        assert steps == {n_steps}, f"{name}: Adam made {steps} steps"
    assert set(stats.grad_norms) == expected and "critic_loss" in stats.losses

    algorithm.update(replay)  # the count is per call, not cumulative
    assert replay.drawn == 2 * n_steps and algorithm.optimization_step == 2 * n_steps


def test_grad_steps_per_update_below_one_is_refused_naming_the_flag_and_utd_ratio(adapter):
    policy = _vgd(adapter)
    with pytest.raises(ValueError, match=r"--algorithm.grad_steps_per_update.*--utd_ratio"):
        make_algorithm(DynaVGDAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=0), policy)


def test_online_dsrl_clips_every_network_at_the_policys_grad_clip_norm(adapter):
    clip = 1e-4  # far below every network's gradient norm on these batches
    algorithm, policy = _algorithm("dsrl", adapter, grad_clip_norm=clip)
    stats = algorithm.update(CountingReplay(policy))
    for name, optimizer in algorithm.get_optimizers().items():
        assert stats.grad_norms[name] > 10 * clip, name  # reported: the norm before clipping
        assert _grad_norm(optimizer) == pytest.approx(clip, rel=1e-3), name  # what Adam stepped with


@pytest.mark.parametrize("off", [None, 0.0])
@pytest.mark.parametrize("kind", ["dsrl", "dyna_vgd"])
def test_grad_clip_norm_none_or_zero_turns_clipping_off_online_and_offline(adapter, kind, off):
    algorithm, policy = _algorithm(kind, adapter, grad_clip_norm=off)
    stats = algorithm.update(CountingReplay(policy))
    for name, optimizer in algorithm.get_optimizers().items():
        assert _grad_norm(optimizer) == pytest.approx(stats.grad_norms[name], rel=1e-5), name  # untouched
        assert stats.grad_norms[name] > 0, name
    # lerobot-train spells "off" as 0 in the optimizer preset it builds from the same field.
    assert policy.config.get_optimizer_preset().grad_clip_norm == 0.0


def test_the_policy_config_holds_the_one_clip_for_offline_and_online():
    assert DSRLConfig().grad_clip_norm == DynaVGDConfig().grad_clip_norm == 100.0
    assert DSRLConfig().get_optimizer_preset().grad_clip_norm == 100.0  # lerobot-train
    assert DSRLConfig(grad_clip_norm=5.0).get_optimizer_preset().grad_clip_norm == 5.0
    assert not hasattr(DSRLAlgorithmConfig(), "grad_clip_norm")  # no second, algorithm-side clip
    assert not hasattr(DynaVGDAlgorithmConfig(), "grad_clip_norm")
    assert not hasattr(DSRLAlgorithmConfig(), "utd_ratio")  # the only utd is lerobot-steer-rl's --utd_ratio
    with pytest.raises(ConfigError, match="--policy.grad_clip_norm"):
        DSRLConfig(grad_clip_norm=-1.0)
