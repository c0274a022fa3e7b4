"""`lerobot-steer-rl --runtime=ray`: rollout workers as Ray actors feeding the local learner.

In local Ray mode on the 2 CPUs here, with a tiny random diffusion base of the sim's shapes:

* a run with 2 workers writes the local loop's checkpoint layout and metrics, plus the `ray/...`
  entries (workers, weight broadcasts, staleness), and its weights were trained;
* a Ray run resumes locally and a local run resumes with Ray (the buffer and counters carry over);
* a worker killed mid-run is restarted by Ray, its in-flight chunk counted as lost, and collection
  goes on with both workers;
* `lerobot-steer-rl-robot --runtime=ray`: the arm's side in a Ray actor placed by a node label, the
  learner here; the run resumes locally; an arm worker killed mid-episode is restarted, the episode
  counted as lost, and the run goes on;
* `lerobot-steer-ppo --runtime=ray`: PPO and GRPO rollouts collected by 2 workers (a tiny SmolVLA in
  each), merged and learned from here; the checkpoint resumes in the local loop;
* `--runtime` / `--ray.*` mistakes are named before anything starts, and the base install never
  imports Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # the test extra installs it (`[ray]`); the base install does not need it
import torch
from helpers_bases import vla_builds  # noqa: F401  (pytest fixture)

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.dsrl import DSRLConfig
from lerobot_steer.rl.checkpoint import REQUIRED_FILES
from lerobot_steer.rl.config import OnlineEvalConfig, RayClusterConfig, RayRuntimeConfig, SteerRLConfig
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering import tiny_bases
from lerobot_steer.steering.tiny_bases import save_base, sim_state_diffusion

pytestmark = pytest.mark.slow

TINY_BASE = dict(horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
                 diffusion_step_embed_dim=8, num_inference_steps=2)


@pytest.fixture(scope="module")
def local_ray(vla_builds):
    """One local Ray for the module, on the machine's 2 CPUs (one per worker), its node labelled as the
    robot's machine would be; its worker processes build tiny VLAs offline as this one does (`vla_builds`)."""
    ray.init(num_cpus=2, labels={"robot": "so101"}, include_dashboard=False, log_to_driver=False, runtime_env={
        "worker_process_setup_hook": f"{tiny_bases.__name__}.{tiny_bases.enter_offline_vla_builds.__name__}",
        "env_vars": {tiny_bases.TINY_VLM_DIR_ENV: str(vla_builds)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sim_base(tmp_path_factory):
    torch.manual_seed(0)
    return save_base(*sim_state_diffusion(**TINY_BASE), tmp_path_factory.mktemp("ray_base"))


def run_config(base: Path, out: Path, runtime: str, steps: int, resume: bool = False) -> SteerRLConfig:
    """2 envs x 4-step chunks per worker; short episodes so that some end in every run."""
    return SteerRLConfig(
        policy=DSRLConfig(base_policy_path=str(base), device="cpu", hidden_dims=[32, 32]),
        env=SO101SimEnvConfig(obs_type="state", episode_length=24), n_envs=2, steps=steps, prefill_steps=32,
        batch_size=16, utd_ratio=0.5, log_freq=32, save_freq=64, eval=OnlineEvalConfig(n_episodes=2, batch_size=2),
        runtime=runtime, ray=RayRuntimeConfig(num_workers=2), output_dir=out, resume=resume, progress=False, seed=3,
    )


def counters(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())


def test_ray_run_checkpoints_like_the_local_loop_and_resumes_across_runtimes(local_ray, sim_base, tmp_path):
    from lerobot_steer.rl.train import train

    out = tmp_path / "run"
    row = train(run_config(sim_base, out, "ray", steps=96))
    last = out / "checkpoints" / "last"
    missing = [name for name in REQUIRED_FILES if not (last / name).is_file()]
    assert not missing, missing
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] >= 96 and row["updates"] > 0
    assert rows[-1]["ray/workers"] == 2 and rows[-1]["ray/broadcasts"] > 0
    assert rows[-1]["ray/staleness_mean"] >= 0 and rows[-1]["ray/lost_chunks"] == 0
    assert 0.0 <= rows[-1]["eval/success_rate"] <= 1.0
    assert {"critic_loss", "actor_loss", "alpha"} <= set(rows[-1])
    first = counters(out)
    assert first["transitions"] * 4 == first["env_steps"]  # 4-step chunks, every one stored

    # a Ray run resumed locally, then that run resumed with Ray: counters and buffer carry over
    train(run_config(sim_base, out, "local", steps=160, resume=True))
    second = counters(out)
    assert second["env_steps"] >= 160 and second["updates"] > first["updates"]
    assert second["transitions"] > first["transitions"]
    train(run_config(sim_base, out, "ray", steps=224, resume=True))
    third = counters(out)
    assert third["env_steps"] >= 224 and third["updates"] > second["updates"]
    assert third["transitions"] * 4 == third["env_steps"]


def test_a_killed_worker_is_restarted_and_collection_goes_on(local_ray, sim_base, tmp_path):
    from lerobot_steer.rl.train import build

    cfg = run_config(sim_base, tmp_path / "kill", "ray", steps=10_000)
    cfg.validate()
    collector = build(cfg)[5]
    try:
        while len(collector.pids) < 2:  # both workers up and serving
            batch, _ = collector.collect()
            assert len(batch) == 2 and batch.action.shape[1] == 4
        victim = ray.get(collector.workers[0].pid.remote())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 300  # a restart re-imports torch and LeRobot: seconds on a loaded machine
        while time.monotonic() < deadline:  # until the restarted worker serves a batch
            batch, _ = collector.collect()
            assert len(batch) == 2
            if collector.pids.get(0) not in (None, victim):
                break
        metrics = collector.metrics()
        # a request in flight when the worker died is lost; one queued for its restart is not
        assert metrics["ray/worker_restarts"] == 1 and metrics["ray/lost_chunks"] in (0, 1)
        assert metrics["ray/workers"] == 2 and collector.pids.get(0) not in (None, victim)  # Ray's restart serves
    finally:
        collector.close()


def arm_config(base: str, out: Path, runtime: str, episodes: int, resume: bool = False):
    """The sim robot with a small camera, labelled by the sim (no keys), short episodes, 1 prefill."""
    from lerobot_steer.record.eval_config import ResetConfig
    from lerobot_steer.rl.robot_config import RobotRLConfig
    from lerobot_steer.sim.robot import SimCameraConfig, SO101SimConfig

    return RobotRLConfig(
        robot=SO101SimConfig(cameras={"front": SimCameraConfig(width=32, height=24)}, fps=10, seed=0,
                             calibration_dir=out.parent / "calibration"),
        policy=DSRLConfig(base_policy_path=base, device="cpu", hidden_dims=[32, 32], push_to_hub=False),
        fps=10, episodes=episodes, prefill_episodes=1, episode_time_s=1.2, batch_size=4, buffer_capacity=1000,
        label_source="sim", reset=ResetConfig(time_s=0), play_sounds=False, device="cpu", output_dir=out,
        resume=resume, runtime=runtime, ray=RayClusterConfig(node_label="robot=so101"))


@pytest.fixture(scope="module")
def camera_base(tmp_path_factory) -> str:
    from helpers_bases import save_camera_diffusion

    return save_camera_diffusion(tmp_path_factory.mktemp("arm_base") / "pretrained_model", 24, 32)


def test_the_arm_runs_in_a_labelled_ray_worker_and_the_run_resumes_locally(local_ray, camera_base, tmp_path):
    from lerobot_steer.record.keys import ScriptedKeys
    from lerobot_steer.rl.robot_loop import train_on_robot

    out = tmp_path / "arm"
    result = train_on_robot(arm_config(camera_base, out, "ray", episodes=3), ScriptedKeys([]))
    last = out / "checkpoints" / "last"
    missing = [name for name in REQUIRED_FILES if not (last / name).is_file()]
    assert not missing, missing
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == [0, 1, 2] and result["updates"] > 0
    assert [r["phase"] for r in rows] == ["prior", "explore", "explore"]
    # the last episode acted with the weights of the updates after the second one
    assert rows[-1]["ray/weights_version"] > 0 and rows[-1]["ray/lost_episodes"] == 0
    assert {"critic_loss", "actor_loss"} <= set(rows[-1])
    first = counters(out)
    assert first["episodes"] == 3 and first["transitions"] == sum(r["chunks"] for r in rows)

    train_on_robot(arm_config(camera_base, out, "local", episodes=4, resume=True), ScriptedKeys([]))
    second = counters(out)
    assert second["episodes"] == 4 and second["updates"] > first["updates"]
    assert second["transitions"] > first["transitions"] and second["start_pose"] == first["start_pose"]


def test_a_policy_that_does_not_fit_the_arm_is_refused_by_the_worker_before_it_connects(local_ray, camera_base,
                                                                                          tmp_path):
    """The worker's feature check reaches the learner as the user error it is (the CLI prints it and
    exits 2), with the fix, and no episode runs."""
    from lerobot_steer.cli_errors import is_user_error
    from lerobot_steer.record.keys import ScriptedKeys
    from lerobot_steer.rl.robot_loop import train_on_robot
    from lerobot_steer.steering.features import FeatureMismatchError

    cfg = arm_config(camera_base, tmp_path / "bad", "ray", episodes=2)
    cfg.robot.cameras = {"wrist": cfg.robot.cameras["front"]}
    with pytest.raises(FeatureMismatchError, match="front.*fix") as info:
        train_on_robot(cfg, ScriptedKeys([]))
    assert is_user_error(info.value)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists() or not (tmp_path / "bad" / "metrics.jsonl").read_text()


def test_an_arm_worker_killed_mid_episode_is_restarted_and_the_run_goes_on(local_ray, camera_base, tmp_path):
    from lerobot_steer.record.keys import KeySource
    from lerobot_steer.rl.robot_loop import train_on_robot

    class KillOnce(KeySource):
        """The arm's process dies in frame 3 of take 1 (the restarted worker's takes are 2 and on)."""

        def on_frame(self, attempt, frame_index):
            if attempt == 1 and frame_index == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / "killed"
    result = train_on_robot(arm_config(camera_base, out, "ray", episodes=3), KillOnce())
    assert result["ray/lost_episodes"] == 1 and result["ray/worker_restarts"] == 1
    assert result["episodes"] == 3 and result["attempts"] >= 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == [0, 1, 2] and rows[-1]["ray/lost_episodes"] == 1


@pytest.mark.parametrize(("change", "message"), [
    ({"runtime": "spark"}, "--runtime=spark"),
    ({"ray": RayRuntimeConfig(node_label="robot")}, "--ray.node_label=robot"),
    ({"ray": RayRuntimeConfig(num_workers=0)}, "--ray.num_workers"),
])
def test_runtime_mistakes_are_named_before_anything_starts(sim_base, tmp_path, change, message):
    cfg = run_config(sim_base, tmp_path / "bad", "ray", steps=96)
    for key, value in change.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        cfg.validate()
    assert not (tmp_path / "bad").exists()


def test_the_local_loop_never_imports_ray():
    code = "import sys, lerobot_steer.rl.train, lerobot_steer.rl.config; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ppo_and_grpo_rounds_on_ray_workers_train_and_resume_locally(local_ray, tmp_path, monkeypatch, vla_builds):
    from lerobot_steer.rl.onpolicy.train import main
    from lerobot_steer.steering.tiny_bases import tiny_sim_smolvla

    torch.manual_seed(0)
    base = save_base(*tiny_sim_smolvla(vla_builds), tmp_path / "smolvla")
    sim = ["--env.type=so101_sim", "--env.obs_type=pixels", "--env.cameras=[front]", "--env.image_height=32",
           "--env.image_width=32", "--env.episode_length=8", "--env.reward_type=dense", "--n_envs=2",
           "--eval.n_episodes=0", "--progress=false", "--seed=5", "--policy.device=cpu"]

    def ppo(*args):
        monkeypatch.setattr(sys, "argv", ["lerobot-steer-ppo", *map(str, args)])
        main()

    def rows(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    out = tmp_path / "ppo"
    ppo("--policy.type=smolvla_rl", f"--policy.base_policy_path={base}", "--algorithm.type=ppo",
        "--algorithm.rollout_chunks=2", "--algorithm.minibatch_size=8", "--algorithm.update_epochs=1", *sim,
        "--runtime=ray", "--ray.num_workers=2", "--steps=32", "--log_freq=32", "--save_freq=32", f"--output_dir={out}")
    last = rows(out)[-1]
    # a round: 2 workers x 2 envs x 2 chunk steps of 4 env steps = 32 env steps, one PPO update of 8 rows
    assert last["env_steps"] == 32 and last["rollouts"] == 1 and last["updates"] == 1
    assert last["ray/workers"] == 2 and last["ray/lost_rollouts"] == 0 and last["ray/broadcast_mb"] > 0
    assert {"policy/loss", "value/loss", "policy/approx_kl"} <= set(last)
    assert (out / "checkpoints" / "last" / "training_state" / "rollout.safetensors").is_file()
    ppo("--resume=true", "--runtime=local", "--steps=64", f"--output_dir={out}")  # 2 local envs: 16 env steps a rollout
    resumed = rows(out)[-1]
    assert resumed["env_steps"] == 64 and resumed["rollouts"] == 3 and "ray/workers" not in resumed

    out = tmp_path / "grpo"
    ppo(f"--policy.path={out.parent / 'ppo' / 'checkpoints' / 'last' / 'pretrained_model'}", "--algorithm.type=grpo",
        "--algorithm.group_size=2", "--algorithm.minibatch_size=4", "--algorithm.update_epochs=1", *sim,
        "--runtime=ray", "--ray.num_workers=2", "--steps=32", "--log_freq=32", f"--output_dir={out}")
    last = rows(out)[-1]
    # one episode of 8 env steps (2 chunks) per env column: 4 columns, one group of 2 per worker
    assert last["rollouts"] == 1 and last["episodes"] == 4 and last["env_steps"] == 32
    assert "rollout/group_return_std" in last and "value/loss" not in last
