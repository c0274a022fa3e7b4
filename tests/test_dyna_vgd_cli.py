"""`dyna_vgd` through LeRobot's own CLIs: lerobot-train (offline critic TD training on a generated sim
dataset with rewards) and lerobot-eval with `--policy.path` alone on the so101_sim env."""

from __future__ import annotations

import pytest
from cli_helpers import eval_on_sim, train_steering

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


def test_bc_base_mode_fails_early_naming_the_working_alternative(state_dataset, state_checkpoint, tmp_path):
    root, _ = state_dataset
    result = train_steering(TINY_DYNA_VGD, root, state_checkpoint, "--policy.base_mode=bc", "--steps=1",
                            f"--output_dir={tmp_path / 'run'}", cwd=tmp_path, ok=False)
    assert result.returncode != 0
    assert "base_mode=bc" in result.stderr + result.stdout
