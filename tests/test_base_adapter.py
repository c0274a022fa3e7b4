"""The base-policy adapter: a frozen LeRobot policy as a deterministic map (observation, noise) -> chunk.

Every steering method (DSRL, VGD, ...) relies on these behaviours, checked here against LeRobot's
real DiffusionPolicy, SmolVLAPolicy, PI0Policy and PI05Policy built tiny, offline, on CPU.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers_bases import (  # noqa: F401  (one_thread, vla_builds: pytest fixtures)
    ACTION,
    CAMERA,
    ENV,
    STATE,
    batch_maker,
    one_thread,
    save_base,
    tiny_diffusion,
    tiny_vla,
    vla_builds,
)
from safetensors.torch import save_file

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_policy_config

from lerobot_steer.steering import (
    BasePolicyAdapter,
    CheckpointError,
    DenoiseStep,
    FeatureMismatchError,
    UnsupportedBasePolicyError,
)

BASES = ["diffusion_state", "diffusion_camera", "smolvla", "pi0", "pi05"]


# ------------------------------------------------------------------------------------- fixtures


@dataclass
class Base:
    """One tiny base policy, its adapter, its saved checkpoint and a batch maker (normalized space)."""

    name: str
    adapter: BasePolicyAdapter
    checkpoint: Path
    make_batch: Callable[[int, int], dict]
    features: dict[str, PolicyFeature]


def _diffusion(with_camera: bool):
    """A tiny DiffusionPolicy left on LeRobot's stochastic DDPM default: the adapter's switch to DDIM is under test."""
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (4,))}
    if with_camera:
        inputs[CAMERA] = PolicyFeature(FeatureType.VISUAL, (3, 32, 32))
    else:
        inputs[ENV] = PolicyFeature(FeatureType.ENV, (3,))
    policy, pre, post = tiny_diffusion(inputs, noise_scheduler_type="DDPM", num_inference_steps=None)
    return policy, (pre, post)


def _build(name: str, vlm_dir: Path, tmp_path_factory) -> Base:
    torch.manual_seed(0)
    if name.startswith("diffusion"):
        policy, (pre, post) = _diffusion(with_camera=name == "diffusion_camera")
    else:
        policy, pre, post = tiny_vla(name, vlm_dir)
    checkpoint = save_base(policy, pre, post, tmp_path_factory.mktemp(name))
    features = {**policy.config.input_features, **policy.config.output_features}
    adapter = BasePolicyAdapter.from_policy(policy, pre, post)
    return Base(name, adapter, checkpoint, batch_maker(policy), dict(features))


@pytest.fixture(scope="module", params=BASES)
def base(request, vla_builds, tmp_path_factory) -> Base:
    """Each base is built once per module (pytest groups the tests by parameter)."""
    return _build(request.param, vla_builds, tmp_path_factory)


@pytest.fixture(scope="module")
def camera_base(vla_builds, tmp_path_factory) -> Base:
    """A diffusion base with a camera, for behaviours that one base covers."""
    return _build("diffusion_camera", vla_builds, tmp_path_factory)


# ------------------------------------------------------------------------- noise in, chunk out


def test_same_noise_gives_the_same_chunk_and_other_noise_another(base):
    adapter = base.adapter
    adapter.reset()
    batch = base.make_batch(3, seed=1)
    noise = adapter.sample_noise(3, generator=torch.Generator().manual_seed(2))
    first = adapter.sample(batch, noise)
    again = adapter.sample(batch, noise.clone())
    other = adapter.sample(batch, adapter.sample_noise(3, generator=torch.Generator().manual_seed(3)))
    assert first.shape == (3, adapter.n_action_steps, adapter.action_dim)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_noise_shape_is_the_shape_the_base_denoises(base):
    adapter, config = base.adapter, base.adapter.policy.config
    adapter.reset()
    if base.name.startswith("diffusion"):
        expected = (5, config.horizon, config.action_feature.shape[0])
    else:  # VLAs denoise a padded chunk: the padded dims feed action_in_proj too
        expected = (5, config.chunk_size, config.max_action_dim)
    assert adapter.noise_shape(5) == expected
    assert adapter.chunk_length == expected[1]
    assert adapter.sample(base.make_batch(5, seed=4), torch.randn(expected)).shape == (5, 4, adapter.action_dim)
    with pytest.raises(ValueError, match="noise_shape"):
        adapter.sample(base.make_batch(5, seed=4), torch.randn(5, expected[1], expected[2] + 1))


def test_base_is_frozen_and_stays_in_eval_mode(base):
    adapter = base.adapter
    assert not any(p.requires_grad for p in adapter.policy.parameters())
    adapter.train()
    assert adapter.training and not adapter.policy.training
    adapter.policy.train()  # even if someone flips the base itself, sampling stays deterministic
    adapter.reset()
    batch, noise = base.make_batch(2, seed=5), adapter.sample_noise(2)
    assert torch.equal(adapter.sample(batch, noise), adapter.sample(batch, noise))
    adapter.eval()


def test_saved_checkpoint_reloads_to_the_same_chunks(base):
    loaded = BasePolicyAdapter.from_pretrained(base.checkpoint, device="cpu")
    assert loaded.policy_type == base.adapter.policy_type
    assert loaded.num_inference_steps == base.adapter.num_inference_steps
    batch, noise = base.make_batch(2, seed=6), base.adapter.sample_noise(2)
    base.adapter.reset()
    assert torch.equal(loaded.sample(batch, noise), base.adapter.sample(batch, noise))
    # the saved processors came along: same normalization both ways
    raw = {key: value * 3.0 + 0.5 if key in (STATE, ENV) else value for key, value in batch.items()}
    assert torch.allclose(loaded.preprocess(raw)[STATE], base.adapter.preprocess(raw)[STATE])
    chunk = torch.randn(2, 4, base.adapter.action_dim)
    assert torch.allclose(loaded.postprocess(chunk), base.adapter.postprocess(chunk))


# ---------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("damage", ["no_config", "no_weights", "truncated_weights"])
def test_damaged_checkpoint_error_names_the_file_and_the_fix(base, damage, tmp_path):
    for file in base.checkpoint.iterdir():
        if damage == "no_config" and file.name == "config.json":
            continue
        if damage == "no_weights" and file.name == "model.safetensors":
            continue
        if damage == "truncated_weights" and file.name == "model.safetensors":
            data = file.read_bytes()
            (tmp_path / file.name).write_bytes(data[: len(data) // 2])
            continue
        shutil.copy(file, tmp_path / file.name)
    with pytest.raises(CheckpointError) as error:
        BasePolicyAdapter.from_pretrained(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert ("config.json" if damage == "no_config" else "model.safetensors") in message
    assert "save_pretrained" in message  # the fix


@pytest.mark.parametrize("content", ["{not json", '["a list"]', '{"steps": ["not an object"]}'])
def test_corrupt_processor_file_raises_naming_it_instead_of_dropping_the_device_override(tmp_path, content):
    from lerobot_steer.policies.common.processors import base_pre_post_processors
    from lerobot_steer.policies.dsrl import DSRLConfig
    from lerobot_steer.steering.base_adapter import PREPROCESSOR_FILE, _pipeline_has_step

    folder = save_base(*tiny_diffusion(), tmp_path / "base")
    assert _pipeline_has_step(folder / PREPROCESSOR_FILE, "device_processor")
    assert not _pipeline_has_step(folder / PREPROCESSOR_FILE, "no_such_step")
    assert not _pipeline_has_step(folder / "absent.json", "device_processor")  # the loader names it
    (folder / PREPROCESSOR_FILE).write_text(content)
    for load in (lambda: BasePolicyAdapter.from_pretrained(folder),
                 lambda: base_pre_post_processors(DSRLConfig(base_policy_path=str(folder), device="cpu"))):
        with pytest.raises(CheckpointError, match="not a LeRobot processor pipeline") as error:
            load()
        assert str(folder / PREPROCESSOR_FILE) in str(error.value)


def test_training_checkpoint_root_points_to_pretrained_model(tmp_path):
    (tmp_path / "pretrained_model").mkdir()
    (tmp_path / "pretrained_model" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="pretrained_model"):
        BasePolicyAdapter.from_pretrained(tmp_path)


def test_missing_local_folder_is_reported_as_a_path(tmp_path):
    with pytest.raises(CheckpointError, match="nothing_here does not exist"):
        BasePolicyAdapter.from_pretrained(tmp_path / "outputs" / "nothing_here")


def test_hub_repo_id_takes_the_local_path_once_fetched(camera_base, monkeypatch):
    import huggingface_hub

    fetched = {}

    def fake_snapshot_download(repo_id, revision=None, **kwargs):
        fetched.update(repo_id=repo_id, revision=revision)
        return str(camera_base.checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = BasePolicyAdapter.from_pretrained("someone/tiny_diffusion", revision="v1", device="cpu")
    assert fetched == {"repo_id": "someone/tiny_diffusion", "revision": "v1"}
    batch, noise = camera_base.make_batch(2, seed=7), camera_base.adapter.sample_noise(2)
    camera_base.adapter.reset()
    assert torch.equal(loaded.sample(batch, noise), camera_base.adapter.sample(batch, noise))


def test_unreachable_hub_repo_error_says_how_to_fix_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never touch the network here
    with pytest.raises(CheckpointError) as error:
        BasePolicyAdapter.from_pretrained("nobody/no_such_policy_repo")
    assert "nobody/no_such_policy_repo" in str(error.value) and "HF_HUB_OFFLINE" in str(error.value)


# ------------------------------------------------------------------------------ unsupported bases


@pytest.mark.parametrize(
    ("policy_type", "reason"), [("xvla", "ignores it"), ("multi_task_dit", "no `noise` parameter")]
)
def test_base_that_cannot_take_a_noise_is_refused_by_type(policy_type, reason, tmp_path):
    make_policy_config(policy_type, device="cpu")._save_pretrained(tmp_path)
    save_file({"unused": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(UnsupportedBasePolicyError) as error:  # refused before any weights load
        BasePolicyAdapter.from_pretrained(tmp_path, load_processors=False)
    assert f"'{policy_type}'" in str(error.value) and reason in str(error.value)


def test_in_memory_base_without_noise_is_refused():
    from lerobot.policies.act.modeling_act import ACTPolicy

    config = make_policy_config(
        "act", device="cpu", dim_model=16, n_heads=2, dim_feedforward=16, n_encoder_layers=1,
        n_decoder_layers=1, use_vae=False, chunk_size=4, n_action_steps=4,
        input_features={STATE: PolicyFeature(FeatureType.STATE, (4,)), ENV: PolicyFeature(FeatureType.ENV, (3,))},
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (2,))},
    )
    with pytest.raises(UnsupportedBasePolicyError, match="'act'"):
        BasePolicyAdapter.from_policy(ACTPolicy(config))


# ------------------------------------------------------------------------------------- features


def test_matching_features_pass_and_every_mismatch_is_listed_at_once(base):
    base.adapter.check_features(base.features)
    wrong = dict(base.features)
    dropped = CAMERA if CAMERA in wrong else ENV
    del wrong[dropped]
    wrong[STATE] = PolicyFeature(FeatureType.STATE, (wrong[STATE].shape[0] + 1,))
    wrong[ACTION] = PolicyFeature(FeatureType.ACTION, (wrong[ACTION].shape[0] + 1,))
    with pytest.raises(FeatureMismatchError) as error:
        base.adapter.check_features(wrong)
    message = str(error.value)
    assert f"missing {'camera' if dropped == CAMERA else 'environment state'} '{dropped}'" in message
    assert "wrong state dim" in message and "wrong action dim" in message


def test_dataset_features_with_renamed_camera_and_wrong_frame_size(camera_base):
    base = camera_base
    dataset_features = {
        STATE: {"dtype": "float32", "shape": (4,), "names": None},
        "observation.images.top": {"dtype": "video", "shape": (32, 32, 3), "names": ["height", "width", "channels"]},
        ACTION: {"dtype": "float32", "shape": (2,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    }
    with pytest.raises(FeatureMismatchError, match=f"missing camera '{CAMERA}'"):
        base.adapter.check_features(dataset_features)
    base.adapter.check_features(dataset_features, rename_map={"observation.images.top": CAMERA})
    dataset_features["observation.images.top"]["shape"] = (48, 64, 3)  # diffusion does not resize
    with pytest.raises(FeatureMismatchError, match=r"\(3, 48, 64\)"):
        base.adapter.check_features(dataset_features, rename_map={"observation.images.top": CAMERA})


def test_env_features_are_checked_through_the_env_features_map(camera_base):
    base = camera_base
    from lerobot.envs.configs import PushtEnv

    with pytest.raises(FeatureMismatchError) as error:
        base.adapter.check_features(PushtEnv(obs_type="pixels_agent_pos"))
    assert f"missing camera '{CAMERA}'" in str(error.value) and "wrong state dim" in str(error.value)


# ----------------------------------------------------------------------------- diffusion specifics


def test_diffusion_is_switched_from_stochastic_ddpm_to_ddim():
    from diffusers import DDIMScheduler

    policy, _ = _diffusion(with_camera=False)
    batch = {STATE: torch.randn(2, 2, 4), ENV: torch.randn(2, 2, 3)}
    noise = torch.randn(2, 8, 2)
    ddpm = [policy.predict_action_chunk(batch, noise=noise) for _ in range(2)]
    assert not torch.allclose(*ddpm)  # why the switch is needed: DDPM adds noise at every step
    adapter = BasePolicyAdapter.from_policy(policy, num_inference_steps=4)
    assert isinstance(policy.diffusion.noise_scheduler, DDIMScheduler)
    assert adapter.num_inference_steps == 4 and policy.config.noise_scheduler_type == "DDIM"
    assert torch.equal(adapter.sample(batch, noise), adapter.sample(batch, noise))


def test_diffusion_keeps_an_observation_history_for_single_steps(camera_base):
    """Single steps (B, ...) from an env and histories (B, n_obs_steps, ...) from a dataset agree."""
    base = camera_base
    adapter = base.adapter
    first, second, third = (base.make_batch(3, seed=s) for s in (10, 11, 12))
    noise = adapter.sample_noise(3)

    def stacked(*steps):  # what a dataset with observation_delta_indices would deliver
        return {key: torch.stack([s[key] for s in steps], dim=1) for key in steps[0]}

    adapter.reset()
    adapter.observe(first)
    assert torch.equal(adapter.sample(second, noise), adapter.sample(stacked(first, second), noise))
    adapter.reset(done=torch.tensor([True, False, False]))  # env 0 starts a new episode
    from_history = adapter.sample(third, noise)
    expected = stacked(second, third)
    for key in expected:
        expected[key][0] = torch.stack([third[key][0], third[key][0]])
    assert torch.equal(from_history, adapter.sample(expected, noise))
    with pytest.raises(ValueError, match="reset"):
        adapter.sample(base.make_batch(2, seed=13), adapter.sample_noise(2))


# ------------------------------------------------------------------------------- guided sampling


def test_guide_returning_zero_leaves_the_chunk_unchanged(base):
    adapter, batch = base.adapter, base.make_batch(2, seed=20)
    noise = adapter.sample_noise(2)
    adapter.reset()
    seen = []

    def zero(step: DenoiseStep):
        seen.append(step.index)
        assert step.estimate.shape == (2, adapter.n_action_steps, adapter.action_dim)
        return torch.zeros_like(step.estimate)

    assert torch.equal(adapter.guided_sample(batch, noise, zero), adapter.sample(batch, noise))
    assert seen == list(range(adapter.num_inference_steps))


def test_shift_at_the_last_step_moves_the_executed_chunk_by_exactly_that_shift(base):
    adapter, batch = base.adapter, base.make_batch(2, seed=21)
    noise = adapter.sample_noise(2)
    adapter.reset()
    shift = torch.linspace(-0.3, 0.3, adapter.n_action_steps * adapter.action_dim).view(1, adapter.n_action_steps, -1)
    guided = adapter.guided_sample(batch, noise, lambda step: shift.expand_as(step.estimate), steps=[-1])
    assert torch.allclose(guided, adapter.sample(batch, noise) + shift, atol=1e-5)


def test_critic_gradient_guides_toward_higher_value_without_touching_the_base(base):
    adapter, batch = base.adapter, base.make_batch(2, seed=22)
    noise = adapter.sample_noise(2)
    target = torch.full((2, adapter.n_action_steps, adapter.action_dim), 0.5)
    weight = torch.ones((), requires_grad=True)  # a stand-in critic parameter

    def critic(actions):
        return -(weight * (actions - target) ** 2).sum()

    def ascend(step: DenoiseStep):
        actions = step.estimate.requires_grad_()
        (grad,) = torch.autograd.grad(critic(actions), actions)
        return 0.2 * grad

    adapter.reset()
    plain = adapter.sample(batch, noise)
    guided = adapter.guided_sample(batch, noise, ascend, steps=range(-2, 0))
    assert critic(guided) > critic(plain)
    assert all(p.grad is None for p in adapter.policy.parameters())
    assert weight.grad is None  # the guide used autograd.grad: nothing accumulated anywhere


def test_guides_can_differentiate_under_inference_mode(base):
    """lerobot-eval acts under torch.inference_mode(); any guide must still get its gradient."""
    adapter, batch = base.adapter, base.make_batch(2, seed=23)
    noise = adapter.sample_noise(2)
    target = torch.full((2, adapter.n_action_steps, adapter.action_dim), 0.5)

    def toward_target(step: DenoiseStep):
        action = step.estimate.requires_grad_(True)
        (grad,) = torch.autograd.grad(-((action - target) ** 2).sum(), action)
        return 0.1 * grad

    adapter.reset()
    expected = adapter.guided_sample(batch, noise, toward_target, steps=[-1])
    adapter.reset()
    with torch.inference_mode():
        under_eval = adapter.guided_sample(batch, noise, toward_target, steps=[-1])
    assert torch.allclose(under_eval, expected, atol=1e-6)


@pytest.mark.parametrize("device", ["meta", *(["cuda"] if torch.cuda.is_available() else [])])
def test_restored_history_follows_the_device_of_the_next_observations(device):
    """A history restored from a checkpoint (or from the pause of an evaluation) is held on the CPU;
    the next observations of a GPU run must continue it, not fail on mixed devices (found on an H200:
    every `--policy.device=cuda` run crashed after its first evaluation). `meta` stands in for the
    GPU on CPU-only machines: it fails the same way on a CPU/other-device concatenation."""
    from lerobot_steer.steering.obs_history import ObservationHistory

    features = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(3,))}
    history = ObservationHistory(2, features)
    history.push({"observation.state": torch.zeros(4, 3)})
    restored = ObservationHistory(2, features)
    restored.load_state_dict(history.state_dict())

    out = restored.push({"observation.state": torch.ones(4, 3, device=device)})

    assert out["observation.state"].device.type == device
    assert out["observation.state"].shape == (4, 2, 3)
