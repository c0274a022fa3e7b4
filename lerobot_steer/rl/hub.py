"""`--policy.repo_id=<user/name>` (push_to_hub defaults to true when a repo id is given): upload the
final policy of an online run.

LeRobot's `push_model_to_hub` expects a `TrainPipelineConfig` with a dataset (an online run has none),
so the folder is assembled here the same way: the policy (`save_pretrained`, with the frozen base in
`base_policy/`), its processors, the run's config and a model card (LeRobot's, plus the section naming
the steered base and a line on how it was trained). The token comes from the environment
(`HF_TOKEN` / `hf auth login`), never from the config.
"""

import logging
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from .checkpoint import save_config
from .config import TRAIN_CONFIG_NAME, SteerRLConfig

logger = logging.getLogger(__name__)


def push_requested(cfg: SteerRLConfig) -> bool:
    """Whether the run uploads its policy at the end, decided from the parsed config alone (the same
    for the CLI and for `train(cfg)` called in-process), and checked before any training.

    `policy.push_to_hub` of our policy configs is resolved when the config is built (see
    `FrozenBaseConfig`): by default true exactly when `policy.repo_id` is given. A push that is asked
    for needs a repo id and a Hub login that works; both fail here, naming the fix, rather than
    after hours of training.
    """
    policy = cfg.policy
    if not policy.push_to_hub:
        if policy.repo_id:
            logger.info("Not uploading to %s: --policy.push_to_hub is false", policy.repo_id)
        return False
    if not policy.repo_id:
        raise ValueError(
            "--policy.push_to_hub=true needs --policy.repo_id=<user>/<model name> "
            "(or pass --policy.push_to_hub=false to train without uploading)"
        )
    user = check_hub_login()
    logger.info("The final policy will be uploaded to %s as %s", policy.repo_id, user)
    return True


def check_hub_login() -> str:
    """The Hub user name the token (`HF_TOKEN` / `hf auth login`) belongs to; a clear error when
    there is no valid token or the Hub cannot be reached."""
    try:
        return HfApi().whoami()["name"]
    except Exception as e:  # no token, a rejected token, offline mode or no network all end here
        raise RuntimeError(
            "--policy.push_to_hub=true: cannot reach the Hugging Face Hub as a logged-in user "
            f"({type(e).__name__}: {e}). Log in with `hf auth login` (or set HF_TOKEN) and check the "
            "network, or pass --policy.push_to_hub=false to train without uploading."
        ) from e


def write_upload_folder(cfg: SteerRLConfig, policy, preprocessor, postprocessor, folder: Path, counters: dict) -> Path:
    """Everything the Hub repo holds, in `folder` (also what `push_policy` uploads)."""
    policy.save_pretrained(folder)
    preprocessor.save_pretrained(folder)
    postprocessor.save_pretrained(folder)
    save_config(cfg, folder / TRAIN_CONFIG_NAME)
    card = policy.generate_model_card(None, policy.config.type, policy.config.license, policy.config.tags)
    card.text += (
        f"\n## Online fine-tuning\n\nFine-tuned online with `lerobot-steer-rl` on `{cfg.env.type}` for "
        f"{counters['env_steps']} env steps ({counters['updates']} gradient steps, {cfg.n_envs} envs, seed {cfg.seed}); "
        f"the run's config is `{TRAIN_CONFIG_NAME}`.\n"
    )
    card.save(str(folder / "README.md"))
    return folder


def push_policy(cfg: SteerRLConfig, policy, preprocessor, postprocessor, counters: dict) -> str:
    api = HfApi()
    repo_id = api.create_repo(repo_id=cfg.policy.repo_id, private=cfg.policy.private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_upload_folder(cfg, policy, preprocessor, postprocessor, Path(tmp) / "model", counters)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder,
                                 commit_message=f"lerobot-steer-rl: {cfg.policy.type} after {counters['env_steps']} env steps")
    return str(getattr(info, "commit_url", repo_id))
