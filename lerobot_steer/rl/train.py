"""`lerobot-steer-rl`: online fine-tuning of a `dsrl` / `dyna_vgd` policy in a vectorized sim.

One readable loop, in the spirit of CleanRL:

    prefill (base on N(0, I) noise) -> repeat: collect one chunk per env -> store -> `utd_ratio`
    gradient steps per stored chunk -> log / evaluate / checkpoint

LeRobot 0.6.1 parts used as they are: the policy types and their processors (`make_policy`,
`make_pre_post_processors`), the env (`EnvConfig.create_envs`, `preprocess_observation`, env
processors), the `RLAlgorithm` contract and `make_algorithm`, `RLTrainer` (which draws batches through
the algorithm's data iterator and normalizes observations with the policy's preprocessor),
`OnlineOfflineMixer` (offline data, `--dataset.*`), the learner's checkpoint layout, optimizer and RNG state I/O. Replaced, because
LeRobot's actor/learner are single-step, single-env and SAC-shaped: the chunk-level collector
(`chunk_rollout.py`), the uint8 chunk buffer (`replay_buffer.py`), the acting side (`acting.py`) and
the exact-resume checkpoints (`checkpoint.py`). Run `lerobot-steer-rl --help` for every flag.

A run owns its folder (`run_guard.RunLock`), stops on Ctrl-C / SIGTERM only after saving
(`run_guard.StopSignals`), and stops at the first non-finite loss (`check_finite_losses`).
"""


import json
import logging
import math
import shlex
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import draccus
from tqdm.auto import tqdm

from lerobot.configs import parser
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.rl.algorithms.factory import make_algorithm
from lerobot.rl.data_sources import OnlineOfflineMixer
from lerobot.rl.trainer import RLTrainer
from lerobot.utils.random_utils import set_seed

from lerobot_steer.cli_errors import run_command, user_input
from lerobot_steer.evaluation.checks import check_policy_matches_env
from lerobot_steer.evaluation.rollout import PolicyUnderTest, run_episodes
from lerobot_steer.evaluation.stats import summarize

from .acting import LearnerPreprocessor, SteeringActor
from .checkpoint import (
    REQUIRED_FILES,
    TRAIN_CONFIG_NAME,
    TrainingDiverged,
    check_resumable,
    load_training_state,
    resume_checkpoint,
    save_checkpoint,
    save_config,
)
from .chunk_rollout import ChunkCollector
from .config import SteerRLConfig
from .hub import push_policy, push_requested
from .metrics_log import MetricsLog, console_line
from .offline_data import check_offline_observations, load_offline_buffer, mixed_with_offline
from .replay_buffer import ChunkReplayBuffer, lerobot_observation
from .run_guard import RunInterrupted, RunLock, StopSignals, stop_signals_ignored

logger = logging.getLogger("lerobot_steer.rl")

CONSOLE_KEYS = ("env_steps", "updates", "episodes", "train/success_rate", "train/episode_return", "critic_loss",
                "actor_loss", "alpha", "lambda", "w_local", "w_global", "env_steps_per_s")


@dataclass
class Timers:
    """Wall time spent in each part of the loop, for the throughput breakdown."""

    seconds: dict[str, float] = field(default_factory=lambda: {"physics": 0.0, "inference": 0.0, "updates": 0.0, "other": 0.0})

    @contextmanager
    def time(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - t0

    def shares(self) -> dict[str, float]:
        total = sum(self.seconds.values()) or 1.0
        return {f"time_share/{k}": v / total for k, v in self.seconds.items()}


def _crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


@contextmanager
def guarded_run(cfg) -> Iterator[StopSignals]:
    """The frame of every training run: seeded (`--seed`), in its output folder, which is locked for the
    run (`RunLock`); yields the `StopSignals` whose first SIGINT / SIGTERM the loop turns into a
    checkpoint and a `RunInterrupted`."""
    set_seed(cfg.seed)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(cfg.output_dir), StopSignals() as stop:
        yield stop


def checkpoint_to_resume(cfg, required: tuple[str, ...] = REQUIRED_FILES) -> Path | None:
    """With `--resume=true`: the newest complete checkpoint of the run (whose files of `required` all
    load), checked against the command line's flags, and the policy set to load its weights; None for
    a fresh run. Nothing to resume from, or flags the saved run cannot take, are the user's error."""
    with user_input():
        resume_from = resume_checkpoint(cfg.output_dir, required) if cfg.resume else None
        if resume_from is not None:
            check_resumable(cfg, resume_from)
    if resume_from is not None:
        cfg.policy.pretrained_path = resume_from / "pretrained_model"
    return resume_from


def window_row(counters: dict[str, Any], keys: tuple[str, ...], recent, **extra) -> dict[str, Any]:
    """The head of a log row: the counters `keys`, the training wall time, `extra`, and the rolling
    `train/...` means of the recent (success, return, length) episodes."""
    row = {k: counters[k] for k in keys}
    row["wall_minutes"] = counters["wall_s"] / 60
    row.update(extra)
    if recent:
        for i, name in enumerate(("success_rate", "episode_return", "episode_length")):
            row[f"train/{name}"] = sum(float(e[i]) for e in recent) / len(recent)
    return row


def report_line(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The console line of a log row, with the evaluation's success rate and Wilson CI when it has one."""
    line = console_line(row, keys)
    if "eval/success_rate" in row:
        line += (f" | eval success {row['eval/success_rate']:.0%} "
                 f"[{row['eval/ci95_low']:.0%}, {row['eval/ci95_high']:.0%}]")
    return line


def build_acting(cfg: SteerRLConfig, n_envs: int):
    """What acts: the policy (fresh, from --policy.path, or resumed), its processors, the env's
    processors, `n_envs` vector envs (None for 0: a learner whose rollouts run elsewhere) and the
    `SteeringActor`. The learner builds it once; each Ray rollout worker builds its own."""
    env_cfg = cfg.env
    if cfg.policy.pretrained_path is not None:
        check_policy_matches_env(cfg.policy, env_cfg, label=str(cfg.policy.pretrained_path))
    policy = make_policy(cfg.policy, env_cfg=env_cfg)
    pretrained = str(cfg.policy.pretrained_path) if cfg.policy.pretrained_path is not None else None
    preprocessor, postprocessor = make_pre_post_processors(
        policy_cfg=policy.config, pretrained_path=pretrained,
        preprocessor_overrides={"device_processor": {"device": str(policy.config.device)}},
    )
    env_pre, env_post = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy.config)
    envs = None
    if n_envs:
        with stop_signals_ignored():  # async env workers leave Ctrl-C to the loop, which saves first
            envs = env_cfg.create_envs(n_envs=n_envs, use_async_envs=cfg.async_envs)[env_cfg.type][0]
    task = getattr(env_cfg, "task_description", None)
    actor = SteeringActor(policy, preprocessor, postprocessor, env_pre, env_post, task=task)
    return policy, preprocessor, postprocessor, env_pre, env_post, envs, actor


def build(cfg: SteerRLConfig):
    """Policy, processors, the chunk collector (local vector envs, or Ray rollout workers with
    `--runtime=ray`), algorithm, buffer, trainer and actor of a run."""
    local = cfg.runtime == "local"
    policy, preprocessor, postprocessor, env_pre, env_post, envs, actor = build_acting(cfg, cfg.n_envs if local else 0)
    cfg.algorithm.policy_config = policy.config
    algorithm = make_algorithm(cfg.algorithm, policy)
    buffer = ChunkReplayBuffer(cfg.buffer_capacity, device=policy.config.device, seed=cfg.seed)
    trainer = RLTrainer(algorithm, OnlineOfflineMixer(buffer, None, online_ratio=1.0), cfg.batch_size,
                        preprocessor=LearnerPreprocessor(preprocessor, actor.task))
    if local:
        collector = ChunkCollector(envs)
    else:
        from .ray_runtime import RayCollector  # Ray is an optional extra

        collector = RayCollector(cfg, actor, algorithm)
    return policy, preprocessor, postprocessor, env_pre, env_post, collector, algorithm, buffer, trainer, actor


def evaluate(cfg: SteerRLConfig, policy, preprocessor, postprocessor, env_pre, env_post) -> dict[str, Any]:
    """`eval/...` in the configured mode and, with `eval.also_deterministic` on a policy that has a
    deterministic mode, `eval_deterministic/...` in the other one."""
    row = evaluate_mode(cfg, policy, preprocessor, postprocessor, env_pre, env_post, cfg.eval.deterministic)
    if cfg.eval.also_deterministic and policy.has_deterministic_mode:
        other = evaluate_mode(cfg, policy, preprocessor, postprocessor, env_pre, env_post, not cfg.eval.deterministic)
        prefix = "eval_sampled/" if cfg.eval.deterministic else "eval_deterministic/"
        row.update({prefix + k.removeprefix("eval/"): v for k, v in other.items()})
    return row


def evaluate_mode(cfg: SteerRLConfig, policy, preprocessor, postprocessor, env_pre, env_post,
                  deterministic_mode: bool) -> dict[str, Any]:
    """Success rate (Wilson 95 % CI), outcomes and returns on the fixed eval seeds, without disturbing
    the training envs' observation history or the policy's train mode."""
    history, was_training = policy.adapter.history_state(), policy.training
    policy.eval()
    try:
        put = PolicyUnderTest(label=policy.name, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                              env_preprocessor=env_pre, env_postprocessor=env_post)
        seeds = list(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.n_episodes))
        with policy.acting_mode(deterministic_mode):
            results = run_episodes(put, cfg.env, seeds, batch_size=cfg.eval.batch_size,
                                   use_async_envs=cfg.eval.use_async_envs, progress=False)
    finally:
        policy.reset()
        policy.adapter.load_history_state(history)
        policy.train(was_training)
    return eval_row(results)


def eval_row(results) -> dict[str, Any]:
    """The `eval/...` metrics of a list of `EpisodeResult`s: success rate with its Wilson 95 % CI,
    returns, episode lengths, outcome counts."""
    summary = summarize(results)
    row = {"eval/success_rate": summary.success_rate, "eval/ci95_low": summary.ci95[0], "eval/ci95_high": summary.ci95[1],
           "eval/mean_return": summary.mean_return, "eval/mean_episode_steps": summary.mean_episode_steps,
           "eval/n_episodes": summary.n_episodes}
    if summary.mean_steps_to_success is not None:
        row["eval/mean_steps_to_success"] = summary.mean_steps_to_success
    row.update({f"eval/outcome/{k}": v for k, v in summary.outcomes.items()})
    return row


def check_finite_losses(losses: dict[str, float], cfg: SteerRLConfig, counters: dict[str, Any]) -> None:
    """Stop at the first update whose loss is NaN or inf: every later update and checkpoint would
    carry it, and `last` must stay on the last finite checkpoint."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(float(value))}
    if not bad:
        return
    name, value = next(iter(bad.items()))
    last = cfg.output_dir / "checkpoints" / "last"
    kept = f"{last} is still {last.resolve().name}" if last.exists() else "no checkpoint was saved"
    lrs = " ".join(f"--policy.{f.name}={getattr(cfg.policy, f.name):g}" for f in fields(cfg.policy)
                   if f.name.endswith("_lr"))
    raise TrainingDiverged(
        f"{name}={value} at env step {counters['env_steps']} (update {counters['updates'] + 1}): training diverged "
        f"and stopped; nothing after the last finite checkpoint is saved ({kept}). Lower the learning rates "
        f"(now {lrs}) or --utd_ratio={cfg.utd_ratio:g}, and start again in a new --output_dir."
    )


def interrupted_message(cfg: SteerRLConfig, signum: int, env_steps: int, checkpoint: Path,
                        command: str = "lerobot-steer-rl") -> str:
    """What a stopped run tells its user: where it stopped and the exact command that continues it."""
    folder = shlex.quote(str(cfg.output_dir.resolve()))
    return (f"{signal.Signals(signum).name}: stopped at env step {env_steps} of {cfg.steps}; checkpoint {checkpoint}. "
            f"Continue with:\n  {command} --resume=true --output_dir={folder}")


def train(cfg: SteerRLConfig) -> dict[str, Any]:
    """Run (or resume) one online training run; returns the last logged row.

    The output folder is locked for the whole run (`RunLock`), and the first SIGINT / SIGTERM stops it
    after the current step with a checkpoint (`RunInterrupted`, see `run_guard`).
    """
    with user_input():  # a refused flag or path is the user's error (one line, exit 2), not a bug
        cfg.validate()
    with user_input(ValueError, RuntimeError):  # before any work: a push without a repo id or Hub login fails now
        push = push_requested(cfg)
    with guarded_run(cfg) as stop:
        return _run(cfg, push, stop)


def _run(cfg: SteerRLConfig, push: bool, stop: StopSignals) -> dict[str, Any]:
    """The run itself, in its locked folder. train_config.json is written only once the run is built
    and its checkpoint loaded, so a refused resume leaves the run's files as they were."""
    resume_from = checkpoint_to_resume(cfg)
    (policy, preprocessor, postprocessor, env_pre, env_post, collector, algorithm, buffer, trainer,
     actor) = build(cfg)

    counters: dict[str, Any] = {"env_steps": 0, "updates": 0, "episodes": 0, "transitions": 0, "update_debt": 0.0,
                                "wall_s": 0.0}
    offline = None
    try:
        if cfg.dataset is not None:
            with user_input(ValueError, FileNotFoundError):  # a dataset the policy cannot learn from
                offline = load_offline_buffer(cfg.dataset, policy, preprocessor, seed=cfg.seed + 1, progress=cfg.progress,
                                              cut_at_success=getattr(cfg.env, "terminate_on_success", False))
        if resume_from is not None:
            counters.update(load_training_state(resume_from, policy=policy, algorithm=algorithm, buffer=buffer,
                                                collector=collector, actor=actor, offline=offline))
            logger.info("Resuming %s from env step %d (%d updates, %d transitions in the buffer)",
                        cfg.output_dir, counters["env_steps"], counters["updates"], len(buffer))
        else:
            collector.reset(seed=cfg.seed)
        if offline is not None:  # before the prefill: a dataset recorded with other observations is refused now
            with user_input(ValueError):
                check_offline_observations(offline, set(lerobot_observation(collector.obs)))
    except BaseException:
        collector.close()
        raise
    save_config(cfg, cfg.output_dir / TRAIN_CONFIG_NAME)
    log = MetricsLog(cfg.output_dir, resume_env_steps=counters["env_steps"] if resume_from else None,
                     wandb_cfg=cfg.wandb, run_config=draccus.encode(cfg) if cfg.wandb.enable else None)

    timers = Timers()
    # The last 50 training episodes (success, return, length), for rolling rates; checkpointed.
    recent = deque((tuple(e) for e in counters.pop("recent_episodes", [])), maxlen=50)
    last_stats: dict[str, float] = {}
    # --utd_ratio gradient steps are owed per stored chunk transition; one update() makes
    # --algorithm.grad_steps_per_update of them (default 1), so the debt is paid in those units.
    steps_per_update = cfg.algorithm.grad_steps_per_update
    window_start, window_steps = time.perf_counter(), 0
    row: dict[str, Any] = {}

    def timed_actor(obs):
        with timers.time("inference"):
            return actor(obs)

    def timed_observe(obs):
        with timers.time("inference"):
            actor.observe(obs)

    bar = tqdm(total=cfg.steps, initial=counters["env_steps"], unit="step", desc=f"{cfg.policy.type} online",
               disable=not cfg.progress, mininterval=2.0)
    say = bar.write if cfg.progress else logger.info
    try:
        while counters["env_steps"] < cfg.steps:
            before = counters["env_steps"]
            actor.mode = "prior" if before < cfg.prefill_steps else "explore"
            t0, inference0 = time.perf_counter(), timers.seconds["inference"]
            batch, episodes = collector.collect(timed_actor, observe=timed_observe)
            timers.seconds["physics"] += time.perf_counter() - t0 - (timers.seconds["inference"] - inference0)
            with timers.time("other"):
                actor.episodes_ended(collector.episode_start)
                buffer.add(batch)
            steps_now = batch.action.shape[1] * len(batch)
            counters["env_steps"] += steps_now
            counters["transitions"] += len(batch)
            counters["episodes"] += len(episodes)
            recent.extend((e.success, e.episode_return, e.length) for e in episodes)
            window_steps += steps_now
            bar.update(steps_now)

            if counters["env_steps"] >= cfg.prefill_steps and len(buffer) >= min(cfg.batch_size, cfg.buffer_capacity):
                counters["update_debt"] += cfg.utd_ratio * len(batch)
                with timers.time("updates"):
                    if offline is not None and trainer.data_mixer.offline_buffer is None:
                        with user_input(ValueError):
                            trainer.set_data_mixer(mixed_with_offline(buffer, offline, cfg.online_ratio))
                    while counters["update_debt"] >= steps_per_update:
                        stats = trainer.training_step()
                        check_finite_losses(stats.losses, cfg, counters)
                        last_stats = {**stats.losses, **stats.extra,
                                      **{f"{k}_grad_norm": v for k, v in stats.grad_norms.items()}}
                        counters["updates"] += steps_per_update
                        counters["update_debt"] -= steps_per_update
            now = counters["env_steps"]
            done = now >= cfg.steps
            eval_due = cfg.eval.n_episodes > 0 and (done or _crossed(before, now, cfg.eval.freq))

            if _crossed(before, now, cfg.log_freq) or done:
                elapsed = time.perf_counter() - window_start
                counters["wall_s"] += elapsed  # training time, evaluations excluded
                row = window_row(counters, ("env_steps", "updates", "episodes", "transitions"), recent,
                                 phase=actor.mode)
                row.update(last_stats)
                row.update({f"acting/{k}": v for k, v in actor.last_stats.items()})
                row["env_steps_per_s"] = window_steps / elapsed if elapsed > 0 else math.nan
                row.update(timers.shares())
                row.update(collector.metrics())
                if eval_due:
                    row.update(evaluate(cfg, policy, preprocessor, postprocessor, env_pre, env_post))
                log.log(row)
                say(report_line(row, CONSOLE_KEYS))
                window_start, window_steps = time.perf_counter(), 0
                timers.seconds = dict.fromkeys(timers.seconds, 0.0)  # shares per log window
            elif eval_due:
                log.log({"env_steps": now, **evaluate(cfg, policy, preprocessor, postprocessor, env_pre, env_post)})

            if _crossed(before, now, cfg.save_freq) or done or stop.requested:  # a stop request saves first
                with timers.time("other"):
                    path = save_checkpoint(cfg, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                                           algorithm=algorithm, buffer=buffer, collector=collector, actor=actor,
                                           counters={**counters, "recent_episodes": list(recent)}, offline=offline)
                say(f"checkpoint: {path}")
            if stop.requested and not done:
                raise RunInterrupted(interrupted_message(cfg, stop.signum, now, path), stop.signum)
    finally:
        bar.close()
        collector.close()
        log.close()
    if push:
        logger.info("Uploaded to the Hub: %s", push_policy(cfg, policy, preprocessor, postprocessor, counters))
    return row


@parser.wrap()
def train_cli(cfg: SteerRLConfig) -> None:
    with user_input():  # --resume=true without a saved run
        cfg = _resume_config(cfg, sys.argv[1:])
    train(cfg)  # the CLI layer owns the command line; train() never reads it


def _resume_config(cfg, cli_args: list[str], config_class: type = SteerRLConfig):
    """`--resume=true --output_dir=<run>`: the run's saved config (a `config_class`), with the command
    line's other flags (`cli_args`) applied on top (e.g. a larger --steps)."""
    if not cfg.resume or cfg.output_dir is None:
        return cfg
    saved = Path(cfg.output_dir) / TRAIN_CONFIG_NAME
    if not saved.is_file():
        raise FileNotFoundError(f"--resume=true: {saved} does not exist (is --output_dir the folder of an earlier run?)")
    args = [a for a in cli_args if not a.startswith(("--policy.path", "--config_path"))]
    with tempfile.TemporaryDirectory() as tmp:
        config_path = _migrated_config(saved, Path(tmp))
        with draccus.config_type("json"):
            return draccus.parse(config_class, config_path=config_path, args=args)


# Renamed config fields: (section, old name) -> new name. Runs saved before a rename still resume.
RENAMED_FIELDS = {("algorithm", "utd_ratio"): "grad_steps_per_update"}


def _migrated_config(saved: Path, scratch: Path) -> Path:
    """`saved`, or a copy in `scratch` with renamed fields under their new names (the run folder's own
    file is left as it is: nothing is written there before the resumed config validates)."""
    try:
        config = json.loads(saved.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{saved} is not valid JSON ({error}): restore it from a checkpoint's train_config.json") from error
    renamed = []
    for (section, old), new in RENAMED_FIELDS.items():
        fields = config.get(section)
        if isinstance(fields, dict) and old in fields and new not in fields:
            fields[new] = fields.pop(old)
            renamed.append(f"{section}.{old} -> {section}.{new}")
    if not renamed:
        return saved
    logger.info("resuming a run saved with older field names: %s", ", ".join(renamed))
    migrated = scratch / saved.name
    migrated.write_text(json.dumps(config, indent=4))
    return migrated


def main() -> None:
    """User errors (bad flags or paths, a busy or damaged run folder, divergence) print `error: <message>`
    and exit 2; Ctrl-C / SIGTERM print the resume command and exit 130 / 143 (`cli_errors.run_command`)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    run_command(train_cli)


if __name__ == "__main__":
    main()
