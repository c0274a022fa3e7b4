"""`dyna_vgd` through LeRobot's own CLIs: lerobot-train (offline critic TD training over a frozen base,
or a behaviour-cloned diffusion base trained together with the critics, on a generated sim dataset),
`--resume` of both, and lerobot-eval with `--policy.path` alone on the so101_sim env."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch
from cli_helpers import BIN, STEERING_TRAIN_ARGS, TINY_DIFFUSION_ARGS, eval_on_sim, run_cli, train_steering

pytestmark = pytest.mark.slow  # every test runs lerobot-train / lerobot-eval in a subprocess

TINY_DYNA_VGD = [
    "--policy.type=dyna_vgd", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.hidden_dims=[32,32]",
]


@pytest.fixture(scope="module")
def dyna_vgd_run(state_dataset, state_checkpoint, tmp_path_factory):
    root, _ = state_dataset
    out = tmp_path_factory.mktemp("dyna_vgd") / "run"
    result = train_steering(TINY_DYNA_VGD, root, state_checkpoint, "--steps=3", "--save_freq=3", "--log_freq=1",
                            f"--output_dir={out}", cwd=out.parent)
    return out, result


def test_lerobot_train_trains_the_critics_and_logs_the_guidance_components(dyna_vgd_run):
    out, result = dyna_vgd_run
    log = result.stdout + result.stderr
    for metric in ("critic_loss", "td_error", "lambda", "w_local", "w_global", "sigma_q", "td_error_ema"):
        assert metric in log, f"{metric} not logged"
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"} <= {
        p.name for p in ckpt.iterdir()
    }
    assert (ckpt / "base_policy" / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert not [k for k in keys if k.startswith("adapter.")]  # the base is stored once, in base_policy/
        assert int(f.get_tensor("n_updates")) == 3 and float(f.get_tensor("td_error_ema")) > 0


def test_lerobot_eval_runs_the_checkpoint_from_policy_path_alone(dyna_vgd_run, tmp_path):
    out, _ = dyna_vgd_run
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    info = eval_on_sim(ckpt, tmp_path)
    assert info["overall"]["n_episodes"] == 1


def _resume(run, tmp_path, steps: int) -> subprocess.CompletedProcess:
    """`lerobot-train --resume=true --config_path=<run>/checkpoints/last/pretrained_model/train_config.json`
    on a copy of `run` (the module's fixtures stay as trained), up to `steps` in all."""
    copy = tmp_path / "resumed"
    shutil.copytree(run, copy, symlinks=True)
    config = copy / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    return run_cli([BIN / "lerobot-train", "--resume=true", f"--config_path={config}", f"--steps={steps}",
                    f"--output_dir={copy}", "--log_freq=1"], cwd=tmp_path)


def _continued(result, copy, first_step: int, last_step: int) -> None:
    """The resumed run logged steps first_step..last_step only and saved its state at last_step."""
    log = result.stdout + result.stderr
    logged = [int(n) for n in re.findall(r"step:(\d+) smpl", log)]
    assert logged == list(range(first_step, last_step + 1)), logged
    state = json.loads((copy / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())
    assert state["step"] == last_step


def test_resume_continues_a_frozen_base_run(dyna_vgd_run, tmp_path):
    out, _ = dyna_vgd_run
    result = _resume(out, tmp_path, steps=5)
    _continued(result, tmp_path / "resumed", 4, 5)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "resumed" / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"), "pt") as f:
        assert int(f.get_tensor("n_updates")) == 5  # the critic step counter went on from 3


# ------------------------------------------------------------------- behaviour-cloned base (bc)

# The same tiny diffusion as the frozen-mode base, as dyna_vgd's nested --policy.diffusion.<field> flags.
_OWN_FLAGS = ("--policy.type=", "--policy.device=", "--policy.push_to_hub=", "--policy.num_inference_steps=")
TINY_BC = [
    "--policy.type=dyna_vgd", "--policy.base_mode=bc", "--policy.device=cpu", "--policy.push_to_hub=false",
    "--policy.hidden_dims=[32,32]", "--policy.num_inference_steps=2",
    *[a.replace("--policy.", "--policy.diffusion.") for a in TINY_DIFFUSION_ARGS if not a.startswith(_OWN_FLAGS)],
]


def train_bc(dataset_root, repo_id, *extra, cwd, ok: bool = True) -> subprocess.CompletedProcess:
    return run_cli([BIN / "lerobot-train", *TINY_BC, *STEERING_TRAIN_ARGS, f"--dataset.repo_id={repo_id}",
                    f"--dataset.root={dataset_root}", *extra], cwd=cwd, ok=ok)


def _logged(log: str, metric: str) -> list[float]:
    return [float(v) for v in re.findall(rf" {metric}:([-+.\w]+)", log)]


@pytest.fixture(scope="module")
def bc_run(state_dataset, tmp_path_factory):
    root, _ = state_dataset
    out = tmp_path_factory.mktemp("dyna_vgd_bc") / "run"
    result = train_bc(root, "local/so101_state", "--steps=4", "--save_freq=4", "--log_freq=1", f"--output_dir={out}",
                      cwd=out.parent)
    return out, result


LOAD_AND_ACT = """
import sys, torch
torch.set_num_threads(1)
import lerobot_steer
from lerobot_steer.policies.dyna_vgd import DynaVGDPolicy
path, out = sys.argv[1:]
policy = DynaVGDPolicy.from_pretrained(path)
g = torch.Generator().manual_seed(3)
obs = {"observation.state": torch.randn(2, 6, generator=g), "observation.environment_state": torch.randn(2, 10, generator=g)}
torch.manual_seed(0)
chunk = policy.predict_action_chunk(obs)
torch.save({"chunk": chunk, "lambda": policy.last_guidance_stats["lambda"]}, out)
"""


def test_lerobot_train_bc_mode_trains_base_and_critics_and_reloads_identically_in_a_fresh_process(bc_run, tmp_path):
    out, result = bc_run
    log = result.stdout + result.stderr
    bc_losses, critic_losses = _logged(log, "bc_loss"), _logged(log, "critic_loss")
    assert len(bc_losses) == 4 and all(math.isfinite(v) and v > 0 for v in bc_losses)
    assert len(critic_losses) == 4 and all(math.isfinite(v) for v in critic_losses)
    for metric in ("lambda", "w_local", "w_global", "sigma_q", "td_error_ema"):
        assert f" {metric}:" in log, f"{metric} not logged"
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert not (ckpt / "base_policy").exists()  # the trained base lives in model.safetensors
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert any(k.startswith("adapter.policy.diffusion.unet.") for k in keys)
        assert int(f.get_tensor("n_updates")) == 4
    config = json.loads((ckpt / "config.json").read_text())
    assert config["base_mode"] == "bc" and config["train_critic"] is True and config["diffusion"]["horizon"] == 8
    runs = []
    for i in range(2):  # two fresh processes
        subprocess.run([sys.executable, "-c", LOAD_AND_ACT, str(ckpt), str(tmp_path / f"{i}.pt")], check=True,
                       capture_output=True, timeout=300)
        runs.append(torch.load(tmp_path / f"{i}.pt"))
    assert torch.equal(runs[0]["chunk"], runs[1]["chunk"]) and runs[0]["chunk"].shape == (2, 4, 6)
    assert runs[0]["lambda"] > 0  # the trained critics guide the loaded policy


def test_lerobot_eval_runs_the_bc_checkpoint_from_policy_path_alone(bc_run, tmp_path):
    out, _ = bc_run
    info = eval_on_sim(out / "checkpoints" / "last" / "pretrained_model", tmp_path)
    assert info["overall"]["n_episodes"] == 1


def test_resume_continues_a_bc_run(bc_run, tmp_path):
    out, _ = bc_run
    result = _resume(out, tmp_path, steps=6)
    _continued(result, tmp_path / "resumed", 5, 6)
    assert len(_logged(result.stdout + result.stderr, "bc_loss")) == 2


@pytest.fixture(scope="module")
def rewardless_dataset(state_dataset, tmp_path_factory):
    """Two episodes of the state dataset re-recorded without next.reward / next.success / next.done."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, _ = state_dataset
    source = LeRobotDataset("local/so101_state", root=root, episodes=[0, 1])
    keys = ("observation.state", "observation.environment_state", "action")
    target_root = tmp_path_factory.mktemp("data") / "so101_no_reward"
    target = LeRobotDataset.create("local/so101_no_reward", fps=source.fps, root=target_root, use_videos=False,
                                   features={k: source.meta.features[k] for k in keys}, robot_type="so101_sim")
    episode = 0
    for i in range(len(source)):
        frame = source[i]
        if int(frame["episode_index"]) != episode:
            target.save_episode()
            episode = int(frame["episode_index"])
        target.add_frame({**{k: frame[k].numpy() for k in keys}, "task": frame["task"]})
    target.save_episode()
    target.finalize()
    assert "next.reward" not in target.meta.features
    return target_root


def test_lerobot_train_bc_mode_without_rewards_trains_the_base_only_and_says_so_once(rewardless_dataset, tmp_path):
    result = train_bc(rewardless_dataset, "local/so101_no_reward", "--steps=2", "--log_freq=1",
                      f"--output_dir={tmp_path / 'run'}", cwd=tmp_path)
    log = result.stdout + result.stderr
    assert log.count("only the behaviour-cloned diffusion base is trained") == 1
    assert len(_logged(log, "bc_loss")) == 2 and "critic_loss" not in log
    config = json.loads((tmp_path / "run" / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text())
    assert config["train_critic"] is False  # saved: the loaded policy acts unguided, critics untrained


def test_lerobot_train_without_base_flags_fails_naming_both_ways_to_give_a_base(state_dataset, tmp_path):
    """`--policy.type=dyna_vgd` with only dataset flags: no checkpoint to guide and no bc mode asked for."""
    root, _ = state_dataset
    result = run_cli([BIN / "lerobot-train", *TINY_DYNA_VGD, *STEERING_TRAIN_ARGS, "--dataset.repo_id=local/so101_state",
                      f"--dataset.root={root}", "--steps=1", f"--output_dir={tmp_path / 'run'}"], cwd=tmp_path, ok=False)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "--policy.base_policy_path=<" in error and "--policy.base_mode=bc" in error, error
    assert not (tmp_path / "run" / "checkpoints").exists()
