"""`lerobot-steer-rl` under hostile inputs: what users, schedulers and disks do to a run.

* two runs into one --output_dir: the second is refused while the first lives; a stale lock is
  taken over; the lock goes at exit, exceptions included;
* out-of-range numbers fail when the command line is parsed, naming the flag, the value and the range;
* a damaged newest checkpoint (deleted, truncated, half-written JSON) or a torn metrics line does not
  end a run: resume falls back to the newest complete checkpoint and names what it skipped; a
  refused resume leaves train_config.json untouched;
* a loss that turns NaN stops the run at once, and `last` stays on finite weights;
* Ctrl-C / SIGTERM: the step finishes, a complete checkpoint is saved, the resume command is printed,
  the exit code is 128 + signal;
* a local path that does not exist (--policy_paths, --policy.path, --policy.base_policy_path) is named
  as a missing folder, never sent to the Hub; real Hub ids owner/name still are;
* a sim checkpoint that reads observation.environment_state, given a robot's observations, names
  what is missing before the first action;
* user errors of every command print `error: <message>` and exit 2; bugs keep their traceback.

Runs are in-process on a tiny random-weight base shaped for the sim (about a second each); two
subprocess tests cover what only the installed commands show (Ctrl-C, exit status and stderr).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import draccus
import huggingface_hub
import pytest
import torch
from cli_helpers import BIN
from helpers_bases import one_thread  # noqa: F401  (autouse: one torch thread in this module)
from safetensors.torch import load_file

from lerobot_steer.cli_errors import run_command, user_input
from lerobot_steer.config_error import ConfigError
from lerobot_steer.evaluation.cli import main as eval_main
from lerobot_steer.evaluation.loading import load_policy_config
from lerobot_steer.policies.dsrl import DSRLConfig, DSRLPolicy
from lerobot_steer.policies.dyna_vgd import DynaVGDConfig, DynaVGDPolicy
from lerobot_steer.rl import checkpoint as ckpt, train as train_mod
from lerobot_steer.rl.config import TRAIN_CONFIG_NAME, OnlineEvalConfig, SteerRLConfig
from lerobot_steer.rl.metrics_log import read_rows
from lerobot_steer.rl.run_guard import LOCK_NAME, RunFolderLocked, RunInterrupted, RunLock
from lerobot_steer.sim import generate as generate_mod
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering import CheckpointError, FeatureMismatchError
from lerobot_steer.steering.base_adapter import local_checkpoint
from lerobot_steer.steering.tiny_bases import ENV, STATE, save_base, sim_state_diffusion

# 2 envs x 4-step chunks = 8 env steps per round; updates from the second round (batch of 4 chunks).
TINY_BASE = dict(horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
                 diffusion_step_embed_dim=8, num_inference_steps=2)


@pytest.fixture(scope="module")
def sim_base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_base(*sim_state_diffusion(**TINY_BASE), tmp_path_factory.mktemp("sim_base"))


def tiny_run(base: Path, out: Path, **overrides) -> SteerRLConfig:
    settings = dict(n_envs=2, steps=48, prefill_steps=16, utd_ratio=0.5, batch_size=4, log_freq=16, save_freq=16,
                    eval=OnlineEvalConfig(n_episodes=0), output_dir=out, progress=False, seed=3)
    settings.update(overrides)
    return SteerRLConfig(policy=DSRLConfig(base_policy_path=str(base), device="cpu", hidden_dims=[32, 32]),
                         env=SO101SimEnvConfig(obs_type="state", episode_length=24), **settings)


def resumed(out: Path, *args: str) -> SteerRLConfig:
    """What `lerobot-steer-rl --resume=true --output_dir=<out> <args>` trains."""
    with draccus.config_type("json"):
        return draccus.parse(SteerRLConfig, config_path=out / TRAIN_CONFIG_NAME,
                             args=[f"--output_dir={out}", "--resume=true", *args])


@pytest.fixture(scope="module")
def finished_run(sim_base, tmp_path_factory) -> Path:
    """A 48-step run with checkpoints at 16, 32 and 48 (tests work on copies)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train_mod.train(tiny_run(sim_base, out))
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"{step:09d}"


# ------------------------------------------------------------------------------------ 1. the lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("owner, refused", [
    (lambda: {"pid": os.getppid(), "host": socket.gethostname()}, "in use by another run"),  # alive here
    (lambda: {"pid": 1, "host": "elsewhere"}, "cannot see whether it still runs"),  # another machine
    (lambda: {"pid": _dead_pid(), "host": socket.gethostname()}, None),  # killed -9: stale
    (lambda: {"pid": os.getpid(), "host": socket.gethostname(), "start_time": -1}, None),  # PID reused
    (lambda: "{torn", None),  # half-written
])
def test_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path, owner, refused):
    lock = tmp_path / LOCK_NAME
    content = owner()
    lock.write_text(content if isinstance(content, str) else json.dumps(content))
    if refused:
        with pytest.raises(RunFolderLocked, match=refused) as error:
            RunLock(tmp_path).__enter__()
        assert str(lock) in str(error.value) and "--output_dir" in str(error.value)
        assert lock.read_text() == (content if isinstance(content, str) else json.dumps(content))  # untouched
        return
    with pytest.raises(KeyError), RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        raise KeyError("a failing run")
    assert not lock.exists()  # released on the exception


def test_second_run_into_a_busy_folder_is_refused_before_it_writes(sim_base, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    owner = json.dumps({"pid": os.getppid(), "host": socket.gethostname()})
    (out / LOCK_NAME).write_text(owner)
    with pytest.raises(RunFolderLocked, match=f"PID {os.getppid()}"):
        train_mod.train(tiny_run(sim_base, out))
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME] and (out / LOCK_NAME).read_text() == owner


# --------------------------------------------------------------------------------- 2. the numbers


def _built(config_class):
    return lambda tmp, **kwargs: config_class(**kwargs)


def _validated_run(tmp, **kwargs):
    SteerRLConfig(policy=DSRLConfig(), output_dir=tmp / "run", **kwargs).validate()


dsrl, vgd, env, run = _built(DSRLConfig), _built(DynaVGDConfig), _built(SO101SimEnvConfig), _validated_run


@pytest.mark.parametrize("make, kwargs, message", [
    (dsrl, dict(discount=1.5), "--policy.discount=1.5 is out of range; allowed: (0, 1]"),
    (dsrl, dict(discount=0.0), "--policy.discount=0.0"),
    (dsrl, dict(tau=3), "--policy.tau=3 is out of range; allowed: (0, 1]"),
    (dsrl, dict(n_critics=0), "--policy.n_critics=0 is out of range; allowed: [1, inf)"),
    (dsrl, dict(actor_lr=-1e-4), "--policy.actor_lr=-0.0001 is out of range; allowed: (0, inf)"),
    (dsrl, dict(critic_lr=math.nan), "--policy.critic_lr=nan"),
    (dsrl, dict(temperature_lr=math.inf), "--policy.temperature_lr=inf"),
    (dsrl, dict(hidden_dims=[32, 0]), "--policy.hidden_dims=[32, 0] is out of range; every entry"),
    (dsrl, dict(num_inference_steps=0), "--policy.num_inference_steps=0 is out of range; allowed: [1, inf) or null"),
    (dsrl, dict(noise_bound=0.0), "--policy.noise_bound=0.0"),
    (dsrl, dict(image_latent_dim=0), "--policy.image_latent_dim=0"),
    (vgd, dict(c_local=0.0), "--policy.c_local=0.0"),
    (vgd, dict(td_error_ema_decay=1.0), "--policy.td_error_ema_decay=1.0 is out of range; allowed: [0, 1)"),
    (vgd, dict(weight_min=0.5, weight_max=0.1), "--policy.weight_min=0.5 exceeds --policy.weight_max=0.1"),
    (vgd, dict(guidance_scale=-1.0), "--policy.guidance_scale=-1.0"),
    (env, dict(block_x_range=(0.3, 0.1)), "--env.block_x_range=[0.3, 0.1]"),
    (env, dict(bowl_y_range=(-math.inf, 0.1)), "--env.bowl_y_range=[-inf, 0.1]: need finite"),
    (env, dict(render_height=0), "--env.render_height=0 must be a positive integer"),
    (env, dict(image_width=0), "--env.image_width=0"),
    (env, dict(home_noise_deg=-1.0), "--env.home_noise_deg=-1.0"),
    (run, dict(n_envs=0), "--n_envs=0 is out of range; allowed: [1, inf)"),
    (run, dict(utd_ratio=math.nan), "--utd_ratio=nan"),
    (run, dict(prefill_steps=-8), "--prefill_steps=-8 is out of range; allowed: [0, inf)"),
    (run, dict(save_freq=-1), "--save_freq=-1"),
    (run, dict(eval=OnlineEvalConfig(batch_size=0)), "--eval.batch_size=0"),
])
def test_out_of_range_numbers_name_the_flag_value_and_range(tmp_path, make, kwargs, message):
    with pytest.raises(ConfigError) as error:  # not a ValueError: draccus would hide the message
        make(tmp_path, **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("flag, message", [
    ("--policy.discount=1.5", "--policy.discount=1.5 is out of range; allowed: (0, 1]"),
    ("--policy.n_critics=0", "--policy.n_critics=0 is out of range; allowed: [1, inf)"),
    ("--env.block_x_range=[0.3,0.1]", "--env.block_x_range=[0.3, 0.1]"),
])
def test_the_command_line_shows_the_range_error_itself(tmp_path, monkeypatch, capsys, flag, message):
    """draccus reports an error raised in a config's __post_init__ as "Couldn't instantiate class
    DSRLConfig"; the command prints the error itself and exits 2, before any work."""
    import lerobot.utils.utils

    monkeypatch.setattr(lerobot.utils.utils, "init_logging", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["lerobot-steer-rl", "--policy.type=dsrl", "--env.type=so101_sim", flag,
                                      f"--output_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_:
        train_mod.main()
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--policy.type=dsrl", "--policy.variant=td3"], "--policy.variant='td3' is not one of ('na', 'sac')"),
    (["--policy.type=dyna_vgd", "--policy.guidance_mode=adaptive"], "--policy.guidance_mode='adaptive' is not one of"),
    (["--policy.type=dsrl", "--policy.discount=1.5"], "--policy.discount=1.5 is out of range; allowed: (0, 1]"),
])
def test_lerobot_train_shows_our_config_message(monkeypatch, capsys, flags, message):
    """LeRobot's own CLI prints only draccus' text for a config it could not build: our configs raise a
    `ConfigError` (a draccus ParsingError), whose message draccus prints, not a ValueError it would hide
    behind "Couldn't instantiate class DSRLConfig"."""
    from lerobot.scripts import lerobot_train

    monkeypatch.setattr(sys, "argv", ["lerobot-train", *flags, "--dataset.repo_id=local/none"])
    with pytest.raises(SystemExit) as exit_:
        lerobot_train.main()
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Couldn't instantiate" not in err


# ----------------------------------------------------------------------- 3. damaged checkpoints


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "folder deleted": (lambda c: shutil.rmtree(c), None),
    "weights truncated": (lambda c: _truncate(c / "pretrained_model/model.safetensors"),
                          "pretrained_model/model.safetensors: not a complete safetensors file"),
    "buffer truncated": (lambda c: _truncate(c / "training_state/replay_buffer.safetensors"),
                         "replay_buffer.safetensors: not a complete safetensors file"),
    "optimizer truncated": (lambda c: _truncate(c / "training_state/critic/optimizer_state.safetensors"),
                            "critic/optimizer_state.safetensors: not a complete safetensors file"),
    "counters half-written": (lambda c: _truncate(c / "training_state/training_step.json"),
                              "training_step.json: not valid JSON"),
    "env states deleted": (lambda c: (c / "training_state/envs.json").unlink(), "envs.json: missing"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_picks_the_newest_complete_checkpoint_and_names_what_it_skipped(finished_run, tmp_path, caplog,
                                                                                damage):
    run = copy_of(finished_run, tmp_path)
    harm, named = DAMAGES[damage]
    harm(checkpoint(run, 48))
    with caplog.at_level(logging.WARNING, logger=ckpt.logger.name):
        assert ckpt.resume_checkpoint(run) == checkpoint(run, 32)
    if named:
        assert str(checkpoint(run, 48)) in caplog.text and named in caplog.text


def test_the_two_newest_checkpoints_keep_the_buffer_and_none_left_names_every_problem(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    assert not ckpt.checkpoint_problems(checkpoint(run, 48)) and not ckpt.checkpoint_problems(checkpoint(run, 32))
    assert ckpt.checkpoint_problems(checkpoint(run, 16)) == [
        f"{checkpoint(run, 16)}/training_state/replay_buffer.safetensors: missing (only the two newest checkpoints "
        "keep the replay buffer)"]
    _truncate(checkpoint(run, 48) / "algorithm/model.safetensors")
    (checkpoint(run, 32) / "training_state/collector.safetensors").write_bytes(b"")
    with pytest.raises(ckpt.CorruptCheckpoint) as error:
        ckpt.resume_checkpoint(run)
    for damaged in ("000000048/algorithm/model.safetensors", "000000032/training_state/collector.safetensors",
                    "000000016/training_state/replay_buffer.safetensors"):
        assert damaged in str(error.value)


def test_resume_survives_a_truncated_last_checkpoint_and_a_torn_metrics_line(finished_run, tmp_path, caplog):
    run = copy_of(finished_run, tmp_path)
    _truncate(checkpoint(run, 48) / "pretrained_model/model.safetensors")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"env_steps": 56, "upda')  # killed mid-append
    with caplog.at_level(logging.WARNING):
        row = train_mod.train(resumed(run, "--steps=64"))
    assert row["env_steps"] == 64
    assert "not a complete safetensors file" in caplog.text and "cut short" in caplog.text
    assert [r["env_steps"] for r in read_rows(run / "metrics.jsonl")] == [16, 32, 48, 64]
    assert ckpt.resume_checkpoint(run) == checkpoint(run, 64) and not (run / LOCK_NAME).exists()


def test_a_refused_resume_leaves_train_config_untouched(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    before = (run / TRAIN_CONFIG_NAME).read_bytes()
    with pytest.raises(ValueError, match="--n_envs=3 differs from the run's 2"):
        train_mod.train(resumed(run, "--n_envs=3", "--steps=64"))
    assert (run / TRAIN_CONFIG_NAME).read_bytes() == before and not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("text, rows, error", [
    ('{"env_steps": 8}\n{"env_steps": 16}\n', [8, 16], None),
    ('{"env_steps": 8}\n{"env_ste', [8], None),  # torn last line: dropped
    ('{"env_steps": 8}\n{"env_ste\n{"env_steps": 24}\n', None, "line 2 is not JSON"),  # damage inside: named
])
def test_metrics_rows_tolerate_only_a_torn_last_line(tmp_path, text, rows, error):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    if error:
        with pytest.raises(ValueError, match=error):
            read_rows(path)
    else:
        assert [r["env_steps"] for r in read_rows(path)] == rows


# ------------------------------------------------------------------------------ 4. divergence


def test_a_nan_loss_stops_the_run_and_last_keeps_finite_weights(sim_base, tmp_path, monkeypatch):
    class Diverging(train_mod.RLTrainer):
        """From the 4th update on, every trained weight and the critic loss are NaN."""

        calls = 0

        def training_step(self):
            stats = super().training_step()
            Diverging.calls += 1
            if Diverging.calls >= 4:
                with torch.no_grad():
                    for p in self.algorithm.policy.parameters():
                        if p.requires_grad:
                            p.fill_(math.nan)
                stats.losses["critic_loss"] = math.nan
            return stats

    monkeypatch.setattr(train_mod, "RLTrainer", Diverging)
    out = tmp_path / "run"
    with pytest.raises(ckpt.TrainingDiverged) as error:
        train_mod.train(tiny_run(sim_base, out, steps=96))
    message = str(error.value)
    # updates from round 2 (env step 16), one per round: the 4th update follows round 5 (env step 40)
    assert "critic_loss=nan at env step 40" in message and "--policy.critic_lr=" in message
    assert "000000032" in message  # where last still points
    last = (out / "checkpoints" / "last").resolve()
    assert last.name == "000000032" and not checkpoint(out, 48).exists()
    for part in ("pretrained_model/model.safetensors", "algorithm/model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(last / part)).values())
    assert not (out / LOCK_NAME).exists()


def test_a_checkpoint_of_non_finite_weights_is_never_written(tmp_path):
    weight = torch.nn.Parameter(torch.tensor([1.0, math.inf]))
    policy = types.SimpleNamespace(named_parameters=lambda: [("actor.head.weight", weight)])
    algorithm = types.SimpleNamespace(state_dict=lambda: {"critic.0.weight": torch.zeros(2)})
    cfg = types.SimpleNamespace(output_dir=tmp_path)
    with pytest.raises(ckpt.TrainingDiverged, match="policy.actor.head.weight hold NaN or inf"):
        ckpt.save_checkpoint(cfg, policy=policy, preprocessor=None, postprocessor=None, algorithm=algorithm,
                             buffer=None, collector=None, actor=None, counters={"env_steps": 8})
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------- 5. Ctrl-C and SIGTERM


def test_sigterm_saves_the_step_prints_the_resume_command_and_resumes_exactly(sim_base, finished_run, tmp_path,
                                                                             monkeypatch):
    """SIGTERM during round 3 (env step 24, off the save schedule): the round finishes, a complete
    checkpoint of step 24 is saved, and resuming it ends where the uninterrupted run ended."""
    collect, calls = train_mod.ChunkCollector.collect, []

    def collect_then_signal(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return collect(self, *args, **kwargs)

    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train_mod.ChunkCollector, "collect", collect_then_signal)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as error:
        train_mod.train(tiny_run(sim_base, out))
    assert error.value.exit_code == 128 + signal.SIGTERM
    assert f"lerobot-steer-rl --resume=true --output_dir={out.resolve()}" in str(error.value)
    assert "stopped at env step 24" in str(error.value)
    assert signal.getsignal(signal.SIGTERM) == handler and not (out / LOCK_NAME).exists()
    assert ckpt.checkpoint_problems(checkpoint(out, 24)) == []

    monkeypatch.setattr(train_mod.ChunkCollector, "collect", collect)
    train_mod.train(resumed(out))
    a, b = checkpoint(finished_run, 48), checkpoint(out, 48)
    for part in ("pretrained_model/model.safetensors", "algorithm/model.safetensors",
                 "training_state/replay_buffer.safetensors"):
        ta, tb = load_file(str(a / part)), load_file(str(b / part))
        for key in ta:
            torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=0, msg=f"{part}: {key}")


@pytest.mark.slow  # a real lerobot-steer-rl process interrupted mid-run
def test_ctrl_c_on_the_command_saves_and_exits_130_with_the_resume_command(sim_base, tmp_path):
    out = tmp_path / "run"
    cmd = [BIN / "lerobot-steer-rl", "--policy.type=dsrl", f"--policy.base_policy_path={sim_base}",
           "--policy.device=cpu", "--policy.hidden_dims=[32,32]", "--env.type=so101_sim", "--env.obs_type=state",
           "--env.episode_length=24", "--n_envs=2", "--prefill_steps=16", "--batch_size=4", "--utd_ratio=0.5",
           "--eval.n_episodes=0", "--progress=false", "--steps=1000000", "--save_freq=0", "--log_freq=16",
           f"--output_dir={out}"]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert f"lerobot-steer-rl --resume=true --output_dir={out.resolve()}" in stderr
    saved = ckpt.resume_checkpoint(out)
    assert int(saved.name) > 0 and ckpt.checkpoint_problems(saved) == [] and not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- 6. local paths are not Hub ids


def _no_hub(*args, **kwargs):
    raise AssertionError("a local path was sent to the Hub")


@pytest.mark.parametrize("entry", [
    "/no/such/folder",  # absolute
    "./no_such_checkpoint", "../no_such_checkpoint", "~/no_such_lerobot_steer_checkpoint",
    "outputs/train/run/checkpoints/last/pretrained_model",  # more than the one slash of owner/name
    "no_such_checkpoint",  # no owner/
    "my run/pretrained model",  # one slash, but not a valid repo id
])
def test_a_local_path_that_does_not_exist_is_named_and_never_sent_to_the_hub(tmp_path, monkeypatch, entry):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_hub)
    absolute = Path(os.path.abspath(Path(entry).expanduser()))
    with pytest.raises(CheckpointError, match="does not exist") as error:
        local_checkpoint(entry)
    assert f"the checkpoint folder {absolute} does not exist" in str(error.value)
    with pytest.raises(CheckpointError, match=f"{absolute} does not exist"):  # --policy.base_policy_path
        DSRLConfig(base_policy_path=entry).ensure_base_facts()


@pytest.mark.parametrize("repo_id", ["lerobot/diffusion_pusht", "someone/tiny-policy.v2"])
def test_hub_ids_still_go_to_the_hub(sim_base, tmp_path, monkeypatch, repo_id):
    monkeypatch.chdir(tmp_path)
    assert local_checkpoint(repo_id) is None
    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, **kwargs: fetched.append(name) or str(sim_base))
    config = DSRLConfig(base_policy_path=repo_id)
    config.ensure_base_facts()
    assert fetched == [repo_id] and config.base_type == "diffusion"


def test_owner_name_whose_owner_folder_exists_is_named_as_a_folder_once_the_hub_says_no(tmp_path, monkeypatch):
    """`outputs/run` with an ./outputs folder here: maybe a Hub repo, so the Hub is asked first; when it
    has no such repo, the error names the local folder that does not exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network here
    with pytest.raises(CheckpointError) as error:
        load_policy_config("outputs/run", "cpu")
    assert f"the checkpoint folder {tmp_path / 'outputs' / 'run'} does not exist" in str(error.value)
    assert "not a Hub repo that could be fetched" in str(error.value)


def test_a_folder_without_config_json_says_so_and_where_the_checkpoint_is(finished_run):
    with pytest.raises(CheckpointError) as error:
        local_checkpoint(str(finished_run))
    message = str(error.value)
    assert f"{finished_run} exists but is not a LeRobot policy checkpoint: config.json is missing" in message
    assert str(finished_run / "checkpoints" / "last" / "pretrained_model") in message


def test_eval_names_a_missing_checkpoint_folder_instead_of_asking_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_hub)
    missing = tmp_path / "outputs" / "train" / "run" / "pretrained_model"
    with pytest.raises(SystemExit) as exit_:
        eval_main([f"--policy_paths=[{missing}]", f"--output_dir={tmp_path / 'eval'}", "--progress=false"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"error: the checkpoint folder {missing} does not exist (the nearest folder that exists is {tmp_path})" in err
    assert "Repo id" not in err and "connection" not in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------- 7. a sim checkpoint on a robot's observations


@pytest.mark.parametrize("policy_class, config_class", [(DSRLPolicy, DSRLConfig), (DynaVGDPolicy, DynaVGDConfig)])
def test_a_state_sim_checkpoint_given_robot_observations_names_what_is_missing(sim_base, tmp_path, policy_class,
                                                                               config_class):
    """What `lerobot-rollout --policy.path=<sim state checkpoint> --robot.type=so101_follower` hands the
    policy: joints and camera frames, no block/bowl poses. It must fail at the first inference, before
    an action exists, naming the missing feature and the fix, not with KeyError."""
    policy_class(config_class(base_policy_path=str(sim_base), device="cpu", hidden_dims=[32, 32])).save_pretrained(
        tmp_path / "ckpt")
    policy = policy_class.from_pretrained(tmp_path / "ckpt")  # as lerobot-rollout loads it
    policy.eval()
    policy.reset()
    robot = {STATE: torch.zeros(1, 6), "observation.images.front": torch.zeros(1, 3, 48, 64), "task": ["pick"]}
    with pytest.raises(FeatureMismatchError) as error:
        policy.select_action(robot)
    message = str(error.value)
    assert f"the observation lacks '{ENV}'" in message and f"'{ENV}' (10,)" in message and f"'{STATE}' (6,)" in message
    assert "cannot run on a real robot" in message and "--env.obs_type=pixels" in message
    assert "observation.images.front" in message  # what it was given
    assert not policy._queue  # no action was produced
    assert policy.select_action({**robot, ENV: torch.zeros(1, 10)}).shape == (1, 6)  # complete inputs still act


# ------------------------------------------------------------- 8. user errors: one line, exit 2


def _raising(error: BaseException, as_input: bool = False):
    def main():
        if as_input:
            with user_input():
                raise error
        raise error
    return main


@pytest.mark.parametrize("main, code, line", [
    (_raising(RunFolderLocked("run is busy")), 2, "error: run is busy"),
    (_raising(ckpt.TrainingDiverged("critic_loss=nan")), 2, "error: critic_loss=nan"),
    (_raising(CheckpointError("no base")), 2, "error: no base"),
    (_raising(FeatureMismatchError("no camera")), 2, "error: no camera"),
    (_raising(ValueError("--x=1 is out of range"), as_input=True), 2, "error: --x=1 is out of range"),
    (_raising(FileNotFoundError("no run there"), as_input=True), 2, "error: no run there"),
    (_raising(FileExistsError("--root exists"), as_input=True), 2, "error: --root exists"),
    (_raising(RunInterrupted("SIGTERM: stopped; continue with ...", signal.SIGTERM)), 143,
     "SIGTERM: stopped; continue with ..."),  # not an error: no prefix, exit 128 + signal
])
def test_user_errors_print_one_line_and_exit_with_their_code(capsys, main, code, line):
    with pytest.raises(SystemExit) as exit_:
        run_command(main)
    assert exit_.value.code == code
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("main", [
    _raising(ValueError("a bug")),  # a ValueError outside our validation
    _raising(FileNotFoundError("a bug")),
    _raising(KeyError("observation.state"), as_input=True),  # not an input error type
    _raising(RuntimeError("a bug")),
])
def test_bugs_keep_their_traceback(capsys, main):
    with pytest.raises(Exception, match="bug|observation.state"):
        run_command(main)
    assert capsys.readouterr().err == ""


def _busy(run_dir: Path) -> Path:
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    return run_dir


@pytest.mark.parametrize("command, args, message", [
    ("rl", lambda t, b: ["--resume=true", f"--output_dir={t / 'nothing'}"], "train_config.json does not exist"),
    ("rl", lambda t, b: [f"--policy.path={t / 'no_such'}"], f"checkpoint folder {{t}}{os.sep}no_such does not exist"),
    ("rl", lambda t, b: ["--policy.type=dsrl", f"--policy.base_policy_path={b}", "--env.type=so101_sim",
                         f"--output_dir={_busy(t / 'busy')}"], "is in use by another run"),
    ("rl", lambda t, b: ["--policy.type=dsrl", "--env.type=so101_sim", "--env.obs_type=state",
                         f"--output_dir={t / 'run'}"], "dsrl needs a base policy"),
    ("rl", lambda t, b: ["--policy.type=diffusion", f"--output_dir={t / 'run'}"], "steer it"),
    ("eval", lambda t, b: ["--policy_paths=[builtin:nope]"], "unknown built-in policy 'builtin:nope'"),
    ("eval", lambda t, b: ["--policy_paths=[noise:bad:x]"], "'noise:bad:x': write noise:<kind>:<checkpoint>"),
    ("eval", lambda t, b: ["--policy_paths=[builtin:hold]", "--n_episodes=0"], "n_episodes=0 must be positive"),
    ("eval", lambda t, b: ["--policy_paths=[builtin:hold]", "--n_episodes=many"], "Couldn't parse 'many'"),
    ("generate", lambda t, b: ["--num_episodes=0"], "num_episodes=0 must be at least 1"),
    ("generate", lambda t, b: [f"--root={t}"], "--root={t} already exists"),
    ("generate", lambda t, b: ["--env.obs_type=depth"], "obs_type='depth' is not one of"),
])
def test_every_command_answers_a_user_error_with_one_line_and_exit_2(sim_base, tmp_path, monkeypatch, capsys,
                                                                     command, args, message):
    import lerobot.utils.utils

    monkeypatch.setattr(lerobot.utils.utils, "init_logging", lambda *a, **k: None)
    argv = [str(a) for a in args(tmp_path, sim_base)]
    monkeypatch.setattr(sys, "argv", [f"lerobot-steer-{command}", *argv])
    main = {"rl": train_mod.main, "eval": lambda: eval_main(argv), "generate": generate_mod.main}[command]
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.format(t=tmp_path) in last and "Traceback" not in err


def test_every_console_script_goes_through_run_command():
    import importlib
    import inspect
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts
    for name, target in scripts.items():
        module, function = target.split(":")
        source = inspect.getsource(getattr(importlib.import_module(module), function))
        assert "run_command(" in source, f"{name} ({target}) does not report user errors with run_command"


@pytest.mark.slow  # a fresh interpreter running the console script
def test_the_installed_command_exits_2_with_one_error_line(tmp_path):
    """What a shell or a scheduler sees: exit status 2 and `error: <message>` on stderr, no traceback."""
    missing = tmp_path / "no" / "such" / "folder"
    result = subprocess.run([str(BIN / "lerobot-steer-eval"), f"--policy_paths=[{missing}]"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{missing} does not exist" in errors[0] and "Traceback" not in result.stderr
