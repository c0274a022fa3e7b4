"""`dsrl` through LeRobot's own CLIs: lerobot-train (offline DSRL-NA on a generated sim dataset with
rewards), --resume, and lerobot-eval with `--policy.path` alone on the so101_sim env."""

from __future__ import annotations

import json

import pytest
from cli_helpers import BIN, eval_on_sim, run_cli, train_steering

pytestmark = pytest.mark.slow  # every test runs lerobot-train / lerobot-eval in a subprocess

TINY_DSRL = [
    "--policy.type=dsrl", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.hidden_dims=[32,32]",
]


@pytest.fixture(scope="module")
def base_checkpoint(state_checkpoint):
    """A tiny diffusion base trained for 2 steps on the generated state dataset by lerobot-train."""
    return state_checkpoint


@pytest.fixture(scope="module")
def dsrl_run(state_dataset, base_checkpoint, tmp_path_factory):
    root, _ = state_dataset
    out = tmp_path_factory.mktemp("dsrl") / "run"
    result = train_steering(TINY_DSRL, root, base_checkpoint, "--steps=4", "--save_freq=2", "--log_freq=1",
                            f"--output_dir={out}", cwd=out.parent)
    return out, result


def test_lerobot_train_runs_offline_dsrl_na_and_saves_a_self_contained_checkpoint(dsrl_run):
    out, result = dsrl_run
    log = result.stdout + result.stderr
    for metric in ("critic_loss", "actor_loss", "noise_critic_loss", "alpha"):
        assert metric in log, f"{metric} not logged"
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    files = {p.name for p in ckpt.iterdir()}
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"} <= files
    base = ckpt / "base_policy"
    assert (base / "model.safetensors").is_file() and (base / "policy_preprocessor.json").is_file()
    # The base is stored once: not inside the DSRL weights.
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("adapter.")]  # noqa: SIM118  (safe_open is no dict)
    # Its processors are the base's (same normalizer stats), under LeRobot's standard step names.
    steps = [s["registry_name"] for s in json.loads((ckpt / "policy_preprocessor.json").read_text())["steps"]]
    assert "normalizer_processor" in steps and "device_processor" in steps


def test_lerobot_eval_runs_the_checkpoint_from_policy_path_alone(dsrl_run, tmp_path):
    out, _ = dsrl_run
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    info = eval_on_sim(ckpt, tmp_path)
    assert info["overall"]["n_episodes"] == 1


def test_lerobot_train_resumes_from_the_checkpoint(dsrl_run):
    out, _ = dsrl_run
    config = out / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    result = run_cli([str(BIN / "lerobot-train"), f"--config_path={config}", "--resume=true", "--steps=6"], cwd=out.parent)
    log = result.stdout + result.stderr
    assert "Resuming" in log or "resum" in log.lower()
    assert (out / "checkpoints" / "000006" / "pretrained_model" / "base_policy" / "model.safetensors").is_file()


def test_missing_base_checkpoint_fails_naming_the_path(state_dataset, tmp_path):
    root, _ = state_dataset
    missing = tmp_path / "no_such_base"
    result = train_steering(TINY_DSRL, root, missing, "--steps=1", f"--output_dir={tmp_path / 'run'}", cwd=tmp_path,
                            ok=False)
    assert result.returncode != 0
    assert str(missing) in result.stderr + result.stdout
