"""LeRobot's generic policy checks, run against our policy types.

LeRobot v0.6.1 checks every built-in policy with the same handful of generic tests
(tests/policies/test_policies.py): the factory finds the policy and config classes by name, a config
with only its defaults (plus the dataset's features) builds a policy, `save_pretrained` /
`from_pretrained` round-trip every parameter (also through the FSDP path that passes a gathered
state dict), `make_policy` on a real dataset gives a `PreTrainedPolicy` whose `forward` and
`select_action` leave their inputs untouched and whose action steps the env, and the processor
factory builds the pipelines. Those checks are written again here for `dsrl` and `dyna_vgd`, in both
dyna_vgd modes; a steering policy needs a base, so the frozen variants get a tiny diffusion base
saved to disk, shaped for the SO-101 sim dataset the conftest generates.
"""

from __future__ import annotations

import inspect
from copy import deepcopy

import pytest
import torch
from helpers_bases import one_thread  # noqa: F401  (pytest fixture)

from lerobot.configs.default import DatasetConfig
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.train import TrainPipelineConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.datasets import make_dataset
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
from lerobot.envs.factory import make_env, make_env_pre_post_processors
from lerobot.envs.utils import close_envs, preprocess_observation
from lerobot.optim.factory import make_optimizer_and_scheduler
from lerobot.policies.factory import (
    get_policy_class,
    make_policy,
    make_policy_config,
    make_pre_post_processors,
)
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from lerobot.utils.feature_utils import dataset_to_policy_features

from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering.tiny_bases import save_base, sim_state_diffusion

REPO_ID = "local/so101_state"  # the conftest's generated state dataset
TYPES = ["dsrl", "dyna_vgd"]
# (type, what the type needs besides its defaults): a frozen base, or dyna_vgd's behaviour-cloned one.
VARIANTS = {"dsrl": ("dsrl", "frozen"), "dyna_vgd": ("dyna_vgd", "frozen"), "dyna_vgd_bc": ("dyna_vgd", "bc")}
TINY_BASE = dict(horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
                 diffusion_step_embed_dim=8, num_inference_steps=2)
TINY_BC = {"diffusion": dict(horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
                             diffusion_step_embed_dim=8, num_inference_steps=2, pretrained_backbone_weights=None)}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A random-weight diffusion base for the sim's state observations, saved as lerobot-train does."""
    torch.manual_seed(0)
    return save_base(*sim_state_diffusion(**TINY_BASE), tmp_path_factory.mktemp("contract_base"))


@pytest.fixture(scope="module")
def dataset_meta(state_dataset):
    root, _ = state_dataset
    return LeRobotDatasetMetadata(REPO_ID, root=root)


def _policy_config(variant: str, base_checkpoint, **kwargs) -> PreTrainedConfig:
    """`make_policy_config(type)` with only what the variant cannot do without (and small critics)."""
    name, mode = VARIANTS[variant]
    needs = {"base_policy_path": str(base_checkpoint)} if mode == "frozen" else {"base_mode": "bc"}
    if mode == "bc":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        needs["diffusion"] = DiffusionConfig(device="cpu", **TINY_BC["diffusion"])
    return make_policy_config(name, device="cpu", hidden_dims=[32, 32], **needs, **kwargs)


def _with_dataset_features(config: PreTrainedConfig, dataset_meta) -> PreTrainedConfig:
    """Input/output features from the dataset, as LeRobot's generic tests (and make_policy) set them."""
    features = dataset_to_policy_features(dataset_meta.features)
    config.output_features = {k: ft for k, ft in features.items() if ft.type is FeatureType.ACTION}
    config.input_features = {k: ft for k, ft in features.items() if k not in config.output_features}
    return config


def _built_policy(variant: str, base_checkpoint, dataset_meta) -> tuple[type[PreTrainedPolicy], PreTrainedPolicy]:
    """The variant's class, found by name as LeRobot finds it, and a policy built from its config with
    the dataset's features."""
    name, _ = VARIANTS[variant]
    policy_cls = get_policy_class(name)
    return policy_cls, policy_cls(_with_dataset_features(_policy_config(variant, base_checkpoint), dataset_meta))


def _assert_same_weights(policy, loaded):
    torch.testing.assert_close(list(policy.parameters()), list(loaded.parameters()), rtol=0, atol=0)
    state, loaded_state = policy.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for key, value in state.items():
        torch.testing.assert_close(loaded_state[key], value, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------------ factory lookups


@pytest.mark.parametrize("name", TYPES)
def test_get_policy_and_config_classes(name):
    """LeRobot's factory finds both classes by the registered name alone."""
    policy_cls = get_policy_class(name)
    config = make_policy_config(name)
    assert policy_cls.name == name
    assert type(config) is policy_cls.config_class and config.type == name
    # LeRobot compares the config with the annotation of __init__'s `config`; our modeling modules use
    # postponed annotations (PEP 563), so the annotation is resolved before the comparison.
    annotation = inspect.signature(policy_cls.__init__, eval_str=True).parameters["config"].annotation
    assert issubclass(type(config), annotation)


# ------------------------------------------------------------------------------ construction


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_policy_defaults(variant, base_checkpoint, dataset_meta):
    """A config with its defaults plus the dataset's features (and the base it needs) builds a policy."""
    name, _ = VARIANTS[variant]
    config = _with_dataset_features(_policy_config(variant, base_checkpoint), dataset_meta)
    policy = get_policy_class(name)(config)
    assert isinstance(policy, PreTrainedPolicy)


@pytest.mark.parametrize("multikey", [True, False])
@pytest.mark.parametrize("name", TYPES)
def test_multikey_construction(name, multikey):
    """robot_state_feature / action_feature pick the full `observation.state` / `action` among finer keys."""
    inputs = {OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(10,))}
    outputs = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(5,))}
    if multikey:
        inputs = {f"{OBS_STATE}.subset1": PolicyFeature(type=FeatureType.STATE, shape=(5,)),
                  f"{OBS_STATE}.subset2": PolicyFeature(type=FeatureType.STATE, shape=(5,)), **inputs}
        outputs = {"action.first_three_motors": PolicyFeature(type=FeatureType.ACTION, shape=(3,)),
                   "action.last_two_motors": PolicyFeature(type=FeatureType.ACTION, shape=(2,)), **outputs}
    config = make_policy_config(name, input_features=inputs, output_features=outputs)
    assert config.robot_state_feature == inputs[OBS_STATE]
    assert config.action_feature == outputs[ACTION]


# ------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_and_load_pretrained(variant, base_checkpoint, dataset_meta, tmp_path):
    policy_cls, policy = _built_policy(variant, base_checkpoint, dataset_meta)
    config = policy.config
    policy.to(config.device)
    save_dir = tmp_path / f"test_save_and_load_pretrained_{policy_cls.__name__}"
    policy.save_pretrained(save_dir)
    _assert_same_weights(policy, policy_cls.from_pretrained(save_dir, config=config))
    _assert_same_weights(policy, policy_cls.from_pretrained(save_dir))  # config.json alone

    # lerobot-eval: `--policy.path` becomes config.pretrained_path, and make_policy gets the env.
    loaded_config = PreTrainedConfig.from_pretrained(save_dir)
    loaded_config.pretrained_path = save_dir
    _assert_same_weights(policy, make_policy(loaded_config, env_cfg=SO101SimEnvConfig(obs_type="state")))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_pretrained_with_state_dict(variant, base_checkpoint, dataset_meta, tmp_path):
    """The FSDP checkpoint path: save_pretrained with a pre-gathered state dict, one unsharded file."""
    from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE

    policy_cls, policy = _built_policy(variant, base_checkpoint, dataset_meta)
    config = policy.config
    save_dir = tmp_path / "fsdp_state_dict"
    policy.save_pretrained(save_dir, state_dict=policy.state_dict())
    assert (save_dir / SAFETENSORS_SINGLE_FILE).is_file()
    assert not (save_dir / f"{SAFETENSORS_SINGLE_FILE}.index.json").exists()
    _assert_same_weights(policy, policy_cls.from_pretrained(save_dir, config=config))


# ------------------------------------------------------------------------------ processors


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_processor_factory_builds_lerobots_pipelines_and_reloads_them_with_overrides(
    variant, base_checkpoint, dataset_meta, tmp_path
):
    """make_pre_post_processors(config, stats) finds our factory by type; the saved pipelines keep
    LeRobot's step names and reload through `pretrained_path` with lerobot-eval's device override."""
    config = _with_dataset_features(_policy_config(variant, base_checkpoint), dataset_meta)
    pre, post = make_pre_post_processors(config, dataset_stats=dataset_meta.stats)
    pre_names = [type(step).__name__ for step in pre.steps]
    post_names = [type(step).__name__ for step in post.steps]
    for step in ("RenameObservationsProcessorStep", "DeviceProcessorStep", "NormalizerProcessorStep"):
        assert step in pre_names, pre_names
    for step in ("UnnormalizerProcessorStep", "DeviceProcessorStep"):
        assert step in post_names, post_names

    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)
    pre2, post2 = make_pre_post_processors(config, pretrained_path=str(tmp_path),
                                           preprocessor_overrides={"device_processor": {"device": "cpu"}})
    observation = {OBS_STATE: torch.randn(6), "observation.environment_state": torch.randn(10)}
    for key, value in pre(dict(observation)).items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(pre2(dict(observation))[key], value, rtol=0, atol=0)
    chunk = torch.randn(1, 6)
    torch.testing.assert_close(post2(chunk), post(chunk), rtol=0, atol=0)


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_policy(variant, base_checkpoint, state_dataset):
    """make_policy on a real dataset; forward trains (every trainable parameter gets a gradient and
    LeRobot's optimizer steps) without mutating the batch; select_action leaves the observation
    untouched and its action steps the env."""
    root, _ = state_dataset
    cfg = TrainPipelineConfig(
        dataset=DatasetConfig(repo_id=REPO_ID, root=str(root)),
        policy=_policy_config(variant, base_checkpoint, push_to_hub=False),
        env=SO101SimEnvConfig(obs_type="state", episode_length=20),
    )
    cfg.validate()

    dataset = make_dataset(cfg)
    # lerobot-train's order: the policy first (make_policy sets the features from the dataset), then
    # the processors. (LeRobot's generic test builds processors first, with no features and no stats;
    # dyna_vgd's bc-mode factory refuses that, since its normalizers would then normalize nothing.)
    policy = make_policy(cfg.policy, ds_meta=dataset.meta)
    preprocessor, postprocessor = make_pre_post_processors(cfg.policy, dataset_stats=dataset.meta.stats)
    assert isinstance(policy, PreTrainedPolicy)

    loader = torch.utils.data.DataLoader(dataset, num_workers=0, batch_size=2, shuffle=True, drop_last=True)
    batch = preprocessor(next(iter(loader)))
    batch_ = deepcopy(batch)
    policy.train()
    loss, output = policy.forward(batch)
    assert set(batch) == set(batch_), "Batch keys are not the same after a forward pass."
    assert all(
        torch.equal(batch[k], batch_[k]) if isinstance(batch[k], torch.Tensor) else batch[k] == batch_[k]
        for k in batch
    ), "Batch values are not the same after a forward pass."
    assert loss.ndim == 0 and torch.isfinite(loss) and (output is None or isinstance(output, dict))

    optimizer, _ = make_optimizer_and_scheduler(cfg, policy)
    loss.backward()
    no_grad = [n for n, p in policy.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"trainable parameters the loss does not reach: {no_grad[:5]}"
    optimizer.step()
    optimizer.zero_grad()

    policy.reset()
    envs = make_env(cfg.env, n_envs=1)
    env_pre, env_post = make_env_pre_post_processors(cfg.env, cfg.policy)
    env = envs[next(iter(envs))][0]
    observation, _ = env.reset(seed=cfg.seed)
    observation = preprocessor(env_pre(preprocess_observation(observation)))
    observation_ = deepcopy(observation)
    with torch.inference_mode():
        action = policy.select_action(observation)
    assert set(observation) == set(observation_), "Observation batch keys are not the same after a forward pass."
    assert all(
        torch.equal(observation[k], observation_[k]) if isinstance(observation[k], torch.Tensor)
        else observation[k] == observation_[k]
        for k in observation
    ), "Observation batch values are not the same after a forward pass."
    action = env_post({ACTION: postprocessor(action)})[ACTION]
    assert action.shape == (1, 6)
    env.step(action.cpu().numpy())
    close_envs(envs)


@pytest.mark.parametrize("name", TYPES)
def test_without_a_base_the_training_flow_fails_naming_every_way_to_give_one(name, state_dataset):
    """`lerobot-train --policy.type=<t> --dataset.*` with no base flags stops at make_dataset (the
    delta indices need the base), naming the flag(s) that fix it; dyna_vgd names both of its modes."""
    root, _ = state_dataset
    cfg = TrainPipelineConfig(dataset=DatasetConfig(repo_id=REPO_ID, root=str(root)),
                              policy=make_policy_config(name, device="cpu", push_to_hub=False))
    cfg.validate()
    with pytest.raises(ValueError) as error:
        make_dataset(cfg)
    assert "--policy.base_policy_path=<" in str(error.value)
    assert ("--policy.base_mode=bc" in str(error.value)) == (name == "dyna_vgd")
    with pytest.raises(ValueError, match="--policy.base_policy_path=<") as error:
        make_pre_post_processors(cfg.policy, dataset_stats=None)
    assert ("--policy.base_mode=bc" in str(error.value)) == (name == "dyna_vgd")
