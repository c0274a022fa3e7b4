"""Every LeRobot 0.6.1 internal this package relies on, pinned in one place.

When a LeRobot upgrade moves one of them, the failure is here, naming the seam and the code of ours
that depends on it, rather than somewhere downstream (a recorded episode that silently reuses its
scene, a checkpoint that loads half its weights, a guidance hook that is never called, a dataset
whose episodes all count as successes).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
from pathlib import Path

import pytest
import torch

import lerobot_steer

PACKAGE_DIR = Path(lerobot_steer.__file__).parent


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _source(obj) -> str:
    return inspect.getsource(obj)


# ------------------------------------------------------------------------------ every import


def _lerobot_imports() -> list[tuple[str, str, str]]:
    """(module, name, where) for every `from lerobot... import name` in the package, lazy ones included."""
    found = []
    for file in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lerobot":
                where = f"{file.relative_to(PACKAGE_DIR.parent)}:{node.lineno}"
                found += [(node.module, alias.name, where) for alias in node.names]
    return found


def test_every_name_the_package_imports_from_lerobot_still_exists():
    """Lazy imports (inside functions) would otherwise fail only when their code path first runs."""
    missing = []
    for module, name, where in _lerobot_imports():
        try:
            owner = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{where}: module {module} ({e})")
            continue
        if not hasattr(owner, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule imported by name
            except ImportError:
                missing.append(f"{where}: {module}.{name}")
    assert not missing, "seams moved: these LeRobot names are gone:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize(("module", "names", "user"), [
    ("lerobot.policies.pi0.modeling_pi0", ["GemmaConfig", "get_gemma_config", "PaliGemmaForConditionalGenerationWithPiGemma"],
     "steering/tiny_bases.py (offline_vla_builds shrinks them)"),
    ("lerobot.policies.pi05.modeling_pi05", ["get_gemma_config", "PaliGemmaForConditionalGenerationWithPiGemma"],
     "steering/tiny_bases.py (offline_vla_builds shrinks them)"),
    ("lerobot.policies.smolvla.smolvlm_with_expert", ["AutoProcessor"], "steering/tiny_bases.py (stubbed offline)"),
    ("lerobot.rl.algorithms.factory", ["get_algorithm_class", "make_algorithm"], "rl/registry.py"),
])
def test_module_attributes_the_package_reads_or_patches_exist(module, names, user):
    owner = importlib.import_module(module)
    for name in names:
        assert hasattr(owner, name), f"seam moved: {module}.{name} is gone ({user} reads or patches it)"


# ------------------------------------------------------------------------------ sim/robot.py


def test_log_say_logs_the_recording_announcement_through_the_root_logger(caplog):
    """sim/robot.py draws a new scene when its root-logger handler hears "Recording episode N"."""
    from lerobot.utils import utils

    from lerobot_steer.sim.robot import EPISODE_ANNOUNCEMENT

    assert {"text", "play_sounds"} <= set(_params(utils.log_say)), (
        "seam moved: log_say(text, play_sounds=...) changed its signature (sim/robot.py calls it at connect)"
    )
    with caplog.at_level(logging.INFO):
        utils.log_say(f"{EPISODE_ANNOUNCEMENT} 3", play_sounds=False)
    records = [r for r in caplog.records if r.getMessage() == f"{EPISODE_ANNOUNCEMENT} 3"]
    assert records, "seam moved: lerobot.utils.utils.log_say no longer logs its text (sim/robot.py listens for it)"
    assert records[0].name == "root", (
        f"seam moved: log_say now logs through '{records[0].name}', not the root logger. sim/robot.py's root "
        "handler still hears it if that logger propagates; update the module docstring of sim/robot.py"
    )
    for module in ("lerobot.scripts.lerobot_record", "lerobot.rollout.strategies.episodic"):
        source = _source(importlib.import_module(module))
        assert 'log_say(f"Recording episode {dataset.num_episodes}"' in source, (
            f"seam moved: {module} no longer announces 'Recording episode N' (sim/robot.py needs it)"
        )


def test_recording_loops_the_sim_robot_recognises_still_record_one_episode_per_call():
    """sim/robot.py tells recorded episodes apart by the loop frame that calls get_observation."""
    from lerobot.rollout.robot_wrapper import ThreadSafeRobot
    from lerobot.rollout.strategies.episodic import EpisodicStrategy
    from lerobot.scripts import lerobot_record

    from lerobot_steer.sim.robot import RECORDING_LOOPS

    def undecorated(fn):  # record_loop is wrapped by safe_stop_image_writer, which keeps no __wrapped__
        inner = [c.cell_contents for c in fn.__closure__ or () if inspect.isfunction(c.cell_contents)]
        return inner[0] if inner else fn

    loops = {
        ("lerobot_record.py", "record_loop"): undecorated(lerobot_record.record_loop),
        ("episodic.py", "_policy_loop"): EpisodicStrategy._policy_loop,
    }
    assert set(loops) == set(RECORDING_LOOPS)
    for (file, name), fn in loops.items():
        assert Path(fn.__code__.co_filename).name == file and fn.__code__.co_name == name, (
            f"seam moved: the recording loop {file}:{name} was renamed (sim/robot.py RECORDING_LOOPS)"
        )
        assert "dataset" in _params(fn) and "robot.get_observation()" in _source(fn), (
            f"seam moved: {file}:{name} no longer takes `dataset` or calls robot.get_observation() itself "
            "(sim/robot.py RECORDING_LOOPS)"
        )
    assert "self._robot.get_observation()" in _source(ThreadSafeRobot.get_observation), (
        "seam moved: lerobot-rollout's ThreadSafeRobot no longer forwards get_observation directly "
        "(sim/robot.py searches the callers of get_observation a few frames up)"
    )


# ------------------------------------------------------------------------------ rl/


def test_algorithm_factory_resolves_the_class_through_its_module_attribute():
    """rl/registry.py replaces factory.get_algorithm_class so make_algorithm finds our types."""
    from lerobot.rl.algorithms import factory

    assert "get_algorithm_class" in _source(factory.make_algorithm), (
        "seam moved: make_algorithm no longer calls get_algorithm_class (rl/registry.py patches it)"
    )
    import lerobot_steer  # noqa: F401  (registers)

    assert factory.get_algorithm_class("dsrl").__name__ == "DSRLAlgorithm"
    assert factory.get_algorithm_class("dyna_vgd").__name__ == "DynaVGDAlgorithm"


# ------------------------------------------------------------------------------ policies/common


def test_pretrained_policy_loads_weights_through_load_as_safetensor():
    """policies/common/frozen_base.py overrides _load_as_safetensor to leave the frozen base out."""
    from lerobot.policies.pretrained import PreTrainedPolicy

    assert _params(PreTrainedPolicy._load_as_safetensor) == ["model", "model_file", "map_location", "strict"], (
        "seam moved: PreTrainedPolicy._load_as_safetensor changed its signature (frozen_base.py overrides it)"
    )
    assert "cls._load_as_safetensor(" in _source(PreTrainedPolicy.from_pretrained), (
        "seam moved: from_pretrained no longer loads through _load_as_safetensor (frozen_base.py overrides it)"
    )
    assert "cls(config, **kwargs)" in _source(PreTrainedPolicy.from_pretrained), (
        "seam moved: from_pretrained no longer passes its extra kwargs to the policy (frozen_base.py passes "
        "base_policy_dir=<checkpoint>/base_policy that way)"
    )


def test_pretrained_policy_saves_through_save_pretrained_with_state_dict():
    """frozen_base.py overrides _save_pretrained(save_directory, state_dict) to store the base apart."""
    from lerobot.policies.pretrained import PreTrainedPolicy

    assert _params(PreTrainedPolicy._save_pretrained) == ["self", "save_directory", "state_dict"], (
        "seam moved: PreTrainedPolicy._save_pretrained changed its signature (frozen_base.py overrides it)"
    )
    assert "self._save_pretrained(save_directory, state_dict=state_dict)" in _source(PreTrainedPolicy.save_pretrained), (
        "seam moved: save_pretrained no longer calls _save_pretrained(save_directory, state_dict=...)"
    )


def test_make_policy_hands_the_dataset_metadata_to_the_policy():
    """Our policies check the dataset against the base and read next.success per episode from the
    `dataset_meta` that make_policy passes; without it reward_from_success would count every episode
    a success and the feature checks would not run."""
    from lerobot.policies.factory import make_policy

    assert 'kwargs["dataset_meta"] = ds_meta' in _source(make_policy), (
        "seam moved: make_policy no longer passes dataset_meta=<LeRobotDatasetMetadata> to the policy "
        "(policies/dsrl, policies/dyna_vgd read it)"
    )


def test_normalizer_step_keeps_its_dataset_stats_where_the_critics_read_them():
    """frozen_base.unnormalized_feature_stats reads `step.stats` of the base's normalizer step."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.processor import NormalizerProcessorStep

    from lerobot_steer.steering.tiny_bases import stats_for

    features = {"observation.state": PolicyFeature(FeatureType.STATE, (2,))}
    step = NormalizerProcessorStep(features=features, norm_map={}, stats=stats_for(features))
    assert set(getattr(step, "stats", {}) or {}) == {"observation.state"}, (
        "seam moved: NormalizerProcessorStep no longer exposes `.stats` (frozen_base.unnormalized_feature_stats "
        "would silently feed raw, unstandardized poses to the critics)"
    )


def test_processor_pipelines_keep_the_step_names_and_loader_arguments_we_use(tmp_path):
    """base_adapter.py / policies/common/processors.py override the saved 'device_processor' step and
    load pipelines with PolicyProcessorPipeline.from_pretrained(config_filename, overrides, to_transition, to_output)."""
    import json

    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.processor import PolicyProcessorPipeline

    from lerobot_steer.steering.base_adapter import POSTPROCESSOR_FILE, PREPROCESSOR_FILE
    from lerobot_steer.steering.tiny_bases import tiny_diffusion

    assert {"config_filename", "overrides", "to_transition", "to_output"} <= set(
        _params(PolicyProcessorPipeline.from_pretrained)
    ), "seam moved: PolicyProcessorPipeline.from_pretrained lost an argument policies/common/processors.py passes"
    assert "preprocessor_overrides" in _source(make_pre_post_processors), (
        "seam moved: make_pre_post_processors no longer takes preprocessor_overrides (base_adapter.py passes it)"
    )
    _, pre, post = tiny_diffusion()
    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)
    assert (tmp_path / PREPROCESSOR_FILE).is_file() and (tmp_path / POSTPROCESSOR_FILE).is_file(), (
        "seam moved: the saved processor file names changed (base_adapter.py PREPROCESSOR_FILE / POSTPROCESSOR_FILE)"
    )
    names = [s.get("registry_name") for s in json.loads((tmp_path / PREPROCESSOR_FILE).read_text())["steps"]]
    assert "device_processor" in names and "normalizer_processor" in names, (
        f"seam moved: the saved preprocessor steps are named {names}; base_adapter.py overrides 'device_processor'"
    )


# ------------------------------------------------------------------------------ steering/denoisers.py


def test_flow_matching_euler_integrate_takes_the_rtc_hook_our_guidance_uses():
    """steering/denoisers.py guides pi0 / pi05 / SmolVLA through euler_integrate's rtc_processor."""
    from lerobot.policies.common.flow_matching import euler_integrate

    params = _params(euler_integrate)
    for name in ("denoise_fn", "noise", "num_steps", "rtc_processor", "rtc_enabled"):
        assert name in params, f"seam moved: euler_integrate lost '{name}' (steering/denoisers.py passes it)"
    source = _source(euler_integrate)
    for call in ("rtc_processor.denoise_step(", "x_t=x_t", "time=time", "original_denoise_step_partial=",
                 "rtc_processor.is_debug_enabled()"):
        assert call in source, (
            f"seam moved: euler_integrate no longer calls the RTC hook with `{call}` "
            "(steering/denoisers.py _GuidedVelocity implements denoise_step(x_t, time, original_denoise_step_partial))"
        )


@pytest.mark.parametrize(("module", "steps_field"), [
    ("lerobot.policies.pi0.modeling_pi0", "num_inference_steps"),
    ("lerobot.policies.pi05.modeling_pi05", "num_inference_steps"),
    ("lerobot.policies.smolvla.modeling_smolvla", "num_steps"),
])
def test_vla_models_route_their_euler_steps_through_the_rtc_processor_we_swap(module, steps_field):
    """denoisers.FlowMatchingDenoiser swaps `policy.model.rtc_processor`, enables `config.rtc_config`
    and sets the number of steps on the config field each family reads at every call."""
    source = _source(importlib.import_module(module))
    for needle in ("rtc_processor=self.rtc_processor", "rtc_enabled=self._rtc_enabled()", "self.model = "):
        assert needle in source, f"seam moved: {module} no longer has `{needle}` (steering/denoisers.py relies on it)"
    assert f"self.config.{steps_field}" in source, (
        f"seam moved: {module} no longer reads config.{steps_field} (FlowMatchingDenoiser.configure sets it)"
    )


def test_diffusion_samples_through_the_scheduler_attribute_our_proxy_replaces():
    """denoisers.DiffusionDenoiser replaces `policy.diffusion.noise_scheduler` with _GuidedDDIM for a
    guided decode and sets `num_inference_steps`; LeRobot's loop must read both at every call."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionModel, DiffusionPolicy

    source = _source(DiffusionModel.conditional_sample)
    for needle in ("self.noise_scheduler.set_timesteps(self.num_inference_steps)", "self.noise_scheduler.step(",
                   "self.noise_scheduler.timesteps"):
        assert needle in source, f"seam moved: DiffusionModel.conditional_sample no longer has `{needle}` (steering/denoisers.py)"
    assert "self.diffusion = DiffusionModel(" in _source(DiffusionPolicy), (
        "seam moved: DiffusionPolicy no longer keeps its model in `.diffusion` (steering/denoisers.py)"
    )
    assert "noise" in _params(DiffusionPolicy.predict_action_chunk), (
        "seam moved: DiffusionPolicy.predict_action_chunk lost `noise` (the steering seam itself)"
    )


def test_ddim_previous_timestep_rule_matches_the_scheduler_proxy():
    """steering/denoisers.py rebuilds a guided DDIM step at t - num_train_timesteps // N, the rule
    of diffusers' DDIMScheduler.step that LeRobot's diffusion policy samples with."""
    from diffusers import DDIMScheduler

    source = _source(DDIMScheduler.step)
    assert "timestep - self.config.num_train_timesteps // self.num_inference_steps" in source, (
        "seam moved: DDIMScheduler.step changed its previous-timestep rule (steering/denoisers.py copies it)"
    )
    # The same rule, by behaviour: with eta = 0 the step is sqrt(a_prev) x0 + sqrt(1 - a_prev) eps,
    # with a_prev at the previous timestep as _GuidedDDIM computes it (final_alpha_cumprod below 0).
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    scheduler.set_timesteps(7)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 3, generator=g)
    for t in scheduler.timesteps:
        eps = torch.randn(2, 4, 3, generator=g)
        out = scheduler.step(eps, t, sample)
        prev_t = int(t) - scheduler.config.num_train_timesteps // 7
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        eps_hat = (sample - scheduler.alphas_cumprod[int(t)].sqrt() * out.pred_original_sample) / (
            1 - scheduler.alphas_cumprod[int(t)]).sqrt()
        expected = a_prev.sqrt() * out.pred_original_sample + (1 - a_prev).sqrt() * eps_hat
        torch.testing.assert_close(out.prev_sample, expected, msg=(
            "seam moved: DDIMScheduler.step no longer steps to a_prev at t - num_train_timesteps // N "
            "(steering/denoisers.py _GuidedDDIM scales its shift by sqrt(a_prev))"))
        sample = out.prev_sample


# ------------------------------------------------------------------------------ dataset columns


@pytest.mark.parametrize("column", ["next.reward", "next.success", "next.done"])
def test_generated_dataset_columns_are_the_ones_the_chunk_mdp_reads(column):
    """The chunk MDP reads rewards and successes from these frame columns (policies/common)."""
    from lerobot_steer.policies.common.config import FrozenBaseConfig
    from lerobot_steer.sim.generate import dataset_features
    from lerobot_steer.sim.pick_place_env import PickPlaceConfig

    features = dataset_features(PickPlaceConfig(obs_type="state"))
    assert column in features, f"the generator no longer writes {column}"
    assert FrozenBaseConfig.reward_key == "next.reward"


@pytest.fixture
def success_dataset(tmp_path):
    """A LeRobot dataset written by LeRobot's own writer: episodes 0 and 2 succeed, 1 does not."""
    from helpers_bases import write_success_dataset

    return write_success_dataset(tmp_path / "ds", "local/seam_success", frames_per_episode=3)


def test_dataset_files_hold_the_columns_episode_success_reads(success_dataset):
    """frozen_base.episode_success reads `episode_index` and `next.success` from <root>/data/**/*.parquet
    (LeRobot 0.6.1's loaded episode metadata has no per-episode `stats/next.success/...` columns)."""
    import pyarrow.parquet as pq

    files = sorted(Path(success_dataset.root).glob("data/**/*.parquet"))
    assert files, f"seam moved: no data/**/*.parquet under {success_dataset.root} (frozen_base.episode_success)"
    names = set(pq.read_schema(files[0]).names)
    assert {"episode_index", "next.success"} <= names, (
        f"seam moved: the data files' columns are {sorted(names)} (frozen_base.episode_success reads "
        "'episode_index' and the feature name 'next.success' verbatim)"
    )
    assert "next.success" in success_dataset.features


def test_reward_from_success_refuses_to_guess_when_the_success_record_cannot_be_read(success_dataset):
    """A declared next.success column missing from the data, or a batch without episode_index, must
    raise: silently counting every episode a success is the failure this guards against."""
    import pyarrow.parquet as pq

    from lerobot_steer.policies.common.frozen_base import FrozenBasePolicyMixin, episode_success

    assert episode_success(success_dataset).tolist() == [True, False, True]

    host = FrozenBasePolicyMixin()
    host._episode_success = episode_success(success_dataset)
    with pytest.raises(ValueError, match="episode_index"):
        host._success_of({}, 2, "cpu")

    for file in Path(success_dataset.root).glob("data/**/*.parquet"):
        pq.write_table(pq.read_table(file).drop_columns(["next.success"]), file)
    with pytest.raises(ValueError, match=r"no next\.success column"):
        episode_success(success_dataset)


# ------------------------------------------------------------- policies/common/vla_rl.py (pi0_rl, ...)

_VLA_MODELS = [
    ("lerobot.policies.pi0.modeling_pi0", "PI0Pytorch", "PI0Policy", "paligemma_with_expert",
     ["images", "img_masks", "lang_tokens", "lang_masks", "state", "noise"]),
    ("lerobot.policies.pi05.modeling_pi05", "PI05Pytorch", "PI05Policy", "paligemma_with_expert",
     ["images", "img_masks", "tokens", "masks", "noise"]),
    ("lerobot.policies.smolvla.modeling_smolvla", "VLAFlowMatching", "SmolVLAPolicy", "vlm_with_expert",
     ["images", "img_masks", "lang_tokens", "lang_masks", "state", "noise"]),
]


@pytest.mark.parametrize(("module", "model_cls", "policy_cls", "vlm", "args"), _VLA_MODELS)
def test_vla_sample_actions_is_the_chain_seam_the_rl_policies_drive(module, model_cls, policy_cls, vlm, args):
    """VLARLPolicyMixin runs `model.sample_actions(*model_inputs, noise=...)` with its `@torch.no_grad`
    unwrapped (inspect.unwrap, so PPO's re-evaluation has gradients), reads the prefix pass from
    `embed_prefix` and `<vlm>.forward(inputs_embeds=[prefix, None])`, and each step's expert
    features from the input of `action_out_proj` in `denoise_step`."""
    import dataclasses

    owner = importlib.import_module(module)
    model, policy = getattr(owner, model_cls), getattr(owner, policy_cls)
    params = _params(model.sample_actions)
    assert params[1: len(args) + 1] == args, (
        f"seam moved: {model_cls}.sample_actions takes {params[1:]} (vla_rl model_inputs builds {args[:-1]} + noise)"
    )
    raw = inspect.unwrap(model.sample_actions)
    if "@torch.no_grad" in _source(model.sample_actions):
        assert raw is not model.sample_actions, (
            f"seam moved: {model_cls}.sample_actions' no_grad can no longer be unwrapped (evaluate_chain needs "
            "gradients; tests/test_vla_rl.py checks they reach the VLM)"
        )
    sample = _source(raw)
    for needle in ("self.embed_prefix(", f"self.{vlm}.forward(", "inputs_embeds=[prefix_embs, None]", "euler_integrate("):
        assert needle in sample, f"seam moved: {model_cls}.sample_actions no longer has `{needle}` (vla_rl._ModelTaps)"
    assert "self.action_out_proj(" in _source(model.denoise_step), (
        f"seam moved: {model_cls}.denoise_step no longer ends in action_out_proj (the Flow-Noise head reads its input)"
    )
    assert "return embs, pad_masks, att_masks" in _source(model.embed_prefix), (
        f"seam moved: {model_cls}.embed_prefix no longer returns (embs, pad_masks, att_masks) (value head pooling)"
    )
    assert hasattr(model, "sample_noise"), f"seam moved: {model_cls}.sample_noise is gone"
    assert "train_expert_only" in {f.name for f in dataclasses.fields(policy.config_class)}, (
        f"seam moved: {policy.config_class.__name__}.train_expert_only is gone (vla_rl_config maps `trainable` onto it)"
    )


def test_vla_policies_decode_through_the_methods_the_rl_policies_override():
    """pi0 / pi05 select_action decodes through predict_action_chunk, SmolVLA's through _get_action_chunk:
    the RL policies switch in the stochastic chain there. Their batch helpers build model_inputs."""
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    for policy in (PI0Policy, PI05Policy):
        assert "self.predict_action_chunk(" in _source(policy.select_action), (
            f"seam moved: {policy.__name__}.select_action no longer calls predict_action_chunk (modeling_pi0_rl)"
        )
        assert hasattr(policy, "_preprocess_images"), f"seam moved: {policy.__name__}._preprocess_images is gone"
    assert hasattr(PI0Policy, "prepare_state") and hasattr(PI0Policy, "_fix_pytorch_state_dict_keys")
    for method in (SmolVLAPolicy.select_action, SmolVLAPolicy.predict_action_chunk):
        assert "self._get_action_chunk(" in _source(method), (
            f"seam moved: SmolVLAPolicy.{method.__name__} no longer calls _get_action_chunk (modeling_smolvla_rl)"
        )
    for name in ("prepare_images", "prepare_state"):
        assert hasattr(SmolVLAPolicy, name), f"seam moved: SmolVLAPolicy.{name} is gone (modeling_smolvla_rl)"


def test_pretrained_policy_from_pretrained_builds_through_cls_and_loads_strictly_on_request():
    """VLARLPolicyMixin.from_pretrained calls PreTrainedPolicy.from_pretrained (not PI0Policy's, which
    renames keys and swallows load errors) with strict=True, and relies on it building `cls(config, ...)`."""
    from lerobot.policies.pretrained import PreTrainedPolicy

    assert "strict" in _params(PreTrainedPolicy.from_pretrained)
    source = _source(PreTrainedPolicy.from_pretrained)
    assert "instance = cls(config, **kwargs)" in source and "_load_as_safetensor(instance, model_file" in source, (
        "seam moved: PreTrainedPolicy.from_pretrained no longer builds cls(config) and loads model.safetensors into it"
    )
