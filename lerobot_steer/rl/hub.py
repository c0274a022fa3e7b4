"""`--policy.push_to_hub=true --policy.repo_id=<user/name>`: upload the final policy of an online run.

LeRobot's `push_model_to_hub` expects a `TrainPipelineConfig` with a dataset (an online run has none),
so the folder is assembled here the same way: the policy (`save_pretrained`, with the frozen base in
`base_policy/`), its processors, the run's config and a model card (LeRobot's, plus the section naming
the steered base and a line on how it was trained). The token comes from the environment
(`HF_TOKEN` / `huggingface-cli login`), never from the config.
"""

import sys
import tempfile
from pathlib import Path

from .checkpoint import save_config
from .config import TRAIN_CONFIG_NAME, SteerRLConfig


def push_requested(cfg: SteerRLConfig) -> bool:
    """Upload only when asked: `push_to_hub` is True by default in LeRobot's policy configs, so a run
    pushes when a repo id is given, and an explicit `--policy.push_to_hub=true` without one is an error."""
    explicit = any(a.lower() in ("--policy.push_to_hub=true", "--policy.push_to_hub") for a in sys.argv[1:])
    if explicit and not cfg.policy.repo_id:
        raise ValueError("--policy.push_to_hub=true needs --policy.repo_id=<user>/<model name>")
    return bool(cfg.policy.push_to_hub and cfg.policy.repo_id)


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
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = api.create_repo(repo_id=cfg.policy.repo_id, private=cfg.policy.private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_upload_folder(cfg, policy, preprocessor, postprocessor, Path(tmp) / "model", counters)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder,
                                 commit_message=f"lerobot-steer-rl: {cfg.policy.type} after {counters['env_steps']} env steps")
    return str(getattr(info, "commit_url", repo_id))
