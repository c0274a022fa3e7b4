"""The `dyna_vgd` policy on real LeRobot bases built tiny offline: guidance moves chunks up a known
value, the strength adapts to critic disagreement and TD error, critic TD training (lerobot-train's
forward and the registered RLAlgorithm), checkpoints, and the errors a user meets first."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers_bases import (  # noqa: F401  (one_thread, vla_builds, diffusion_base: pytest fixtures)
    batch_maker,
    diffusion_base,
    diffusion_dataset_meta,
    one_thread,
    tiny_adapter,
    vla_builds,
)
from test_dsrl_policy import _dataset_batch
from torch import nn

from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.rl.algorithms.factory import make_algorithm

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.dyna_vgd import DynaVGDConfig, DynaVGDPolicy, make_dyna_vgd_pre_post_processors
from lerobot_steer.rl.dyna_vgd_algorithm import DynaVGDAlgorithmConfig
from lerobot_steer.steering import BasePolicyAdapter

# The guidance mechanics below are checked on the references' raw gradient in the dynamic mode
# (the defaults before round 13); the normalized step and the per-mode defaults have their own tests.
SMALL = dict(device="cpu", hidden_dims=[32, 32], guidance_mode="dynamic", guidance_normalize=False)
GUIDANCE_KEYS = {"lambda", "lambda_base", "w_local", "w_global", "guidance_weight", "sigma_q", "td_error_ema"}


@pytest.fixture(scope="module", params=["diffusion", "smolvla", "pi0"])
def base(request, vla_builds):
    """(adapter, make_batch) for the DDIM path and the flow-matching path (smolvla, pi0)."""
    return tiny_adapter(request.param, vla_builds)


class QuadraticCritic(nn.Module):
    """Q_j(s, a) = -||a - a*||^2 + offset_j: every head's gradient points to a*; the offsets set
    the ensemble's disagreement sigma_Q = std(offsets) without changing the gradient."""

    def __init__(self, target: torch.Tensor, offsets):
        super().__init__()
        self.register_buffer("target", target.reshape(target.shape[0], -1).clone())  # per sample
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32))

    def forward(self, obs, action):
        distance = (action.reshape(action.shape[0], -1) - self.target).pow(2).sum(1)
        return -distance.unsqueeze(0) + self.offsets.unsqueeze(1)


def _policy(adapter, **overrides) -> DynaVGDPolicy:
    return DynaVGDPolicy(DynaVGDConfig(**{**SMALL, **overrides}), base_adapter=adapter)


def _unguided_and_target(policy, obs, noise):
    """The base's own chunk for `noise`, and a target a* at least 0.5 away from it in every entry."""
    unguided = policy.adapter.sample(policy._as_history(obs), noise)[:, : policy.config.n_exec]
    target = -0.5 * torch.where(unguided >= 0, 1.0, -1.0)
    return unguided, target


# --------------------------------------------------------------------------------- guidance


def test_guided_samples_move_toward_the_critics_optimum_and_unguided_ones_do_not(base):
    adapter, make_batch = base
    policy = _policy(adapter, guidance_mode="fixed", guidance_scale=0.2, guidance_last_k=None)
    obs = make_batch(2, 0)
    noise = adapter.sample_noise(2, generator=torch.Generator().manual_seed(1))
    unguided, target = _unguided_and_target(policy, obs, noise)
    policy.critic = QuadraticCritic(target, torch.zeros(4))
    policy.reset()
    guided = policy.predict_action_chunk(obs, noise=noise)
    distance = lambda a: (a - target).pow(2).sum().sqrt()  # noqa: E731
    assert distance(guided) < 0.7 * distance(unguided)
    # lerobot-eval acts under torch.inference_mode(): the critic's gradient still flows, same chunk.
    policy.reset()
    with torch.inference_mode():
        assert torch.allclose(policy.predict_action_chunk(obs, noise=noise), guided, atol=1e-6)
    # lambda_base = 0: exactly the base's chunk, and the stats say no guidance happened.
    policy.config.guidance_scale = 0.0
    policy.reset()
    assert torch.equal(policy.predict_action_chunk(obs, noise=noise), unguided)
    assert policy.last_guidance_stats["lambda"] == 0.0


def test_last_k_steps_guidance_moves_less_than_guiding_every_step(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    obs = batch_maker(adapter.policy)(2, 0)
    noise = adapter.sample_noise(2, generator=torch.Generator().manual_seed(2))
    moved = {}
    for k in (None, 1):
        policy = _policy(adapter, guidance_mode="fixed", guidance_scale=0.1, guidance_last_k=k)
        unguided, target = _unguided_and_target(policy, obs, noise)
        policy.critic = QuadraticCritic(target, torch.zeros(4))
        moved[k] = (policy.predict_action_chunk(obs, noise=noise) - unguided).abs().sum()
    assert 0 < moved[1] < moved[None]


@pytest.fixture
def quadratic_policy(diffusion_base):
    """A dynamic-mode policy over the tiny diffusion base with a quadratic critic, and its inputs."""
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy = _policy(adapter, guidance_scale=0.05, guidance_last_k=2)
    obs = batch_maker(adapter.policy)(3, 0)
    noise = adapter.sample_noise(3, generator=torch.Generator().manual_seed(3))
    _, target = _unguided_and_target(policy, obs, noise)
    return policy, obs, noise, target


def _stats(policy, obs, noise, target, offsets, td_error_ema=0.0):
    policy.critic = QuadraticCritic(target, offsets)
    policy.td_error_ema.fill_(td_error_ema)
    policy.reset()
    policy.select_action(obs, noise=noise)  # the stats are available after acting
    return policy.last_guidance_stats


def test_dynamic_lambda_equals_lambda_base_when_critics_agree_and_td_error_is_zero(quadratic_policy):
    policy, obs, noise, target = quadratic_policy
    stats = _stats(policy, obs, noise, target, torch.zeros(4))
    assert set(stats) >= GUIDANCE_KEYS
    assert stats["sigma_q"] == pytest.approx(0.0, abs=1e-6)
    assert stats["w_local"] == pytest.approx(1.0) and stats["w_global"] == pytest.approx(1.0)
    assert stats["lambda"] == pytest.approx(0.05) and stats["lambda_base"] == pytest.approx(0.05)


def test_dynamic_lambda_falls_when_the_ensemble_disagrees_or_the_td_error_grows(quadratic_policy):
    policy, obs, noise, target = quadratic_policy
    offsets = torch.tensor([0.0, 1.0, 2.0, 3.0])
    sigma = float(offsets.std())
    disagree = _stats(policy, obs, noise, target, offsets)
    assert disagree["sigma_q"] == pytest.approx(sigma, rel=1e-4)
    assert disagree["w_local"] == pytest.approx(torch.exp(torch.tensor(-sigma / 5.0)).item(), rel=1e-4)
    assert disagree["lambda"] == pytest.approx(0.05 * disagree["w_local"], rel=1e-4) and disagree["lambda"] < 0.05
    unstable = _stats(policy, obs, noise, target, torch.zeros(4), td_error_ema=50.0)
    assert unstable["td_error_ema"] == pytest.approx(50.0)
    assert unstable["w_global"] == pytest.approx(torch.exp(torch.tensor(-0.5)).item(), rel=1e-4)
    assert unstable["lambda"] == pytest.approx(0.05 * unstable["w_global"], rel=1e-4)
    # Both together multiply; a hopeless critic is clamped at weight 0.001, not 0.
    both = _stats(policy, obs, noise, target, offsets, td_error_ema=50.0)
    assert both["lambda"] == pytest.approx(0.05 * disagree["w_local"] * unstable["w_global"], rel=1e-4)
    hopeless = _stats(policy, obs, noise, target, offsets * 1000, td_error_ema=1e4)
    assert hopeless["guidance_weight"] == pytest.approx(0.001) and hopeless["lambda"] == pytest.approx(0.05 * 0.001)


def test_fixed_mode_is_vgd_weight_one_whatever_the_critic_and_lambda_ramps_up_over_gradient_steps(quadratic_policy):
    policy, obs, noise, target = quadratic_policy
    policy.config.guidance_mode = "fixed"
    stats = _stats(policy, obs, noise, target, torch.tensor([0.0, 10.0, 20.0, 30.0]), td_error_ema=500.0)
    assert stats["guidance_weight"] == 1.0 and stats["lambda"] == pytest.approx(0.05)
    # Warm-up over critic gradient steps: nothing at step 0 (the base's own chunk), half at the midpoint.
    policy.config.guidance_warmup_steps = 10
    unguided = policy.adapter.sample(policy._as_history(obs), noise)[:, : policy.config.n_exec]
    policy.reset()
    assert torch.equal(policy.predict_action_chunk(obs, noise=noise), unguided)
    policy.n_updates.fill_(5)
    stats = _stats(policy, obs, noise, target, torch.zeros(4))
    assert stats["lambda_base"] == pytest.approx(0.025) and stats["lambda"] == pytest.approx(0.025)
    policy.n_updates.fill_(50)
    assert _stats(policy, obs, noise, target, torch.zeros(4))["lambda"] == pytest.approx(0.05)


def test_linear_anneal_weights_later_denoising_steps_more(quadratic_policy):
    policy, obs, noise, target = quadratic_policy
    policy.config.guidance_mode, policy.config.guidance_anneal, policy.config.guidance_last_k = "fixed", "linear", None
    n = policy.adapter.num_inference_steps
    stats = _stats(policy, obs, noise, target, torch.zeros(4))
    assert stats["lambda"] == pytest.approx(0.05 * sum((i + 1) / n for i in range(n)) / n)


class ScaledCritic(nn.Module):
    """`scale` times another critic: the same ranking of chunks in other units of Q."""

    def __init__(self, critic: nn.Module, scale: float):
        super().__init__()
        self.critic, self.scale = critic, scale

    def forward(self, obs, action):
        return self.scale * self.critic(obs, action)


def test_normalized_gradient_guidance_moves_chunks_as_far_whatever_the_q_scale(quadratic_policy):
    """guidance_normalize: lambda is a step in action units, so Q in other units (another reward
    scale, discount or critic width) moves the chunk exactly as far; the raw gradient moves it ~100x."""
    policy, obs, noise, target = quadratic_policy
    policy.config.guidance_mode = "fixed"

    def shift(scale: float, normalize: bool) -> float:
        policy.config.guidance_normalize = normalize
        _stats(policy, obs, noise, target, torch.zeros(4))
        policy.critic = ScaledCritic(policy.critic, scale)
        policy.reset()
        policy.select_action(obs, noise=noise)
        return policy.last_guidance_stats["guidance_action_shift"]

    assert shift(100.0, True) == pytest.approx(shift(1.0, True), rel=1e-4)
    assert shift(100.0, False) > 50 * shift(1.0, False)  # (not exactly 100x: the second guided step starts elsewhere)
    # the RMS of a normalized step is lambda: its mean |shift| is at most that
    assert 0.2 * 0.05 < shift(1.0, True) <= 0.05 + 1e-6


# --------------------------------------------------------------------------------- training


def test_forward_trains_only_the_critic_and_logs_every_guidance_component(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy = _policy(adapter, guidance_scale=0.05)
    obs = batch_maker(adapter.policy)(3, 2)
    action = policy.predict_action_chunk(obs)
    batch = _dataset_batch(policy, obs, action, torch.ones(3), ended=torch.tensor([True, False, False]))
    loss, metrics = policy.forward(batch)
    assert {"critic_loss", "q_mean", "td_error", "td_target_mean", *GUIDANCE_KEYS} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    assert all(p.grad is None for p in adapter.parameters())
    assert all(p.grad is None for p in policy.critic_target.parameters())
    assert all(p.grad is not None for p in policy.critic.parameters())
    optimized = {id(p) for g in policy.get_optim_params() for p in g["params"]}
    assert optimized == {id(p) for p in policy.critic.parameters()}
    # update(): the TD error average starts at the first step's value, then moves as an EMA.
    policy.update()
    assert int(policy.n_updates) == 1 and float(policy.td_error_ema) == pytest.approx(metrics["td_error"], rel=1e-5)
    _, second = policy.forward(batch)
    policy.update()
    expected = 0.95 * metrics["td_error"] + 0.05 * second["td_error"]
    assert int(policy.n_updates) == 2 and float(policy.td_error_ema) == pytest.approx(expected, rel=1e-5)


def test_td_target_clamp_bounds_the_backup(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy = _policy(adapter, td_target_clamp=2.0)
    obs = batch_maker(adapter.policy)(2, 4)
    batch = _dataset_batch(policy, obs, policy.predict_action_chunk(obs), torch.full((2,), 100.0))
    _, metrics = policy.forward(batch)
    assert metrics["td_target_mean"] == pytest.approx(2.0)


def test_the_registered_rl_algorithm_runs_the_same_loss_and_the_critic_learns(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    torch.manual_seed(0)
    policy = _policy(adapter, critic_lr=3e-3, guidance_scale=0.01, hidden_dims=[64, 64])
    algorithm = make_algorithm(DynaVGDAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=4), policy)
    assert type(algorithm).__name__ == "DynaVGDAlgorithm"  # LeRobot's factory builds our type
    b = 16
    obs = {k: v.expand(b, *v.shape[1:]) for k, v in batch_maker(adapter.policy)(1, 3).items()}

    def replay():  # one-chunk episodes, reward -|a|^2: the critic only has to fit R(s, a)
        while True:
            chunk = policy.adapter.sample(policy._as_history(obs), policy.adapter.sample_noise(b))[:, : policy.config.n_exec]
            yield {"state": obs, "action": chunk, "reward": -chunk.pow(2).sum((1, 2)), "next_state": obs,
                   "done": torch.ones(b), "truncated": torch.zeros(b)}

    iterator = replay()
    stats = [algorithm.update(iterator) for _ in range(20)]
    assert algorithm.optimization_step == 80 and int(policy.n_updates) == 80
    assert sum(s.losses["critic_loss"] for s in stats[-4:]) < 0.5 * sum(s.losses["critic_loss"] for s in stats[:4])
    assert set(stats[-1].extra) >= GUIDANCE_KEYS and float(policy.td_error_ema) > 0
    # Actors get the critic and the guidance state; the target critics are algorithm state.
    weights = algorithm.get_weights()
    assert set(weights) == {"critic", "guidance"}
    state = {k: v.clone() for k, v in algorithm.state_dict().items()}
    target = next(iter(policy.critic_target.parameters()))
    algorithm.load_state_dict({k: torch.zeros_like(v) for k, v in state.items()})
    assert next(iter(policy.critic_target.parameters())) is target and float(target.abs().sum()) == 0.0
    algorithm.load_state_dict(state)


def test_value_bootstrap_needs_no_base_decode_and_its_value_learns_q_of_the_replayed_chunks(diffusion_base, monkeypatch):
    """td_bootstrap="value" (lerobot-steer-rl's default): y = R + gamma^k min_j Vbar_j(s'), with V
    regressing Q(s, a) on the replayed chunks; an update never decodes the base. Offline (a
    dataset, or a checkpoint saved before the field) keeps the reference's decode at s'."""
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    assert _policy(adapter).config.td_bootstrap == "decode" and _policy(adapter).value is None
    torch.manual_seed(0)
    policy = _policy(adapter, td_bootstrap="value", critic_lr=3e-3, hidden_dims=[64, 64])
    algorithm = make_algorithm(DynaVGDAlgorithmConfig(policy_config=policy.config, grad_steps_per_update=4), policy)
    b = 16
    obs = {k: v.expand(b, *v.shape[1:]) for k, v in batch_maker(adapter.policy)(1, 3).items()}
    chunk = adapter.sample(policy._as_history(obs), adapter.sample_noise(b))[:, : policy.config.n_exec]
    batch = {"state": obs, "action": chunk, "reward": -chunk.pow(2).sum((1, 2)), "next_state": obs,
             "done": torch.zeros(b), "truncated": torch.zeros(b)}

    def no_decode(*args, **kwargs):
        raise AssertionError("an update with td_bootstrap=value decoded the base")

    monkeypatch.setattr(adapter, "sample", no_decode)
    monkeypatch.setattr(adapter, "guided_sample", no_decode)
    t = policy.transitions_from_replay(batch)
    _, metrics = policy.compute_loss(t)
    with torch.no_grad():
        empty = chunk.new_zeros(b, 0)
        v_next = policy.value_target(t.next_obs, empty).min(0).values
        expected = policy.learning_reward(t) + policy.config.discount ** policy.discount_exponent(t) * v_next
    assert float(metrics["td_target_mean"]) == pytest.approx(float(expected.mean()), rel=1e-5)

    def replay():
        while True:
            yield batch

    iterator = replay()
    stats = [algorithm.update(iterator) for _ in range(40)]
    assert set(algorithm.optimizers) == {"critic", "value"}
    assert stats[-1].losses["value_loss"] < 0.2 * stats[0].losses["value_loss"]
    with torch.no_grad():  # V(s) follows Q(s, a) of the chunks the buffer holds
        q = policy.critic(obs, chunk)
        v = policy.value(obs, empty)
    assert float((v - q).abs().mean()) < 0.1 * float(q.abs().mean())
    # Actors need the critic only; V and its target are algorithm state, restored on resume.
    assert set(algorithm.get_weights()) == {"critic", "guidance"}
    assert {k.split(".")[0] for k in algorithm.state_dict()} == {"critic_target", "value", "value_target"}


# ------------------------------------------------------------------------------ checkpoints

LOAD_AND_ACT = """
import sys, torch
torch.set_num_threads(1)  # the same reduction order as the saving process
import lerobot_steer
from lerobot_steer.policies.dyna_vgd import DynaVGDPolicy
path, inputs, out = sys.argv[1:]
batch = torch.load(inputs)
policy = DynaVGDPolicy.from_pretrained(path)
torch.manual_seed(0)
chunk = policy.predict_action_chunk(batch["obs"])
torch.save({"chunk": chunk, "stats": policy.last_guidance_stats}, out)
"""


@pytest.mark.slow  # loads the checkpoint in a fresh Python process
def test_save_then_load_in_a_fresh_process_gives_identical_actions_for_a_fixed_seed(diffusion_base, tmp_path):
    torch.manual_seed(1)
    policy = DynaVGDPolicy(DynaVGDConfig(base_policy_path=str(diffusion_base), guidance_scale=0.5, **SMALL))
    with torch.no_grad():  # a trained-looking state: it must all come back
        policy.td_error_ema.fill_(20.0)
        policy.n_updates.fill_(7)
        for p in policy.critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs = batch_maker(policy.adapter.policy)(2, 5)
    policy.reset()
    torch.manual_seed(0)
    expected = policy.predict_action_chunk(obs)
    assert policy.last_guidance_stats["lambda"] > 0
    policy.save_pretrained(tmp_path / "ckpt")
    torch.save({"obs": obs}, tmp_path / "in.pt")
    result = subprocess.run([sys.executable, "-c", LOAD_AND_ACT, str(tmp_path / "ckpt"), str(tmp_path / "in.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert torch.equal(got["chunk"], expected)
    assert got["stats"] == policy.last_guidance_stats


def test_processors_are_the_bases_and_the_card_names_method_and_base(diffusion_base, tmp_path, monkeypatch):
    config = DynaVGDConfig(base_policy_path=str(diffusion_base), **SMALL)
    pre, post = make_dyna_vgd_pre_post_processors(config, dataset_stats={"action": {"min": torch.zeros(2)}})
    assert any(type(s).__name__ == "NormalizerProcessorStep" for s in pre.steps)
    assert any(type(s).__name__ == "UnnormalizerProcessorStep" for s in post.steps)
    policy = DynaVGDPolicy(config)
    policy.save_pretrained(tmp_path)
    assert (tmp_path / "base_policy" / "model.safetensors").is_file()
    from huggingface_hub import ModelCard

    monkeypatch.setattr(ModelCard, "validate", lambda self, *a, **k: None)  # asks the Hub; offline here
    card = policy.generate_model_card("local/so101", "dyna_vgd", None, None)
    assert "Dynamic VGD" in card.text and str(diffusion_base) in card.text and "base_policy/" in card.text


# ------------------------------------------------------------------------------ bad input


def test_dataset_without_reward_fails_naming_reward_from_success(diffusion_base):
    meta = diffusion_dataset_meta()
    with pytest.raises(ValueError, match="reward_from_success"):
        DynaVGDPolicy(DynaVGDConfig(base_policy_path=str(diffusion_base), **SMALL), dataset_meta=meta)


def test_guidance_mode_typo_is_refused_naming_the_flag():
    with pytest.raises(ConfigError, match="guidance_mode"):
        DynaVGDConfig(guidance_mode="adaptive")


# ------------------------------------------------------------------- behaviour-cloned base (bc)

BC_DIFFUSION = dict(device="cpu", n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3,
                    n_groups=4, diffusion_step_embed_dim=8, pretrained_backbone_weights=None)
BC_FEATURES = diffusion_dataset_meta().features


def _bc_policy(reward: bool = True, **overrides) -> DynaVGDPolicy:
    """A bc-mode policy built as lerobot-train builds it: features from dataset metadata, a fresh
    LeRobot DiffusionPolicy inside, trained and guided through the same adapter."""
    from lerobot.utils.feature_utils import dataset_to_policy_features

    meta = diffusion_dataset_meta()
    if reward:
        meta.features["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    config = DynaVGDConfig(base_mode="bc", diffusion=DiffusionConfig(**BC_DIFFUSION), num_inference_steps=3,
                           **{**SMALL, **overrides})
    features = dataset_to_policy_features(meta.features)
    config.output_features = {k: f for k, f in features.items() if k == "action"}
    config.input_features = {k: f for k, f in features.items() if k != "action"}
    torch.manual_seed(0)
    return DynaVGDPolicy(config, dataset_meta=meta)


def _bc_batch(policy: DynaVGDPolicy, b: int = 3) -> dict:
    """A lerobot-train batch for bc mode's delta indices (obs history + chunk end, the diffusion horizon)."""
    c = policy.config
    g = torch.Generator().manual_seed(4)
    n_obs, n_act = len(c.observation_delta_indices), len(c.action_delta_indices)
    batch = {}
    for key, dim in (("observation.state", 4), ("observation.environment_state", 3)):
        batch[key] = torch.randn(b, n_obs, dim, generator=g)
        batch[f"{key}_is_pad"] = torch.zeros(b, n_obs, dtype=torch.bool)
    batch["action"] = torch.rand(b, n_act, 2, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(b, n_act, dtype=torch.bool)
    batch["next.reward"] = torch.rand(b, c.n_exec, generator=g)
    batch["next.reward_is_pad"] = torch.zeros(b, c.n_exec, dtype=torch.bool)
    return batch


def test_bc_mode_delta_indices_serve_the_diffusion_loss_and_the_chunk_mdp():
    policy = _bc_policy()
    c = policy.config
    # diffusion: history [-1, 0] and the horizon from -1; critic: executed chunk [0, 4), chunk end [3, 4]
    assert c.observation_delta_indices == [-1, 0, 3, 4]
    assert c.action_delta_indices == list(range(-1, 7)) == c.diffusion.action_delta_indices
    assert c.reward_delta_indices == [0, 1, 2, 3] and c.executed_action_start == 1
    batch = _bc_batch(policy)
    t = policy.transitions_from_dataset(batch)
    assert torch.equal(t.action, batch["action"][:, 1:5])  # the executed chunk starts at offset 0
    assert torch.equal(t.obs["observation.state"], batch["observation.state"][:, :2])
    assert torch.equal(t.next_obs["observation.state"], batch["observation.state"][:, 2:])
    bc = policy.bc_batch(batch)
    assert torch.equal(bc["observation.state"], batch["observation.state"][:, :2]) and bc["action"].shape[1] == 8


def test_bc_mode_trains_the_diffusion_base_with_lerobots_loss_and_the_critics_by_td():
    policy = _bc_policy()
    policy.train()
    batch = _bc_batch(policy)
    torch.manual_seed(5)
    loss, metrics = policy.forward(batch)
    assert {"bc_loss", "critic_loss", "td_error", *GUIDANCE_KEYS} <= set(metrics)
    # The BC term is LeRobot's DiffusionPolicy.forward on the same batch and noise draw (train mode).
    torch.manual_seed(5)
    expected, _ = policy.adapter.policy.forward(policy.bc_batch(batch))
    assert metrics["bc_loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert policy.adapter.policy.training  # the TD target's decode ran in eval mode and restored it
    loss.backward()
    base_params = list(policy.adapter.policy.diffusion.parameters())
    assert all(p.requires_grad and p.grad is not None for p in base_params)
    assert all(p.grad is not None for p in policy.critic.parameters())
    assert all(p.grad is None for p in policy.critic_target.parameters())
    groups = policy.get_optim_params()
    assert [len(g["params"]) for g in groups] == [len(base_params), len(list(policy.critic.parameters()))]
    assert groups[1]["lr"] == policy.config.critic_lr and "lr" not in groups[0]  # base: the preset's lr
    preset = policy.config.get_optimizer_preset()
    assert preset.lr == policy.config.diffusion.optimizer_lr
    assert preset.weight_decay == policy.config.diffusion.optimizer_weight_decay
    # An optimizer step moves the base (and the critics); update() counts a critic step.
    optimizer = preset.build(groups)
    before = base_params[0].detach().clone()
    optimizer.step()
    policy.update()
    assert not torch.equal(before, base_params[0]) and int(policy.n_updates) == 1


def test_bc_mode_decodes_deterministically_and_guides_like_frozen_mode():
    policy = _bc_policy(guidance_mode="fixed", guidance_scale=0.2, guidance_last_k=None)
    policy.train()  # as inside lerobot-train: acting must still decode in eval mode, DDIM
    obs = batch_maker(policy.adapter.policy)(2, 0)
    noise = policy.adapter.sample_noise(2, generator=torch.Generator().manual_seed(1))
    unguided, target = _unguided_and_target(policy, obs, noise)
    assert torch.equal(policy.adapter.sample(policy._as_history(obs), noise)[:, : policy.config.n_exec], unguided)
    assert policy.adapter.policy.training
    policy.critic = QuadraticCritic(target, torch.zeros(4))
    policy.reset()
    guided = policy.predict_action_chunk(obs, noise=noise)
    assert (guided - target).norm() < 0.7 * (unguided - target).norm()


def test_a_frozen_adapter_stays_frozen_and_in_eval_mode(diffusion_base):
    adapter = BasePolicyAdapter.from_pretrained(diffusion_base)
    policy = _policy(adapter)
    policy.train()
    assert not adapter.policy.training and not any(p.requires_grad for p in adapter.parameters())


def test_bc_mode_without_rewards_trains_the_base_only_says_so_once_and_acts_unguided(caplog):
    with caplog.at_level("WARNING"):
        policy = _bc_policy(reward=False)
    messages = [r.getMessage() for r in caplog.records if "dyna_vgd" in r.getMessage()]
    assert len(messages) == 1 and "no reward column" in messages[0] and "reward_from_success" in messages[0]
    assert policy.config.train_critic is False
    batch = _bc_batch(policy)
    del batch["next.reward"], batch["next.reward_is_pad"]
    loss, metrics = policy.forward(batch)
    assert set(metrics) == {"bc_loss"} and loss.item() == pytest.approx(metrics["bc_loss"])
    policy.update()
    assert int(policy.n_updates) == 0
    obs = batch_maker(policy.adapter.policy)(2, 0)
    noise = policy.adapter.sample_noise(2, generator=torch.Generator().manual_seed(1))
    policy.reset()
    chunk = policy.predict_action_chunk(obs, noise=noise)
    assert torch.equal(chunk, policy.adapter.sample(policy._as_history(obs), noise)[:, : policy.config.n_exec])
    assert policy.last_guidance_stats["lambda"] == 0.0
    with pytest.raises(ValueError, match="reward_from_success"):  # asking for critics without rewards
        _bc_policy(reward=False, train_critic=True)


def test_bc_mode_processors_normalize_with_the_dataset_stats_and_diffusions_mapping():
    policy = _bc_policy()
    stats = {"observation.state": {"min": torch.zeros(4), "max": torch.full((4,), 2.0)},
             "action": {"min": -torch.ones(2) * 4, "max": torch.ones(2) * 4}}
    pre, post = make_dyna_vgd_pre_post_processors(policy.config, dataset_stats=stats)
    out = pre({"observation.state": torch.ones(4), "observation.environment_state": torch.zeros(3)})
    assert torch.allclose(out["observation.state"], torch.zeros(1, 4))  # MIN_MAX: 1 in [0, 2] -> 0
    assert torch.allclose(post(torch.ones(1, 2)), torch.full((1, 2), 4.0))


def test_bc_checkpoint_holds_the_base_in_model_safetensors_and_reloads_identically(tmp_path, monkeypatch):
    policy = _bc_policy(guidance_scale=0.5)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
        policy.n_updates.fill_(3)
    policy.save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "base_policy").exists()
    loaded = DynaVGDPolicy.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.base_mode == "bc" and loaded.config.diffusion.horizon == 8
    for (name, a), b in zip(policy.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    obs = batch_maker(policy.adapter.policy)(2, 1)
    chunks = []
    for p in (policy, loaded):
        p.eval()
        p.reset()
        torch.manual_seed(0)
        chunks.append(p.predict_action_chunk(obs))
    assert torch.equal(*chunks)
    from huggingface_hub import ModelCard

    monkeypatch.setattr(ModelCard, "validate", lambda self, *a, **k: None)  # asks the Hub; offline here
    card = policy.generate_model_card("local/so101", "dyna_vgd", None, None)
    assert "behaviour cloning" in card.text and "model.safetensors" in card.text


def test_bc_mode_refuses_a_base_checkpoint_naming_both_flags(diffusion_base):
    config = DynaVGDConfig(base_policy_path=str(diffusion_base), base_mode="bc", **SMALL)
    with pytest.raises(ConfigError, match="base_policy_path.*base_mode=frozen"):
        config.observation_delta_indices  # noqa: B018  (what lerobot-train asks first)


def test_each_guidance_mode_defaults_to_its_measured_best_step_and_explicit_values_win():
    """fixed: normalized step 0.01 (rounds 12-13); dynamic: the references' raw gradient, 0.005
    (round 11). A value the user sets, or a checkpoint saved, is kept as it is."""
    fixed, dynamic = DynaVGDConfig(), DynaVGDConfig(guidance_mode="dynamic")
    assert (fixed.guidance_mode, fixed.guidance_normalize, fixed.guidance_scale) == ("fixed", True, 0.01)
    assert (dynamic.guidance_normalize, dynamic.guidance_scale) == (False, 0.005)
    raw = DynaVGDConfig(guidance_normalize=False)
    assert raw.guidance_scale == 0.005
    assert DynaVGDConfig(guidance_mode="dynamic", guidance_normalize=True).guidance_scale == 0.01
    assert DynaVGDConfig(guidance_scale=0.03).guidance_scale == 0.03
    with pytest.raises(ConfigError, match="guidance_scale"):
        DynaVGDConfig(guidance_scale=-0.01)
