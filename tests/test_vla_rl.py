"""`pi0_rl`, `pi05_rl`, `smolvla_rl`: LeRobot's VLAs with a stochastic, likelihood-tractable denoising chain.

What a user (and the PPO / GRPO trainers to come) relies on, checked on LeRobot's real policy
classes built tiny offline: the deterministic mode is the base itself; the log-likelihood returned
while sampling is the one a stored chain re-evaluates to and the Gaussian density written out here;
Flow-SDE with a vanishing noise level is the ODE; gradients reach what trains and nothing else;
save -> load -> export gives a stock checkpoint with the same actions; bad settings fail naming the
flag and the fix.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers_bases import (  # noqa: F401  (one_thread, vla_builds: pytest fixtures)
    batch_maker,
    one_thread,
    save_base,
    tiny_vla,
    vla_builds,
)

from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors
from lerobot.policies.rtc.configuration_rtc import RTCConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.vla_rl import export_to_base
from lerobot_steer.policies.pi0_rl import PI0RLConfig, PI0RLPolicy, PI05RLPolicy
from lerobot_steer.policies.smolvla_rl import SmolVLARLPolicy
from lerobot_steer.steering import CheckpointError

KINDS = ["pi0", "pi05", "smolvla"]
RL_CLASSES = {"pi0": PI0RLPolicy, "pi05": PI05RLPolicy, "smolvla": SmolVLARLPolicy}
CHUNK, N_EXEC, ACTION_DIM, MAX_DIM, STEPS = 8, 4, 6, 32, 3  # tiny_vla's shapes


@pytest.fixture(scope="module")
def bases(vla_builds, tmp_path_factory) -> dict:
    """kind -> (checkpoint folder, stock policy loaded from it), each seeded 0."""
    out = {}
    for kind in KINDS:
        torch.manual_seed(0)
        policy, pre, post = tiny_vla(kind, vla_builds)
        folder = save_base(policy, pre, post, tmp_path_factory.mktemp(f"{kind}_base"))
        out[kind] = (folder, get_policy_class(kind).from_pretrained(folder))
    return out


def _rl(bases, kind: str, **fields):
    torch.manual_seed(1)
    return RL_CLASSES[kind].from_base(bases[kind][0], device="cpu", **fields)


def _noise(batch_size: int = 2, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch_size, CHUNK, MAX_DIM, generator=torch.Generator().manual_seed(seed))


class _VelocityRecorder:
    """The test's own stand-in for LeRobot's RTC processor: the base's velocity at each stored x_k."""

    def __init__(self, chain: torch.Tensor):
        self.chain, self.velocities = chain, []

    def is_debug_enabled(self):
        return False

    def denoise_step(self, x_t, time, original_denoise_step_partial, **_):
        v = original_denoise_step_partial(self.chain[:, len(self.velocities)])
        self.velocities.append(v)
        return v


def _base_velocities(base, batch, chain) -> list[torch.Tensor]:
    """v(x_k, t_k) of the stock base at the chain's states, through LeRobot's own predict_action_chunk."""
    recorder = _VelocityRecorder(chain)
    saved = base.model.rtc_processor, base.config.rtc_config
    base.model.rtc_processor, base.config.rtc_config = recorder, RTCConfig(enabled=True)
    try:
        type(base).predict_action_chunk(base, batch, noise=chain[:, 0])
    finally:
        base.model.rtc_processor, base.config.rtc_config = saved
    return recorder.velocities


def _direct_log_prob(chain, velocities, stds_of_step, mask, sde_level=None) -> torch.Tensor:
    """sum_k sum_(masked d) log N(x_{k+1}; mu_k, s_k^2), with mu_k, s_k written out from the papers."""
    total = torch.zeros(chain.shape[0], dtype=torch.float64)
    delta = 1.0 / STEPS
    for k, v in enumerate(velocities):
        t = 1.0 - k * delta
        x, x_next = chain[:, k].double(), chain[:, k + 1].double()
        v = v.double()
        if sde_level is None:  # Flow-Noise (ReinFlow): the Euler step, the head's std
            mean, std = x - delta * v, stds_of_step(k).double()
        else:  # Flow-SDE (Flow-GRPO): sigma_t = a sqrt(t / (1 - t)), 1 - t floored at one step
            sigma = sde_level * math.sqrt(t / max(1.0 - t, delta))
            mean = x - delta * (v + sigma**2 / (2 * t) * (x + (1 - t) * v))
            std = torch.full_like(x, sigma * math.sqrt(delta))
        log_p = torch.distributions.Normal(mean[:, mask], std[:, mask]).log_prob(x_next[:, mask])
        total += log_p.sum(dim=1)
    return total


def _mask() -> torch.Tensor:
    mask = torch.zeros(CHUNK, MAX_DIM, dtype=torch.bool)
    mask[:N_EXEC, :ACTION_DIM] = True  # noise_on="executed", real action dims only
    return mask


# ------------------------------------------------------------------------- deterministic = the base


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_mode_gives_the_base_actions_for_the_same_noise(bases, kind):
    rl, base = _rl(bases, kind), bases[kind][1]
    batch, noise = batch_maker(rl)(2, 0), _noise()
    expected = base.predict_action_chunk(batch, noise=noise)
    rl.eval()
    assert torch.equal(rl.predict_action_chunk(batch, noise=noise), expected)
    assert torch.equal(rl.sample_actions_with_log_prob(batch, noise, deterministic=True).actions, expected)
    actions = []
    for policy in (base, rl):  # select_action draws its noise itself: same seed, same draw
        policy.reset()
        torch.manual_seed(3)
        actions.append(policy.select_action(batch))
    assert torch.equal(actions[0], actions[1])


@pytest.mark.parametrize("kind", ["pi0", "smolvla"])
def test_noise_head_at_its_minimum_keeps_the_base_actions(bases, kind):
    """Flow-Noise with the std pinned at a negligible value: the chain is the base's ODE decode."""
    rl, base = _rl(bases, kind, min_noise_std=1e-7, max_noise_std=1e-7), bases[kind][1]
    batch, noise = batch_maker(rl)(2, 1), _noise()
    out = rl.sample_actions_with_log_prob(batch, noise)
    torch.testing.assert_close(out.actions, base.predict_action_chunk(batch, noise=noise), atol=1e-5, rtol=0)
    assert torch.allclose(out.stds[:, :, _mask()], torch.tensor(1e-7))
    assert (out.stds[:, :, ~_mask()] == 0).all(), "noise outside the executed steps / real action dims"


@pytest.mark.parametrize("kind", ["pi0", "smolvla"])
def test_eval_mode_samples_when_deterministic_eval_is_off_and_training_mode_always_samples(bases, kind):
    batch, noise = batch_maker(bases[kind][1])(2, 2), _noise()
    expected = bases[kind][1].predict_action_chunk(batch, noise=noise)
    rl = _rl(bases, kind)
    rl.train()
    assert not torch.allclose(rl.predict_action_chunk(batch, noise=noise), expected)
    assert rl.training, "acting must leave the caller's train/eval mode as it was"
    rl.reset()
    rl.select_action(batch)
    assert rl.training
    rl.eval()
    rl.config.deterministic_eval = False
    assert not torch.allclose(rl.predict_action_chunk(batch, noise=noise), expected)


# ---------------------------------------------------------------------- the chain's log-likelihood


@pytest.mark.parametrize(("kind", "chain_type"), [
    ("pi0", "flow_noise"), ("pi0", "flow_sde"), ("pi05", "flow_sde"), ("smolvla", "flow_noise"), ("smolvla", "flow_sde"),
])
def test_sampled_log_prob_is_the_reevaluated_one_and_the_gaussian_density_written_out(bases, kind, chain_type):
    rl, base = _rl(bases, kind, stochastic_chain=chain_type), bases[kind][1]
    batch = batch_maker(rl)(3, 3)
    out = rl.sample_actions_with_log_prob(batch, _noise(3), generator=torch.Generator().manual_seed(0))
    assert out.chain.shape == (3, STEPS + 1, CHUNK, MAX_DIM) and out.log_prob.shape == (3,)
    assert torch.equal(out.chain[:, 0], _noise(3)) and torch.equal(out.actions, out.chain[:, -1, :, :ACTION_DIM])

    again = rl.log_prob_of_chain(batch, out.chain)
    torch.testing.assert_close(again, out.log_prob, atol=1e-4, rtol=1e-5)

    velocities = _base_velocities(base, batch, out.chain)
    if chain_type == "flow_noise":
        stds = out.stds[:, :, _mask()]
        assert ((stds >= 0.08 - 1e-6) & (stds <= 0.16 + 1e-6)).all(), "std outside [min_noise_std, max_noise_std]"
        direct = _direct_log_prob(out.chain, velocities, lambda k: out.stds[:, k], _mask())
    else:
        direct = _direct_log_prob(out.chain, velocities, None, _mask(), sde_level=rl.config.sde_noise_level)
    torch.testing.assert_close(out.log_prob.double(), direct, atol=1e-3, rtol=1e-5)


def test_flow_sde_with_a_vanishing_noise_level_is_the_ode(bases):
    batch, noise = batch_maker(bases["pi0"][1])(2, 4), _noise()
    ode = _rl(bases, "pi0", stochastic_chain="flow_sde").sample_actions_with_log_prob(batch, noise, deterministic=True)
    tiny = _rl(bases, "pi0", stochastic_chain="flow_sde", sde_noise_level=1e-8).sample_actions_with_log_prob(batch, noise)
    torch.testing.assert_close(tiny.chain, ode.chain, atol=1e-6, rtol=0)
    noisy = _rl(bases, "pi0", stochastic_chain="flow_sde").sample_actions_with_log_prob(batch, noise)
    assert (noisy.chain - ode.chain).abs().max() > 1e-2, "a = 0.5 should move the chain off the ODE"


@pytest.mark.parametrize(("kind", "trainable", "vlm_trains"), [
    ("pi0", "expert", False), ("pi0", "all", True), ("smolvla", "expert", False),
])
def test_reevaluated_log_prob_and_value_differentiate_into_what_trains(bases, kind, trainable, vlm_trains):
    rl = _rl(bases, kind, trainable=trainable)
    rl.train()
    batch = batch_maker(rl)(2, 5)
    out = rl.sample_actions_with_log_prob(batch, _noise())
    assert out.log_prob.grad_fn is None, "sampling (rollouts) builds no graph"
    evaluation = rl.evaluate_chain(batch, out.chain)
    (evaluation.log_prob.sum() + evaluation.value.sum()).backward()
    expert = rl.model.action_in_proj.weight
    assert expert.grad is not None and expert.grad.abs().sum() > 0, "no gradient into the action expert"
    for head in (rl.rl_noise_head, rl.rl_value_head):
        assert all(p.grad is not None for p in head.parameters())
    vlm = [p for n, p in rl.model.named_parameters() if "with_expert.paligemma." in n or "with_expert.vlm." in n]
    vlm_grads = [p for p in vlm if p.grad is not None and p.grad.abs().sum() > 0]
    vlm_trainable = [p for p in vlm if p.requires_grad]
    if vlm_trains:
        assert vlm_grads, "trainable=all: the VLM must receive gradients through the prefix pass"
    else:
        assert not vlm_trainable and not vlm_grads, "trainable=expert: the VLM must stay frozen"


def test_value_head_variants(bases):
    batch = batch_maker(bases["pi05"][1])(2, 6)
    separate = _rl(bases, "pi05", value_head="separate", stochastic_chain="flow_sde")
    out = separate.sample_actions_with_log_prob(batch, _noise())
    torch.testing.assert_close(out.value, separate.predict_value(batch))
    prefix = _rl(bases, "pi05", value_head="prefix")
    torch.testing.assert_close(prefix.predict_value(batch), prefix.sample_actions_with_log_prob(batch, _noise()).value)
    none = _rl(bases, "pi05", value_head="none")
    assert none.rl_value_head is None and none.sample_actions_with_log_prob(batch, _noise()).value is None


# --------------------------------------------------------------------------------- checkpoints


def test_fields_left_at_default_come_from_the_base_and_set_ones_win(bases):
    rl = _rl(bases, "pi0", n_action_steps=2)
    base = bases["pi0"][1].config
    assert (rl.config.chunk_size, rl.config.num_inference_steps, rl.config.image_resolution) == (
        base.chunk_size, base.num_inference_steps, base.image_resolution)
    assert rl.config.n_action_steps == 2 and rl.config.base_type == "pi0"
    assert rl.config.input_features == base.input_features and rl.config.output_features == base.output_features
    assert rl.config.train_expert_only, "trainable=expert is LeRobot's train_expert_only"
    assert rl.noise_mask()[:2].any() and not rl.noise_mask()[2:].any()
    # LeRobot reads the chunk length to build the dataset before any policy exists: the base's already.
    config = make_policy_config("pi0_rl", base_policy_path=str(bases["pi0"][0]), device="cpu")
    assert config.action_delta_indices == list(range(base.chunk_size)) and config.base_type == "pi0"


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_export_gives_a_stock_checkpoint_with_identical_actions(bases, kind, tmp_path):
    rl = _rl(bases, kind)
    with torch.no_grad():
        rl.model.action_out_proj.bias.add_(0.05)  # "fine-tuned": the export must carry these weights
    rl.save_pretrained(tmp_path / "rl")
    loaded = get_policy_class(f"{kind}_rl").from_pretrained(tmp_path / "rl")
    assert loaded.config.base_type == kind
    for key, value in rl.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    pre, post = make_pre_post_processors(loaded.config, pretrained_path=str(bases[kind][0]))
    out = export_to_base(loaded, tmp_path / "stock", preprocessor=pre, postprocessor=post)
    assert json.loads((out / "config.json").read_text())["type"] == kind
    stock = get_policy_class(kind).from_pretrained(out)
    assert type(stock) is RL_CLASSES[kind].base_policy_class
    assert set(stock.state_dict()) == {k for k in loaded.state_dict() if not k.startswith("rl_")}
    for key, value in stock.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

    batch, noise = batch_maker(stock)(2, 8), _noise()
    loaded.eval()
    actions = loaded.predict_action_chunk(batch, noise=noise)
    assert torch.equal(stock.predict_action_chunk(batch, noise=noise), actions)
    assert not torch.allclose(bases[kind][1].predict_action_chunk(batch, noise=noise), actions)
    stock_pre, _ = make_pre_post_processors(stock.config, pretrained_path=str(out))
    assert [type(s) for s in stock_pre.steps] == [type(s) for s in pre.steps]
    assert stock.config.train_expert_only == type(stock.config)().train_expert_only, "LeRobot's default back"


def test_export_without_processors_uses_the_base_checkpoints(bases, tmp_path):
    out = export_to_base(_rl(bases, "pi0"), tmp_path / "stock")
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (out / name).is_file(), name


def test_lerobot_finds_the_policy_classes_and_processor_factories_by_name(bases):
    for kind, cls in RL_CLASSES.items():
        assert get_policy_class(f"{kind}_rl") is cls
    config = make_policy_config("pi0_rl", base_policy_path=str(bases["pi0"][0]), device="cpu")
    pre, post = make_pre_post_processors(config)
    base_pre, _ = make_pre_post_processors(bases["pi0"][1].config, pretrained_path=str(bases["pi0"][0]))
    assert [s.__class__ for s in pre.steps] == [s.__class__ for s in base_pre.steps]


# -------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(("fields", "flag", "fix"), [
    (dict(stochastic_chain="ode"), "--policy.stochastic_chain", "flow_noise"),
    (dict(value_head="critic"), "--policy.value_head", "prefix"),
    (dict(noise_on="all"), "--policy.noise_on", "executed"),
    (dict(min_noise_std=0.0), "--policy.min_noise_std", "(0, inf)"),
    (dict(min_noise_std=0.3, max_noise_std=0.1), "--policy.min_noise_std", "set them equal"),
    (dict(sde_noise_level=-1.0), "--policy.sde_noise_level", "(0, inf)"),
    (dict(noise_head_dims=[0]), "--policy.noise_head_dims", "[1, inf)"),
    (dict(trainable="lora", lora_rank=0), "--policy.lora_rank", "[1, inf)"),
    (dict(trainable="lora", lora_target_modules=[]), "--policy.lora_target_modules", "q_proj"),
    (dict(rtc_config=RTCConfig(enabled=True)), "--policy.rtc_config.enabled", "export_to_base"),
])
def test_bad_config_values_name_the_flag_and_the_fix(fields, flag, fix):
    with pytest.raises(ConfigError) as error:
        PI0RLConfig(device="cpu", **fields)
    assert flag in str(error.value) and fix in str(error.value)


@pytest.mark.parametrize("kind", ["pi0", "smolvla"])
def test_lora_adapts_the_frozen_vlm_and_starts_at_the_base_actions(bases, kind):
    rl = _rl(bases, kind, trainable="lora", lora_rank=4)
    batch, noise = batch_maker(rl)(2, 5), _noise()
    rl.eval()
    assert torch.equal(rl.predict_action_chunk(batch, noise=noise), bases[kind][1].predict_action_chunk(batch, noise=noise))
    rl.train()
    out = rl.sample_actions_with_log_prob(batch, _noise())
    rl.evaluate_chain(batch, out.chain).log_prob.sum().backward()
    named = dict(rl.lora_module.named_parameters())
    adapters = {n: p for n, p in named.items() if "lora_" in n}
    assert adapters and all(p.requires_grad for p in adapters.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n), \
        "no gradient into the VLM's adapters through the prefix pass"
    frozen = [n for n, p in named.items() if "lora_" not in n and (p.requires_grad or p.grad is not None)]
    assert not frozen, f"the VLM's own weights must stay frozen: {frozen[:3]}"
    assert rl.model.action_in_proj.weight.grad is not None, "the action expert trains beside the adapters"


@pytest.mark.parametrize("kind", ["pi0", "smolvla"])
def test_lora_checkpoint_reloads_and_exports_with_the_adapters_merged(bases, kind, tmp_path):
    rl = _rl(bases, kind, trainable="lora", lora_rank=4)
    with torch.no_grad():  # "fine-tuned" adapters: the export must carry them, merged
        for name, p in rl.lora_module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
    rl.save_pretrained(tmp_path / "rl")
    loaded = get_policy_class(f"{kind}_rl").from_pretrained(tmp_path / "rl")
    for key, value in rl.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    batch, noise = batch_maker(loaded)(2, 8), _noise()
    loaded.eval()
    actions = loaded.predict_action_chunk(batch, noise=noise)
    assert not torch.allclose(bases[kind][1].predict_action_chunk(batch, noise=noise), actions)

    pre, post = make_pre_post_processors(loaded.config, pretrained_path=str(bases[kind][0]))
    out = export_to_base(loaded, tmp_path / "stock", preprocessor=pre, postprocessor=post)
    stock = get_policy_class(kind).from_pretrained(out)
    assert not any("lora_" in k or "base_layer" in k for k in stock.state_dict())
    torch.testing.assert_close(stock.predict_action_chunk(batch, noise=noise), actions, atol=1e-5, rtol=1e-5)
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), actions), "the export left the adapters as they were"


def test_lora_target_modules_that_match_nothing_are_named(bases):
    with pytest.raises(ConfigError, match="--policy.lora_target_modules"):
        _rl(bases, "smolvla", trainable="lora", lora_target_modules=["no_such_layer"])


def test_smolvla_rl_refuses_adapt_to_pi_aloha():
    with pytest.raises(ConfigError, match="--policy.adapt_to_pi_aloha"):
        make_policy_config("smolvla_rl", adapt_to_pi_aloha=True, device="cpu")


def test_a_base_of_another_type_is_refused_naming_the_rl_type_to_use(bases):
    with pytest.raises(ConfigError, match="smolvla_rl"):
        PI0RLPolicy.from_base(bases["smolvla"][0], device="cpu")


def test_a_base_whose_weights_do_not_fit_the_config_is_refused_naming_the_field(bases):
    with pytest.raises(CheckpointError, match="--policy.max_action_dim"):
        PI0RLPolicy.from_base(bases["pi0"][0], device="cpu", max_action_dim=16)


def test_a_stock_config_is_refused_naming_from_base(bases):
    with pytest.raises(ConfigError, match="from_base"):
        PI0RLPolicy(bases["pi0"][1].config)


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_bf16_with_gradient_checkpointing_samples_reevaluates_and_trains(bases, kind):
    """LeRobot's memory settings for pi0 / pi05 (`--policy.dtype=bfloat16 --policy.gradient_checkpointing=true`)
    pass through the RL type: the chain samples, re-evaluates to its own log-likelihood and
    backpropagates into the bf16 weights that train."""
    policy = _rl(bases, kind, stochastic_chain="flow_noise", dtype="bfloat16", gradient_checkpointing=True)
    policy.train()
    assert any(p.dtype == torch.bfloat16 for p in policy.parameters()), "dtype=bfloat16 did not reach the weights"
    batch = batch_maker(policy)(2, 0)
    out = policy.sample_actions_with_log_prob(batch)
    assert torch.isfinite(out.actions).all() and torch.isfinite(out.log_prob).all()
    log_prob = policy.log_prob_of_chain(batch, out.chain)
    torch.testing.assert_close(log_prob.float(), out.log_prob.float(), rtol=1e-2, atol=1e-2)
    log_prob.sum().backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("kind", "chain_type"), [("smolvla", "flow_noise"), ("pi0", "flow_noise"), ("pi05", "flow_sde"), ("pi05", "flow_noise"), ("pi0", "flow_sde")])
def test_checkpointed_chain_gives_the_same_log_prob_and_gradients(bases, kind, chain_type):
    """`chain_gradient_checkpointing` recomputes each denoising step in the backward pass (PPO's memory
    knob, docs/results/gpu_vla.md): the re-evaluated log-likelihood, value and every gradient are those
    of the plain re-evaluation, into the VLM too (trainable=all: gradients cross the prefix KV cache)."""
    results = []
    for checkpointing in (False, True):
        policy = _rl(bases, kind, trainable="all", stochastic_chain=chain_type,
                     chain_gradient_checkpointing=checkpointing).eval()  # as PPO / GRPO updates run it
        batch = batch_maker(policy)(2, 3)
        chain = policy.sample_actions_with_log_prob(batch, _noise()).chain
        out = policy.evaluate_chain(batch, chain)
        calls = []
        handle = policy.model.action_out_proj.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        (out.log_prob.sum() + out.value.sum()).backward()
        handle.remove()
        # Checkpointed: every denoising step's expert pass runs again in the backward pass (a pre-hook: torch
        # stops a recomputation once it has what backward needs, which can be inside action_out_proj).
        assert len(calls) == (policy.num_denoise_steps if checkpointing else 0)
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results.append((out.log_prob.detach(), out.value.detach(), grads))
    (lp, value, grads), (lp_ck, value_ck, grads_ck) = results
    torch.testing.assert_close(lp_ck, lp)
    torch.testing.assert_close(value_ck, value)
    assert grads.keys() == grads_ck.keys() and any("noise_head" in n for n in grads) == (chain_type == "flow_noise")
    assert any("with_expert.paligemma." in n or "with_expert.vlm." in n for n in grads), "no gradient reached the VLM"
    for name in grads:
        torch.testing.assert_close(grads_ck[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_pi0_gradient_checkpointing_switches_the_chain_checkpointing_on(bases):
    assert _rl(bases, "pi0", gradient_checkpointing=True).config.checkpoint_chain
    assert not _rl(bases, "pi0").config.checkpoint_chain
