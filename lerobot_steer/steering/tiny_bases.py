"""Tiny LeRobot base policies built offline from config (random weights): tests and benchmarks.

Steering code has to be exercised on LeRobot's real policy classes, not on stand-ins, yet the real
checkpoints are gigabytes on the Hub. These builders make the same classes small enough for a CPU,
with no download:

* `tiny_diffusion`: DiffusionPolicy with a small U-Net and DDIM;
* `tiny_vla("smolvla" | "pi0" | "pi05", vlm_dir)`: SmolVLA over a tiny local SmolVLM config, pi0/pi05
  with one-layer 64-wide Gemmas and a one-layer 32-wide vision tower. They must be constructed
  inside `offline_vla_builds(vlm_dir)`, which shrinks what LeRobot hard-codes and stubs what it
  would fetch (and saves a word-level tokenizer into `vlm_dir`, so SmolVLA's own preprocessor
  tokenizes task strings offline). Once built, the policies run outside the context;
* `tiny_sim_smolvla(vlm_dir)`: that SmolVLA shaped for the SO-101 sim's joints and one camera, with
  LeRobot's own SmolVLA processors (on-policy RL end to end on the sim).

This lives in the package rather than under tests/ so that `scripts/benchmark_dsrl.py` uses exactly
the bases the tests check; it has no pytest dependency. Weights are random: fine for shapes,
determinism and latency, meaningless for behaviour.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_policy_config, make_pre_post_processors
from lerobot.processor import make_default_pre_post_processors

STATE, ENV, CAMERA, ACTION = (
    "observation.state",
    "observation.environment_state",
    "observation.images.front",
    "action",
)
TOKENS, TOKEN_MASK = "observation.language.tokens", "observation.language.attention_mask"


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    """Set `owner.name = value` for the duration of the context, then restore it."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _save_tiny_smolvlm(vlm_dir: Path) -> None:
    """The tiny SmolVLM config and the task-word tokenizer that `vlm_model_name=vlm_dir` loads."""
    import transformers

    transformers.SmolVLMConfig(
        text_config=dict(
            model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1000,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        scale_factor=2,
    ).save_pretrained(vlm_dir)
    save_tiny_tokenizer(vlm_dir)


TINY_VLM_DIR_ENV = "LEROBOT_STEER_TINY_VLM_DIR"
_PROCESS_CONTEXTS: list = []


def enter_offline_vla_builds() -> None:
    """`offline_vla_builds($LEROBOT_STEER_TINY_VLM_DIR)` for the rest of this process: a worker process's
    setup (Ray's `worker_process_setup_hook` names this function), so tiny VLAs build there too, from the
    folder the parent wrote."""
    context = offline_vla_builds(Path(os.environ[TINY_VLM_DIR_ENV]))
    context.__enter__()
    _PROCESS_CONTEXTS.append(context)  # a context manager collected as garbage would undo its patches


@contextlib.contextmanager
def offline_vla_builds(vlm_dir: Path) -> Iterator[Path]:
    """Let SmolVLA, pi0 and pi05 build tiny with no Hub access while the context is active.

    SmolVLA: a tiny SmolVLM config is saved into `vlm_dir` (pass it as `vlm_model_name`), and its
    AutoProcessor, loaded only for two image-token ids, is stubbed. pi0/pi05: LeRobot hard-codes the
    Gemma sizes and the PaliGemma vision tower; both are shrunk. Everything is restored on exit.
    """
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    vlm_dir = Path(vlm_dir)
    if not (vlm_dir / "config.json").is_file():  # another process (a worker of this one) may have written it
        _save_tiny_smolvlm(vlm_dir)

    def tiny_paligemma(base_cls):
        class TinyPaliGemma(base_cls):
            def __init__(self, config):
                config.text_config.vocab_size = 1000
                vision = config.vision_config
                vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = 32, 64, 1
                vision.num_attention_heads, vision.patch_size = 2, 14
                vision.projection_dim = config.text_config.hidden_size
                super().__init__(config)

        return TinyPaliGemma

    tiny_gemma = modeling_pi0.GemmaConfig(width=64, depth=1, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16)
    with contextlib.ExitStack() as stack:
        stack.enter_context(offline_smolvla_processor())
        for module in (modeling_pi0, modeling_pi05):
            stack.enter_context(_patched(module, "get_gemma_config", lambda variant: tiny_gemma))
            stack.enter_context(_patched(module, "PaliGemmaForConditionalGenerationWithPiGemma",
                                         tiny_paligemma(module.PaliGemmaForConditionalGenerationWithPiGemma)))
        yield vlm_dir


def offline_smolvla_processor() -> contextlib.AbstractContextManager:
    """SmolVLA loads an AutoProcessor only for two image-token ids: stub it (ids within any SmolVLM
    vocabulary here, tiny or full-size) so that a SmolVLA builds from a local config with no download."""
    from lerobot.policies.smolvla import smolvlm_with_expert

    token_ids = types.SimpleNamespace(fake_image_token_id=998, global_image_token_id=999)
    stub_processor = types.SimpleNamespace(from_pretrained=lambda *a, **k: types.SimpleNamespace(tokenizer=token_ids))
    return _patched(smolvlm_with_expert, "AutoProcessor", stub_processor)


TOKENIZER_WORDS = ("[PAD]", "[UNK]", "pick", "up", "the", "red", "block", "and", "place", "it", "in", "blue", "bowl", ".")


def save_tiny_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer of the sim's task words (unknown words -> [UNK]) saved into `folder`, where
    `AutoTokenizer.from_pretrained(folder)` finds it: SmolVLA's own preprocessor (LeRobot's
    TokenizerProcessorStep on `vlm_model_name`) then tokenizes task strings offline. Ids stay below
    the tiny SmolVLM's vocabulary (1000)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TOKENIZER_WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    return Path(folder)


def stats_for(features: dict[str, PolicyFeature]) -> dict[str, dict[str, torch.Tensor]]:
    """Statistics for every normalization mode LeRobot may use (MIN_MAX, MEAN_STD, QUANTILES)."""
    stats = {}
    for key, ft in features.items():
        shape = (ft.shape[0], 1, 1) if ft.type is FeatureType.VISUAL else ft.shape
        stats[key] = {
            "min": -torch.ones(shape), "max": torch.ones(shape), "q01": -torch.ones(shape), "q99": torch.ones(shape),
            "mean": torch.full(shape, 0.1), "std": torch.full(shape, 2.0),
        }
    return stats


def tiny_diffusion(inputs: dict[str, PolicyFeature] | None = None, action_dim: int = 2, stats=None, **overrides):
    """A tiny DDIM DiffusionPolicy and LeRobot's processors for it: (policy, preprocessor, postprocessor).

    `overrides` are DiffusionConfig fields (e.g. `horizon=16, down_dims=(64, 128, 256)`).
    """
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    inputs = inputs or {STATE: PolicyFeature(FeatureType.STATE, (4,)), ENV: PolicyFeature(FeatureType.ENV, (3,))}
    kwargs = dict(
        device="cpu", n_obs_steps=2, horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
        diffusion_step_embed_dim=8, pretrained_backbone_weights=None, use_group_norm=True,
        spatial_softmax_num_keypoints=4, noise_scheduler_type="DDIM", num_inference_steps=3,
    )
    kwargs.update(overrides)
    outputs = {ACTION: PolicyFeature(FeatureType.ACTION, (action_dim,))}
    config = make_policy_config("diffusion", input_features=inputs, output_features=outputs, **kwargs)
    policy = DiffusionPolicy(config)
    pre, post = make_pre_post_processors(config, dataset_stats=stats or stats_for({**inputs, **outputs}))
    return policy, pre, post


def tiny_vla(kind: str, vlm_dir: Path):
    """A tiny smolvla / pi0 / pi05 with LeRobot's default processors (their own need a Hub tokenizer).

    Call inside `offline_vla_builds(vlm_dir)`. Inputs: a 6-d state and one 32x32 camera; 6-d actions,
    chunks of 8 with 4 executed, 3 denoising steps.
    """
    from lerobot.policies.factory import get_policy_class

    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,)), CAMERA: PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    outputs = {ACTION: PolicyFeature(FeatureType.ACTION, (6,))}
    common = dict(device="cpu", chunk_size=8, n_action_steps=4, input_features=inputs, output_features=outputs)
    if kind == "smolvla":
        config = make_policy_config("smolvla", vlm_model_name=str(vlm_dir), load_vlm_weights=False, num_vlm_layers=4,
                                    resize_imgs_with_padding=(64, 64), num_steps=3, **common)
    else:
        config = make_policy_config(kind, image_resolution=(28, 28), num_inference_steps=3, **common)
    policy = get_policy_class(kind)(config)
    pre, post = make_default_pre_post_processors(config, dataset_stats=stats_for({**inputs, **outputs}))
    return policy, pre, post


def tiny_sim_smolvla(vlm_dir: Path, camera: str = CAMERA, **overrides):
    """A tiny SmolVLA shaped for the SO-101 sim's pixels: joints (6) and one camera in (32 x 32 at the
    policy, resized to 64 x 64 inside it), 6 joint targets out, with LeRobot's own SmolVLA processors
    (the task string is tokenized by `save_tiny_tokenizer`'s tokenizer) and the arm's joint range as
    state / action statistics. Call inside `offline_vla_builds(vlm_dir)`. (policy, pre, post).

    `overrides` are SmolVLAConfig fields (defaults: chunks of 8, 4 executed, 3 denoising steps)."""
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from lerobot_steer.sim.units import JOINT_LIMITS_LEROBOT

    limits = torch.as_tensor(JOINT_LIMITS_LEROBOT, dtype=torch.float32)
    low, high = limits[:, 0], limits[:, 1]
    joints = {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / 4, "q01": low, "q99": high}
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,)), camera: PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    outputs = {ACTION: PolicyFeature(FeatureType.ACTION, (6,))}
    kwargs = dict(device="cpu", chunk_size=8, n_action_steps=4, num_steps=3, vlm_model_name=str(vlm_dir),
                  load_vlm_weights=False, num_vlm_layers=4, resize_imgs_with_padding=(64, 64))
    kwargs.update(overrides)
    config = make_policy_config("smolvla", input_features=inputs, output_features=outputs, **kwargs)
    policy = SmolVLAPolicy(config)
    stats = {STATE: joints, ACTION: joints, **stats_for({camera: inputs[camera]})}
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    return policy, pre, post


def batch_maker(policy, num_tokens: int = 5) -> Callable[[int, int], dict]:
    """Random normalized single-step observations for `policy` (`num_tokens` language tokens for VLA bases)."""
    config = policy.config

    def make_batch(batch_size: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        batch = {}
        for key, ft in config.input_features.items():
            if "empty_camera" in key:
                continue
            if ft.type is FeatureType.VISUAL:
                batch[key] = torch.rand(batch_size, *ft.shape, generator=g)
            else:
                batch[key] = torch.randn(batch_size, *ft.shape, generator=g)
        if config.type != "diffusion":
            batch[TOKENS] = torch.randint(0, 900, (batch_size, num_tokens), generator=g)
            batch[TOKEN_MASK] = torch.ones(batch_size, num_tokens, dtype=torch.bool)
        return batch

    return make_batch


def save_base(policy, pre, post, folder: Path) -> Path:
    """A base checkpoint folder as lerobot-train writes it (config, weights, both processors)."""
    policy.save_pretrained(folder)
    pre.save_pretrained(folder)
    post.save_pretrained(folder)
    return folder


def sim_state_diffusion(**overrides):
    """A random-weight diffusion base shaped for the SO-101 sim's state observations, as `make demo`
    trains it: joints (6) + block/bowl poses (10) in, joint targets (6) out, normalized with the arm's
    joint range (so its random chunks stay plausible in the sim). (policy, preprocessor, postprocessor).

    `overrides` are DiffusionConfig fields; the defaults are the demo's sizes (U-Net 64-128-256,
    horizon 16, 8 executed steps, 2 observation steps, DDIM 10 steps).
    """
    from lerobot_steer.sim.units import JOINT_LIMITS_LEROBOT

    limits = torch.as_tensor(JOINT_LIMITS_LEROBOT, dtype=torch.float32)
    low, high = limits[:, 0], limits[:, 1]
    joints = {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / 4, "q01": low, "q99": high}
    poses = {"min": -torch.ones(10), "max": torch.ones(10), "mean": torch.zeros(10), "std": torch.ones(10),
             "q01": -torch.ones(10), "q99": torch.ones(10)}
    inputs = {STATE: PolicyFeature(FeatureType.STATE, (6,)), ENV: PolicyFeature(FeatureType.ENV, (10,))}
    sizes = dict(horizon=16, n_action_steps=8, down_dims=(64, 128, 256), kernel_size=5, n_groups=8,
                 diffusion_step_embed_dim=128, num_inference_steps=10)
    sizes.update(overrides)
    return tiny_diffusion(inputs, action_dim=6, stats={STATE: joints, ENV: poses, ACTION: joints}, **sizes)
