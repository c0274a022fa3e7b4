"""`lerobot-steer-rl`: online fine-tuning in the sim from a base trained by lerobot-train.

* a short dsrl run writes what a user looks at: metrics.csv with the papers' quantities, eval rows
  with a confidence interval, checkpoints in LeRobot's learner layout that reload as policies;
* `--resume=true` after `kill -9` continues the same run: the resumed run ends with the same
  counters, weights, replay buffer and metrics as a run that was never interrupted;
* a base whose features do not fit the env fails before any env step, naming the mismatch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import BIN, run_cli
from safetensors.torch import load_file

# Every test runs lerobot-steer-rl in a subprocess or needs `state_checkpoint` (lerobot-train in one).
pytestmark = pytest.mark.slow

# 2 envs x 4-step chunks = 8 env steps per round; short episodes so that some end in every run.
FAST = ["--policy.device=cpu", "--policy.hidden_dims=[32,32]", "--n_envs=2", "--prefill_steps=32", "--batch_size=16",
        "--utd_ratio=0.5", "--env.type=so101_sim", "--env.obs_type=state", "--env.episode_length=24",
        "--eval.n_episodes=2", "--eval.batch_size=2", "--progress=false", "--seed=3"]


def rl_cli(policy_type: str, base, out: Path, *extra, ok: bool = True):
    return run_cli([BIN / "lerobot-steer-rl", f"--policy.type={policy_type}", f"--policy.base_policy_path={base}", *FAST,
                    f"--output_dir={out}", *extra], cwd=out.parent, ok=ok)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dsrl_online_run_logs_evaluates_and_checkpoints(state_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "dsrl"
    rl_cli("dsrl", state_checkpoint, out, "--steps=96", "--log_freq=32", "--save_freq=64", "--eval.freq=64",
           "--policy.variant=na")
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in table] == [32, 64, 96]
    columns = set(table[0]) | set(table[-1])
    for name in ("train/success_rate", "train/episode_return", "critic_loss", "actor_loss", "alpha_loss",
                 "noise_critic_loss", "alpha", "eval/success_rate", "eval/ci95_low", "eval/ci95_high",
                 "time_share/physics", "time_share/updates", "env_steps_per_s"):
        assert name in columns, f"{name} missing from metrics.csv"
    assert table[0]["phase"] == "prior" and table[-1]["phase"] == "explore"  # prefill with N(0, I) first
    last = table[-1]
    # updates start once the buffer holds a batch (16 chunks = round 8 of 8 env steps): 1 per round (0.5 x 2 envs)
    assert int(last["updates"]) == 5
    assert 0.0 <= float(last["eval/ci95_low"]) <= float(last["eval/success_rate"]) <= float(last["eval/ci95_high"])

    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["000000064", "000000096", "last"]
    ckpt = checkpoints / "last"
    assert ckpt.resolve().name == "000000096"
    for part in ("pretrained_model/model.safetensors", "pretrained_model/base_policy/model.safetensors",
                 "pretrained_model/train_config.json", "algorithm/model.safetensors",
                 "training_state/training_step.json", "training_state/replay_buffer.safetensors",
                 "training_state/rng_state.safetensors"):
        assert (ckpt / part).is_file(), part
    # the two newest keep the replay buffer, so a damaged newest one still leaves one to resume from
    assert (checkpoints / "000000064" / "training_state" / "replay_buffer.safetensors").exists()
    counters = json.loads((ckpt / "training_state" / "training_step.json").read_text())
    assert counters["env_steps"] == 96 and counters["transitions"] == 24

    from lerobot_steer.policies.dsrl import DSRLPolicy

    policy = DSRLPolicy.from_pretrained(ckpt / "pretrained_model")  # --policy.path loading, base from base_policy/
    weights = load_file(str(ckpt / "pretrained_model" / "model.safetensors"))
    torch.testing.assert_close(policy.actor.state_dict()["head.mu.weight"], weights["actor.head.mu.weight"])

    # What --policy.push_to_hub=true uploads (the upload itself needs the Hub): a folder that reloads
    # as the same policy, with a model card naming the steered base and the online run.
    import draccus
    from huggingface_hub import ModelCard

    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_steer.rl.config import SteerRLConfig
    from lerobot_steer.rl.hub import write_upload_folder

    monkeypatch.setattr(ModelCard, "validate", lambda self, *a, **k: None)  # asks the Hub; offline here
    with draccus.config_type("json"):
        cfg = draccus.parse(SteerRLConfig, config_path=ckpt / "pretrained_model" / "train_config.json", args=[])
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt / "pretrained_model"))
    folder = write_upload_folder(cfg, policy, pre, post, tmp_path / "upload", counters)
    card = (folder / "README.md").read_text()
    assert "Steered base policy" in card and "96 env steps" in card
    again = DSRLPolicy.from_pretrained(folder)
    torch.testing.assert_close(again.actor.state_dict()["head.mu.weight"], weights["actor.head.mu.weight"])


def test_resume_after_kill_matches_the_uninterrupted_run(state_checkpoint, tmp_path):
    """kill -9 mid-run, `--resume=true`: same counters, weights, buffer and metrics as a run never stopped."""
    schedule = ["--log_freq=32", "--save_freq=32", "--eval.freq=64"]
    straight = tmp_path / "straight"
    rl_cli("dsrl", state_checkpoint, straight, "--steps=256", *schedule)

    killed = tmp_path / "killed"
    cmd = [BIN / "lerobot-steer-rl", "--policy.type=dsrl", f"--policy.base_policy_path={state_checkpoint}", *FAST,
           f"--output_dir={killed}", "--steps=100000", *schedule]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    last = killed / "checkpoints" / "last"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = int(last.resolve().name)
    assert 32 <= stopped_at < 256, f"the kill came too late ({stopped_at})"

    result = run_cli([BIN / "lerobot-steer-rl", "--resume=true", f"--output_dir={killed}", "--steps=256"], cwd=tmp_path)
    assert f"from env step {stopped_at}" in result.stdout + result.stderr

    a, b = straight / "checkpoints" / "last", killed / "checkpoints" / "last"
    counters_a, counters_b = (json.loads((c / "training_state/training_step.json").read_text()) for c in (a, b))
    assert counters_a.pop("wall_s") > 0 and counters_b.pop("wall_s") > 0  # wall-clock time: the one counter that differs
    assert counters_a == counters_b
    for part in ("pretrained_model/model.safetensors", "algorithm/model.safetensors",
                 "training_state/replay_buffer.safetensors"):
        ta, tb = load_file(str(a / part)), load_file(str(b / part))
        assert ta.keys() == tb.keys()
        for key in ta:
            torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=0, msg=f"{part}: {key}")

    def comparable(run):
        return [{k: v for k, v in r.items() if not k.startswith(("time_share", "env_steps_per_s", "wall_minutes"))}
                for r in rows(run)]

    assert comparable(killed) == comparable(straight)


def test_a_run_saved_with_the_old_algorithm_utd_ratio_field_still_resumes(state_checkpoint, tmp_path):
    """`algorithm.utd_ratio` was renamed `algorithm.grad_steps_per_update`: folders saved before keep
    resuming (their file is read under the new name, not rewritten)."""
    run = tmp_path / "old"
    rl_cli("dsrl", state_checkpoint, run, "--steps=64", "--log_freq=32", "--save_freq=32", "--eval.n_episodes=0")
    saved = run / "train_config.json"
    config = json.loads(saved.read_text())
    config["algorithm"]["utd_ratio"] = config["algorithm"].pop("grad_steps_per_update")
    saved.write_text(json.dumps(config, indent=4))

    result = run_cli([BIN / "lerobot-steer-rl", "--resume=true", f"--output_dir={run}", "--steps=96"], cwd=tmp_path)

    assert "algorithm.utd_ratio -> algorithm.grad_steps_per_update" in result.stdout + result.stderr
    assert [r["env_steps"] for r in rows(run)][-1] == 96
    assert "grad_steps_per_update" in json.loads(saved.read_text())["algorithm"]  # saved again, new names


def test_base_that_does_not_fit_the_env_fails_before_any_step(state_checkpoint, tmp_path):
    """The base reads joints + block/bowl poses; a pixels-only sim has no environment_state."""
    result = rl_cli("dsrl", state_checkpoint, tmp_path / "bad", "--steps=64", "--env.obs_type=pixels", ok=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "observation.environment_state" in log
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_resume_without_a_checkpoint_names_the_fix(tmp_path):
    result = run_cli([BIN / "lerobot-steer-rl", "--resume=true", f"--output_dir={tmp_path / 'nothing'}"], cwd=tmp_path,
                     ok=False)
    assert result.returncode != 0
    assert "train_config.json does not exist" in result.stderr + result.stdout


@pytest.mark.parametrize("flag,message", [("--policy.type=diffusion", "steer it"), ("--utd_ratio=0", "--utd_ratio"),
                                          ("--policy.push_to_hub=true", "--policy.repo_id")])
def test_bad_options_are_refused_with_the_flag_named(state_checkpoint, tmp_path, flag, message):
    cmd = [BIN / "lerobot-steer-rl", f"--policy.base_policy_path={state_checkpoint}", "--policy.type=dsrl", flag,
           f"--output_dir={tmp_path / 'run'}", "--steps=8"]
    if flag.startswith("--policy.type"):
        cmd = [BIN / "lerobot-steer-rl", flag, f"--output_dir={tmp_path / 'run'}", "--steps=8"]
    result = run_cli(cmd, cwd=tmp_path, ok=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


def test_dyna_vgd_online_run_logs_the_guidance_components(state_checkpoint, tmp_path):
    out = tmp_path / "vgd"
    rl_cli("dyna_vgd", state_checkpoint, out, "--steps=64", "--log_freq=64", "--save_freq=64", "--eval.n_episodes=0")
    (row,) = rows(out)
    # The guidance components come from the acting decodes; the online updates bootstrap from the
    # value network (no decode in an update), whose loss is logged beside the critic's.
    for name in ("critic_loss", "value_loss", "td_error", "acting/lambda", "acting/w_local", "acting/w_global",
                 "acting/sigma_q", "acting/td_error_ema", "acting/guidance_action_shift"):
        assert name in row, f"{name} not logged"
    assert 0 < row["acting/w_local"] <= 1 and 0 < row["acting/w_global"] <= 1
    assert row["updates"] > 0 and "eval/success_rate" not in row  # --eval.n_episodes=0 turns evaluation off

    # scripts/guidance_effect.py: what guidance did to the executed chunks, per action dimension
    checkpoint = out / "checkpoints" / "last" / "pretrained_model"
    script = Path(__file__).resolve().parents[1] / "scripts" / "guidance_effect.py"
    result = run_cli([sys.executable, script, checkpoint, "--chunks=2", "--n_envs=1"], cwd=tmp_path)
    table = [line for line in result.stdout.splitlines() if line.startswith(f"| {checkpoint} |")]
    assert [line.split(" | ")[1] for line in table] == ["abs(guided - unguided), mean", "abs(guided - unguided), p95"]
    for line in table:
        shifts = [float(cell) for cell in line.split(" | ")[2:8]]
        assert all(0 <= v < 10 for v in shifts), line


def test_policy_path_continues_from_trained_weights(state_checkpoint, tmp_path):
    """`--policy.path=<checkpoint>` starts a new run (fresh counters and buffer) from the trained networks."""
    first = tmp_path / "first"
    rl_cli("dsrl", state_checkpoint, first, "--steps=64", "--save_freq=64", "--eval.n_episodes=0")
    trained = first / "checkpoints" / "last" / "pretrained_model"
    second = tmp_path / "second"
    run_cli([BIN / "lerobot-steer-rl", f"--policy.path={trained}", *FAST, "--steps=16", "--prefill_steps=1000",
             "--save_freq=16", "--eval.n_episodes=0", f"--output_dir={second}"], cwd=tmp_path)
    counters = json.loads((second / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())
    assert counters["env_steps"] == 16 and counters["updates"] == 0  # prefill only: the networks are untouched
    a = load_file(str(trained / "model.safetensors"))
    b = load_file(str(second / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_online_defaults_pick_dsrl_sac_and_each_methods_update_ratio(state_checkpoint, tmp_path):
    """`--policy.type=dsrl` alone trains DSRL-SAC online (its updates never decode the base), with
    2 gradient steps per chunk transition, 4 critics and noise in [-1, 1]; VGD bootstraps from its
    value network online (no decode in an update): 2, and 0.25 when asked to decode as the reference."""
    from lerobot_steer.policies.dsrl import DSRLConfig
    from lerobot_steer.policies.dyna_vgd import DynaVGDConfig
    from lerobot_steer.rl.config import SteerRLConfig

    dsrl = SteerRLConfig(policy=DSRLConfig(base_policy_path=str(state_checkpoint)), output_dir=tmp_path / "a")
    dsrl.validate()
    assert dsrl.policy.variant == "sac" and dsrl.utd_ratio == 2.0 and dsrl.policy.noise_bound == 1.0
    assert dsrl.policy.n_critics == 4
    assert not dsrl.eval.deterministic  # scored as it acts in lerobot-eval: sampled noise
    vgd = SteerRLConfig(policy=DynaVGDConfig(base_policy_path=str(state_checkpoint)), output_dir=tmp_path / "b")
    vgd.validate()
    assert vgd.policy.td_bootstrap == "value" and vgd.utd_ratio == 2.0
    vgd_decode = SteerRLConfig(policy=DynaVGDConfig(base_policy_path=str(state_checkpoint), td_bootstrap="decode"),
                               output_dir=tmp_path / "d")
    vgd_decode.validate()
    assert vgd_decode.utd_ratio == 0.25
    na = SteerRLConfig(policy=DSRLConfig(base_policy_path=str(state_checkpoint), variant="na"), output_dir=tmp_path / "c")
    na.validate()
    assert na.utd_ratio == 0.5 and na.policy.noise_bound == 1.0
