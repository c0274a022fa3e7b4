"""Running LeRobot's console scripts from tests, and the tiny policy flags they share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

# A diffusion policy small enough to train for a few steps on CPU in seconds, with no Hub download.
TINY_DIFFUSION_ARGS = [
    "--policy.type=diffusion", "--policy.device=cpu", "--policy.push_to_hub=false",
    "--policy.pretrained_backbone_weights=null", "--policy.horizon=8", "--policy.n_action_steps=4",
    "--policy.n_obs_steps=2", "--policy.noise_scheduler_type=DDIM", "--policy.num_inference_steps=2",
    "--policy.down_dims=[16,32]", "--policy.crop_shape=null",
]


def run_cli(cmd: list, cwd, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a console script; unless `ok` is False, fail the test with its output tail on a non-zero exit."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=600)
    if ok:
        assert result.returncode == 0, f"{Path(str(cmd[0])).name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# lerobot-train flags shared by the steering-policy CLI tests (dsrl, dyna_vgd).
STEERING_TRAIN_ARGS = ["--batch_size=4", "--num_workers=0", "--env_eval_freq=0", "--wandb.enable=false"]


def train_steering(policy_args: list, dataset_root, base_checkpoint, *extra, cwd, ok: bool = True):
    """`lerobot-train` a steering policy over `base_checkpoint` on the generated local/so101_state dataset."""
    return run_cli([BIN / "lerobot-train", *policy_args, *STEERING_TRAIN_ARGS,
                    f"--policy.base_policy_path={base_checkpoint}", "--dataset.repo_id=local/so101_state",
                    f"--dataset.root={dataset_root}", *extra], cwd=cwd, ok=ok)


def eval_on_sim(checkpoint, output_dir) -> dict:
    """`lerobot-eval --policy.path=<checkpoint>` alone, one 10-step so101_sim state episode; its eval_info.json."""
    run_cli([BIN / "lerobot-eval", f"--policy.path={checkpoint}", "--env.type=so101_sim", "--env.obs_type=state",
             "--env.episode_length=10", "--policy.device=cpu", "--eval.n_episodes=1", "--eval.batch_size=1",
             "--eval.use_async_envs=false", f"--output_dir={output_dir}"], cwd=output_dir)
    return json.loads((Path(output_dir) / "eval_info.json").read_text())
