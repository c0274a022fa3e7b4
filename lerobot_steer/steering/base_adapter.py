"""The frozen base policy every steering method drives: noise in, action chunk out.

DSRL learns a policy over the base's initial noise, VGD shifts the base's denoising trajectory along
a critic's gradient. Both need the same three operations on a frozen LeRobot policy, written once
here and tested against LeRobot's real classes:

* `noise_shape(batch_size)`: the shape of the initial noise, in the base's normalized action space;
* `sample(batch, noise)`: the deterministic action chunk the base executes for that noise;
* `guided_sample(batch, noise, guide)`: the same decode with a callback at chosen denoising steps.

Batches are in the base's input space, i.e. after its preprocessor (`adapter.preprocess(obs)`), and
chunks are in its normalized action space, before its postprocessor (`adapter.postprocess(chunk)`).
The family-specific parts (noise layout, DDIM switch, guidance seams) live in `denoisers.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.processor import PolicyProcessorPipeline
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from lerobot_steer.cli_errors import UserError

from .denoisers import Guide, UnsupportedBasePolicyError, make_denoiser, noise_support_problem
from .features import FeatureMismatchError, feature_mismatches, to_policy_features
from .obs_history import ObservationHistory

CONFIG_NAME = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PREPROCESSOR_FILE = f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json"
POSTPROCESSOR_FILE = f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json"


class CheckpointError(UserError, ValueError):
    """A base-policy checkpoint is missing, incomplete or unreadable (the message names the fix)."""


class BasePolicyAdapter(nn.Module):
    """A LeRobot policy seen as a deterministic map (observation, noise) -> action chunk.

    By default (`frozen=True`) the base is put in eval mode with `requires_grad=False` and stays in
    eval mode even when a steering policy holding this adapter calls `.train()`: train-mode
    randomness (diffusion's random crop, dropout) would break "same noise -> same chunk". With
    `frozen=False` (a base trained by behaviour cloning inside the steering policy, dyna_vgd's
    `base_mode=bc`, policies/dyna_vgd/bc_base.py) the weights keep their gradients and the base
    follows `.train()`/`.eval()` so that its own loss runs in train mode; `sample`/`guided_sample`
    still decode in eval mode (and restore the previous mode), so the noise -> chunk map is the same
    deterministic one in both cases. Being an `nn.Module`, the adapter moves with `.to(device)` and the base's weights appear
    in the state dict of a policy that holds it.

    Observation history (diffusion, `n_obs_steps` > 1): pass either observations that already carry
    it, shaped (B, n_obs_steps, ...) as a LeRobot dataset with the base's `observation_delta_indices`
    delivers them (used as given, nothing remembered), or single steps shaped (B, ...) as an
    environment delivers them. Single steps are appended to the adapter's own per-environment
    history by `sample`/`guided_sample` and by `observe` (call it on the steps between two chunks),
    and `reset(done)` forgets it; the first observation after a reset fills the whole history, as in
    LeRobot's `select_action`. Flow-matching bases (pi0, pi05, smolvla) take single steps only.

    Attributes:
        policy: the wrapped LeRobot policy.
        preprocessor / postprocessor: its processor pipelines (None if not given).
        policy_type: the base's registered type ("diffusion", "pi0", ...).
        n_action_steps: length of the chunk `sample` returns (the part the base executes).
        chunk_length: length of the denoised chunk (diffusion `horizon`, VLA `chunk_size`).
        action_dim: the base's action dim.
        num_inference_steps: number of denoising steps of one decode.
    """

    def __init__(
        self,
        policy: PreTrainedPolicy,
        preprocessor: PolicyProcessorPipeline | None = None,
        postprocessor: PolicyProcessorPipeline | None = None,
        *,
        num_inference_steps: int | None = None,
        frozen: bool = True,
    ):
        super().__init__()
        self._denoiser = make_denoiser(policy)  # raises UnsupportedBasePolicyError first
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.frozen = frozen
        self._denoiser.configure(num_inference_steps)
        if frozen:
            policy.eval()
            policy.requires_grad_(False)
        self._history = ObservationHistory(policy.config.n_obs_steps, policy.config.input_features)

    # ----------------------------------------------------------------------------------- loading

    @classmethod
    def from_policy(
        cls,
        policy: PreTrainedPolicy,
        preprocessor: PolicyProcessorPipeline | None = None,
        postprocessor: PolicyProcessorPipeline | None = None,
        *,
        num_inference_steps: int | None = None,
        frozen: bool = True,
    ) -> BasePolicyAdapter:
        """Wrap an in-memory policy, switching a diffusion policy to DDIM sampling in place.

        frozen: True freezes the policy in place (requires_grad False, eval mode for good); False
            leaves its weights trainable and its train/eval mode to the caller (see the class doc).
        """
        return cls(policy, preprocessor, postprocessor, num_inference_steps=num_inference_steps, frozen=frozen)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        num_inference_steps: int | None = None,
        load_processors: bool = True,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
    ) -> BasePolicyAdapter:
        """Load a LeRobot checkpoint (a `pretrained_model/` folder or a Hub repo id) and its processors.

        A Hub repo is first fetched into the local cache (`revision` pins it), so both sources take
        the same path from there. The policy class comes from the `type` in config.json; the
        processors are the checkpoint's own saved pipelines, loaded from this folder explicitly
        (config.json of a fine-tuned model may point `pretrained_path` at its parent).

        Args:
            device: where to put the base and its preprocessor ("cpu", "cuda", ...); default: the
                checkpoint's configured device (LeRobot falls back to an available one).
            num_inference_steps: denoising steps per decode; default: the checkpoint's, except for a
                DDPM-trained diffusion base, which is switched to 10 DDIM steps.
            load_processors: False skips the processor files (for checkpoints saved without them).

        Raises:
            CheckpointError: missing/unreadable config.json, model.safetensors or processor files,
                or weights that do not load into the configured policy.
            UnsupportedBasePolicyError: the policy type cannot be driven by a given noise.
        """
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        folder = _resolve_checkpoint(path_or_repo_id, revision=revision, cache_dir=cache_dir, token=token)
        policy_type = _validate_checkpoint(folder, load_processors=load_processors)
        config = PreTrainedConfig.from_pretrained(folder)
        if device is not None:
            config.device = str(device)
        policy_cls = get_policy_class(policy_type)
        problem = noise_support_problem(policy_cls, policy_type)
        if problem is not None:  # before loading weights that may weigh gigabytes
            raise UnsupportedBasePolicyError(f"{folder}: {problem}")
        try:
            policy = policy_cls.from_pretrained(folder, config=config, strict=True)
        except ImportError:
            raise  # a missing optional dependency (lerobot[diffusion], [pi], ...) says so itself
        except Exception as e:
            raise CheckpointError(
                f"the weights in {folder / SAFETENSORS_FILE} do not load into a '{policy_type}' policy "
                f"built from {folder / CONFIG_NAME} ({type(e).__name__}: {e}). Save the policy again with "
                "policy.save_pretrained(dir) so that config.json and model.safetensors come from the same model."
            ) from e
        preprocessor = postprocessor = None
        if load_processors:
            overrides = {}
            if _pipeline_has_step(folder / PREPROCESSOR_FILE, "device_processor"):
                overrides = {"device_processor": {"device": config.device}}
            preprocessor, postprocessor = make_pre_post_processors(
                config, pretrained_path=str(folder), preprocessor_overrides=overrides
            )
        return cls(policy, preprocessor, postprocessor, num_inference_steps=num_inference_steps)

    # ------------------------------------------------------------------------------- properties

    @property
    def policy_type(self) -> str:
        return self._denoiser.policy_type

    @property
    def n_action_steps(self) -> int:
        return self._denoiser.n_action_steps

    @property
    def chunk_length(self) -> int:
        return self._denoiser.chunk_length

    @property
    def action_dim(self) -> int:
        return self._denoiser.action_dim

    @property
    def executed_start(self) -> int:
        """Index, on the noise's time axis, of the first executed step (diffusion: n_obs_steps - 1)."""
        return self._denoiser.executed_slice.start

    @property
    def num_inference_steps(self) -> int | None:
        return self._denoiser.num_inference_steps

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    # ---------------------------------------------------------------------------------- sampling

    def noise_shape(self, batch_size: int) -> tuple[int, int, int]:
        """Shape of the initial noise: diffusion (B, horizon, action_dim); pi0/pi05/smolvla
        (B, chunk_size, max_action_dim). Normalized action space, standard normal prior."""
        return self._denoiser.noise_shape(batch_size)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal initial noise of `noise_shape(batch_size)` on the base's device."""
        return torch.randn(
            self.noise_shape(batch_size),
            generator=generator,
            device=self.device,
            dtype=self._denoiser.noise_dtype,
        )

    def sample(self, batch: Mapping[str, Any], noise: Tensor) -> Tensor:
        """The action chunk the base executes from `noise`: (B, n_action_steps, action_dim), normalized.

        Deterministic: the same observations and noise give the same chunk. Runs without gradients.
        """
        observations, noise = self._inputs(batch, noise)
        with torch.no_grad(), self._decoding_mode():
            actions = self.policy.predict_action_chunk(observations, noise=noise)
        return self._denoiser.executed(actions)

    def guided_sample(
        self,
        batch: Mapping[str, Any],
        noise: Tensor,
        guide: Guide,
        *,
        steps: Collection[int] | None = None,
    ) -> Tensor:
        """`sample` with `guide` called at the chosen denoising steps (all if `steps` is None;
        negative indices count from the end, e.g. `range(-3, 0)` for the last three).

        At each chosen step the guide gets a `DenoiseStep` whose `estimate` is the clean-action
        estimate of the executed part and returns a shift of it (or None); the next sample is
        re-synthesized from the shifted estimate (see denoisers.py for the DDIM and flow-matching
        forms). The base runs without gradients; the guide runs under `torch.enable_grad()` on a
        detached estimate, so only its own computation (e.g. a critic) is differentiated. With a
        guide that returns zeros the result equals `sample` exactly.
        """
        observations, noise = self._inputs(batch, noise)
        with torch.no_grad(), self._decoding_mode(), self._denoiser.guidance(guide, steps):
            actions = self.policy.predict_action_chunk(observations, noise=noise)
        return self._denoiser.executed(actions)

    def observe(self, batch: Mapping[str, Any]) -> None:
        """Record single-step observations between chunks (only bases with `n_obs_steps` > 1 keep them)."""
        if self._denoiser.needs_obs_history and not self._history.has_time_dim(batch):
            self._history.push(self._to_device(batch))

    def reset(self, done: Tensor | None = None) -> None:
        """Forget the observation history of all environments, or of those where `done` is True."""
        self._history.reset(done)

    def history_frames(self) -> dict[str, Tensor]:
        """The current observation histories, key -> (B, n_obs_steps, ...) (empty before any step)."""
        return self._history.frames

    def history_state(self) -> dict[str, Tensor]:
        """The per-environment observation history as tensors (checkpoints of online runs)."""
        return self._history.state_dict()

    def load_history_state(self, state: dict[str, Tensor]) -> None:
        self._history.load_state_dict(state)

    def train(self, mode: bool = True) -> BasePolicyAdapter:
        super().train(mode)
        if self.frozen:
            self.policy.eval()  # eval-mode behaviour is part of the noise -> chunk map
        return self

    @contextlib.contextmanager
    def _decoding_mode(self) -> Iterator[None]:
        """Decode in eval mode; a trainable base goes back to the mode it was in (a frozen one stays eval)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            yield
        finally:
            if was_training and not self.frozen:
                self.policy.train()

    # ------------------------------------------------------------------------------- processors

    def preprocess(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Raw observation (env/dataset space) -> the base's input batch, with its own preprocessor."""
        if self.preprocessor is None:
            raise RuntimeError("this adapter has no preprocessor: pass one to from_policy(...)")
        return self.preprocessor(observation)

    def postprocess(self, actions: Tensor) -> Tensor:
        """Normalized chunk -> robot/env action space, with the base's own postprocessor."""
        if self.postprocessor is None:
            raise RuntimeError("this adapter has no postprocessor: pass one to from_policy(...)")
        return self.postprocessor(actions)

    # --------------------------------------------------------------------------------- features

    def check_features(self, features, *, rename_map: Mapping[str, str] | None = None) -> None:
        """Raise FeatureMismatchError listing every camera/state/action the data does not match.

        `features`: a dict of PolicyFeature, a dataset features dict, a LeRobotDataset(/Metadata) or
        an EnvConfig. `rename_map` (data key -> base key) is applied first, as LeRobot's
        `--rename_map` would.
        """
        policy_features = to_policy_features(features)
        if rename_map:
            policy_features = {rename_map.get(k, k): ft for k, ft in policy_features.items()}
        problems = feature_mismatches(
            self.policy.config, policy_features, resizes_images=self._denoiser.resizes_images
        )
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise FeatureMismatchError(
                f"the base policy ('{self.policy_type}') does not match these features:\n{lines}\n"
                "Rename differently named cameras/state with rename_map, or use a base trained on the "
                "same robot, cameras and action space."
            )

    # -------------------------------------------------------------------------------- internals

    def _inputs(self, batch: Mapping[str, Any], noise: Tensor) -> tuple[dict[str, Any], Tensor]:
        # Empty queues = LeRobot diffusion's offline mode (the batch is used, not the queues).
        self.policy.reset()
        batch_size = noise.shape[0] if noise.ndim else 0
        if tuple(noise.shape) != self.noise_shape(batch_size):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}, the '{self.policy_type}' base takes "
                f"{self.noise_shape(batch_size)} (see noise_shape(batch_size))"
            )
        observations = self._to_device(batch)
        if self._denoiser.needs_obs_history and not self._history.has_time_dim(observations):
            observations = self._history.push(observations)
        sizes = {k: v.shape[0] for k, v in observations.items() if isinstance(v, Tensor) and v.ndim}
        if any(size != batch_size for size in sizes.values()):
            raise ValueError(f"noise is for a batch of {batch_size}, observations have batch sizes {sizes}")
        return observations, noise.to(device=self.device, dtype=self._denoiser.noise_dtype)

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        device = self.device
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------ checkpoint files


def looks_like_local_path(name: str) -> bool:
    """Whether a checkpoint argument is written as a local folder rather than a Hub repo id.

    A Hub repo id is `owner/name`; anything absolute, starting with ./ ../ or ~, with a path separator
    beyond that one slash, or not a valid repo id at all is a path. (An `owner/name` whose `owner`
    folder exists here is still tried on the Hub first: see `hub_fetch_error`.)
    """
    windows = (f".{os.sep}", f"..{os.sep}") if os.sep != "/" else ()
    if os.path.isabs(name) or name in (".", "..") or name.startswith(("~", "./", "../", *windows)):
        return True
    if (os.sep != "/" and os.sep in name) or name.count("/") != 1:
        return True
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def local_checkpoint(path_or_repo_id: str | Path, *, require_config: bool = True) -> Path | None:
    """The local checkpoint folder a `--policy.path` / `--policy_paths` / `base_policy_path` names, or
    None when it is a Hub repo id (`owner/name`) to fetch.

    Raises CheckpointError, naming the folder, when it is written as a local path and does not exist,
    when it is a file, and (with `require_config`) when it has no config.json: such a path is never
    sent to the Hub, whose answer ("Repo id must be in the form ...", "check your connection")
    would hide the typo.
    """
    name = str(path_or_repo_id)
    path = Path(name).expanduser()
    if path.is_dir():
        if require_config and not (path / CONFIG_NAME).is_file():
            raise CheckpointError(missing_config_message(path))
        return path
    if path.exists():
        raise CheckpointError(
            f"{path} is a file; pass the checkpoint folder that holds {CONFIG_NAME} and {SAFETENSORS_FILE} "
            "(lerobot-train writes it as .../checkpoints/<step>/pretrained_model)"
        )
    if isinstance(path_or_repo_id, Path) or looks_like_local_path(name):
        raise CheckpointError(missing_folder_message(path, name))
    return None


def _does_not_exist(path: Path) -> str:
    absolute = Path(os.path.abspath(path))
    nearest = next((p for p in absolute.parents if p.is_dir()), None)
    where = f" (the nearest folder that exists is {nearest})" if nearest not in (None, absolute.parent) else ""
    return f"the checkpoint folder {absolute} does not exist{where}"


def missing_folder_message(path: Path, name: str) -> str:
    """`path` (written as `name`) does not exist: say so, with the deepest part of it that does."""
    return (f"{_does_not_exist(path)}. '{name}' is a local path, not a Hub repo id (owner/name), so it was not "
            "looked up on the Hub: check the path.")


def missing_config_message(folder: Path) -> str:
    """`folder` exists but is not a policy checkpoint: say so, and where the checkpoint probably is."""
    hint = ""
    for inner in (Path("pretrained_model"), Path("checkpoints", "last", "pretrained_model")):
        if (folder / inner / CONFIG_NAME).is_file():
            hint = f" It looks like a training {'checkpoint' if len(inner.parts) == 1 else 'run'}: use {folder / inner}."
            break
    return (f"{folder} exists but is not a LeRobot policy checkpoint: {CONFIG_NAME} is missing.{hint} Point to the "
            "`pretrained_model` folder written by lerobot-train, or save a policy there with "
            "policy.save_pretrained(dir) (and its processors with pipeline.save_pretrained(dir)).")


def hub_fetch_error(name: str, revision: str | None, error: BaseException) -> CheckpointError:
    """The error for an `owner/name` that is not here and could not be fetched from the Hub; when
    its `owner` folder exists here, it was most likely meant as a local path."""
    owner = Path(name.split("/")[0])
    if owner.is_dir():
        return CheckpointError(
            f"{_does_not_exist(Path(name))}, and '{name}' is not a Hub repo that could be fetched either "
            f"({type(error).__name__}: {error}): check the path (./{name} marks it as a local one)."
        )
    return CheckpointError(
        f"'{name}' is neither a local folder nor a Hub repo that could be fetched "
        f"(revision={revision!r}; {type(error).__name__}: {error}). Check the path or repo id and revision; "
        "for a private repo log in with `hf auth login`; offline (HF_HUB_OFFLINE=1) only repos "
        "already in the Hugging Face cache can be used."
    )


def load_checkpoint_config(path_or_repo_id: str | Path, **kwargs) -> PreTrainedConfig:
    """`PreTrainedConfig.from_pretrained` (kwargs passed on) for a `--policy.path`-like argument, with
    `local_checkpoint`'s errors for a local path and `hub_fetch_error`'s for a Hub id that cannot be
    fetched, instead of "Repo id must be in the form ..." or "check your connection"."""
    local = local_checkpoint(path_or_repo_id)
    try:
        return PreTrainedConfig.from_pretrained(path_or_repo_id, **kwargs)
    except OSError as e:  # not on the Hub, no network, offline without a cached copy
        if local is not None:
            raise
        raise hub_fetch_error(str(path_or_repo_id), kwargs.get("revision"), e) from e


class BaseFacts(NamedTuple):
    """What a steering config must know of its base before any weights are loaded: LeRobot builds
    the dataset's delta indices (observation history, executed chunk) before the policy."""

    policy_type: str
    n_obs_steps: int
    n_action_steps: int


def read_base_facts(path_or_repo_id: str | Path, *, revision: str | None = None) -> BaseFacts:
    """The `BaseFacts` of a base checkpoint (a folder or a Hub repo id), read from its config.json.

    The checkpoint is validated as `BasePolicyAdapter.from_pretrained` validates it (weights and
    processor files present), so a missing or damaged base fails here, naming the folder, rather
    than after the dataset is built.
    """
    folder = _resolve_checkpoint(path_or_repo_id, revision=revision, cache_dir=None, token=None)
    policy_type = _validate_checkpoint(folder, load_processors=True)
    config = json.loads((folder / CONFIG_NAME).read_text())
    return BaseFacts(policy_type, int(config.get("n_obs_steps", 1)), int(config["n_action_steps"]))


def _resolve_checkpoint(path_or_repo_id, *, revision, cache_dir, token) -> Path:
    """A local checkpoint folder: the given one, or a Hub repo fetched into the cache."""
    folder = local_checkpoint(path_or_repo_id, require_config=False)  # _validate_checkpoint names what is missing
    if folder is not None:
        return folder
    name = str(path_or_repo_id)
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                name,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                allow_patterns=["*.json", "*.safetensors"],
            )
        )
    except Exception as e:
        raise hub_fetch_error(name, revision, e) from e


def _validate_checkpoint(folder: Path, *, load_processors: bool) -> str:
    """Fail early, naming the file and the fix, instead of deep inside LeRobot's loaders.

    Needed beyond LeRobot's own checks: pi0/pi05 `from_pretrained` print a warning and return a
    randomly initialized model when model.safetensors is missing or unreadable (LeRobot 0.6.1,
    modeling_pi0.py:846-848). Returns the policy type from config.json.
    """
    from safetensors import safe_open

    resave = "save it with policy.save_pretrained(dir) (and the processors with pipeline.save_pretrained(dir))"
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(missing_config_message(folder))
    try:
        policy_type = json.loads(config_file.read_text())["type"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{config_file} is unreadable or has no policy `type` ({type(e).__name__}: {e}); {resave}."
        ) from e
    weights = folder / SAFETENSORS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{weights} is missing: the checkpoint in {folder} is incomplete (interrupted save or "
            f"download). Re-download it, or {resave}."
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({type(e).__name__}: {e}); it is corrupt or "
            f"truncated. Re-download it, or {resave}."
        ) from e
    if load_processors:
        missing = [name for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE) if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder} has no {' / '.join(missing)}: the base's normalization lives in its processors. "
                "Save them next to the weights (preprocessor.save_pretrained(dir), "
                "postprocessor.save_pretrained(dir); LeRobot's migrate_policy_normalization script converts "
                "older checkpoints), or pass load_processors=False and provide your own."
            )
    return policy_type


def _pipeline_has_step(pipeline_file: Path, registry_name: str) -> bool:
    """Whether the saved processor pipeline has a step registered as `registry_name`.

    False only when there is no such step: no file (the loader that follows names it), or a
    pipeline without that step. An unreadable or malformed file raises CheckpointError naming it,
    rather than silently dropping an override (e.g. the device) that the caller would have applied.
    """
    try:
        text = pipeline_file.read_text()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise CheckpointError(f"{pipeline_file} cannot be read ({type(e).__name__}: {e})") from e
    try:
        steps = json.loads(text).get("steps", [])
        return any(step.get("registry_name") == registry_name for step in steps)
    except (ValueError, AttributeError, TypeError) as e:
        raise CheckpointError(
            f"{pipeline_file} is not a LeRobot processor pipeline (a JSON object whose 'steps' is a list of "
            f"objects; {type(e).__name__}: {e}). It is corrupt or truncated: re-download the checkpoint, or save "
            "its processors again with pipeline.save_pretrained(dir)."
        ) from e
