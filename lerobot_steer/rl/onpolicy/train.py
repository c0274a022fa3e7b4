"""`lerobot-steer-ppo`: on-policy RL (chunk-level PPO or GRPO) of a `pi0_rl` / `pi05_rl` / `smolvla_rl`
policy in a vectorized sim.

One readable loop, in the spirit of CleanRL's ppo.py:

    repeat: collect one chunk per env (sampled chain, log-likelihood, value) -> store in the rollout
    -> when the rollout is complete (PPO: `rollout_chunks` chunk steps; GRPO: every env's episode
    ended) compute the advantages and run the update epochs -> log / evaluate / checkpoint

GRPO starts each rollout by resetting the envs group by group with one seed per group (the sim's
reset is a pure function of its seed, so a group shares its initial state) and keeps each env's
first episode only.

Reused as they are: LeRobot's policy, processor and env factories, `RLAlgorithm` / `make_algorithm`,
optimizer and RNG state I/O; the project's chunk collector (`rl/chunk_rollout.py`), observation ->
batch path (`rl/acting.policy_batch`, with each env's task string for the VLA's tokenizer),
checkpoint helpers, run lock and stop signals (`rl/run_guard.py`), metrics log and evaluation
(`evaluation/rollout.run_episodes`, Wilson intervals). Run `lerobot-steer-ppo --help` for every flag.
"""


import logging
import math
import sys
import time
from collections import deque
from typing import Any

import draccus
import numpy as np
import torch
from tqdm.auto import tqdm

from lerobot.configs import parser
from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.rl.algorithms.factory import make_algorithm

from lerobot_steer.cli_errors import run_command, user_input
from lerobot_steer.evaluation.checks import check_policy_matches_env
from lerobot_steer.evaluation.rollout import PolicyUnderTest, run_episodes
from lerobot_steer.rl.checkpoint import TrainingDiverged, save_config
from lerobot_steer.rl.chunk_rollout import ChunkBatch, ChunkCollector
from lerobot_steer.rl.config import TRAIN_CONFIG_NAME
from lerobot_steer.rl.metrics_log import MetricsLog
from lerobot_steer.rl.run_guard import RunInterrupted, StopSignals, stop_signals_ignored
from lerobot_steer.rl.train import (
    Timers,
    _crossed,
    _resume_config,
    checkpoint_to_resume,
    eval_row,
    guarded_run,
    interrupted_message,
    report_line,
    window_row,
)

from .acting import ChainActor
from .checkpoint import REQUIRED_FILES, load_training_state, save_checkpoint
from .config import OnPolicyRunConfig
from .rollout_buffer import RolloutBuffer

logger = logging.getLogger("lerobot_steer.ppo")

COMMAND = "lerobot-steer-ppo"
CONSOLE_KEYS = ("env_steps", "updates", "rollouts", "train/success_rate", "train/episode_return", "policy/loss",
                "value/loss", "policy/approx_kl", "policy/clip_fraction", "value/explained_variance", "env_steps_per_s")


def build(cfg: OnPolicyRunConfig, n_envs: int | None = None):
    """Policy (eval mode: dropout off), processors, `n_envs` envs (default `--n_envs`; 0: none, a Ray
    learner), algorithm, actor and a rollout buffer of `cfg.total_envs()` env columns."""
    env_cfg = cfg.env
    n_envs = cfg.n_envs if n_envs is None else n_envs
    label = str(cfg.policy.pretrained_path or cfg.policy.base_policy_path or cfg.policy.type)
    check_policy_matches_env(cfg.policy, env_cfg, label=label)
    policy = make_policy(cfg.policy, env_cfg=env_cfg)
    policy.eval()
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
    cfg.algorithm.policy_config = policy.config
    algorithm = make_algorithm(cfg.algorithm, policy)
    algorithm.make_optimizers_and_scheduler()
    tasks = env_tasks(envs, env_cfg) if envs is not None else [getattr(env_cfg, "task_description", None)]
    actor = ChainActor(policy, preprocessor, postprocessor, env_pre, env_post,
                       tasks=tasks * (cfg.total_envs() // len(tasks)))
    buffer = RolloutBuffer(cfg.rollout_chunks(), cfg.total_envs() if envs is None else n_envs)
    return policy, preprocessor, postprocessor, env_pre, env_post, envs, algorithm, actor, buffer


def env_tasks(envs, env_cfg) -> list[str | None]:
    """Each env's task string (the VLA's instruction), asked of the envs as lerobot-eval does."""
    try:
        return [str(t) for t in envs.call("task_description")]
    except AttributeError:
        return [getattr(env_cfg, "task_description", None)] * envs.num_envs


def group_seeds(cfg: OnPolicyRunConfig, rollout: int) -> list[int]:
    """GRPO's reset seeds of rollout `rollout`: one per group of `group_size` envs, repeated within the
    group (a function of --seed and the rollout index, so a resumed run draws the same ones)."""
    size = cfg.algorithm.group_size
    seeds = np.random.SeedSequence([cfg.seed, rollout]).generate_state(cfg.n_envs // size)
    return [int(s) for s in np.repeat(seeds, size)]


def evaluate(cfg: OnPolicyRunConfig, policy, preprocessor, postprocessor, env_pre, env_post) -> dict[str, Any]:
    """`eval/...` in the configured mode and, with `eval.also_deterministic`, the other mode under
    `eval_sampled/...` or `eval_deterministic/...`."""
    row = evaluate_mode(cfg, policy, preprocessor, postprocessor, env_pre, env_post, cfg.eval.deterministic)
    if cfg.eval.also_deterministic:
        other = evaluate_mode(cfg, policy, preprocessor, postprocessor, env_pre, env_post, not cfg.eval.deterministic)
        prefix = "eval_sampled/" if cfg.eval.deterministic else "eval_deterministic/"
        row.update({prefix + k.removeprefix("eval/"): v for k, v in other.items()})
    return row


def evaluate_mode(cfg: OnPolicyRunConfig, policy, preprocessor, postprocessor, env_pre, env_post,
                  deterministic: bool) -> dict[str, Any]:
    """Episodes on the fixed eval seeds through the project's evaluation, acting with LeRobot's
    `select_action` in eval mode: the base's ODE decode (`deterministic`) or the stochastic chain."""
    saved = policy.config.deterministic_eval
    policy.config.deterministic_eval = deterministic
    try:
        put = PolicyUnderTest(label=policy.name, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                              env_preprocessor=env_pre, env_postprocessor=env_post)
        seeds = list(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.n_episodes))
        results = run_episodes(put, cfg.env, seeds, batch_size=cfg.eval.batch_size,
                               use_async_envs=cfg.eval.use_async_envs, progress=False)
    finally:
        policy.config.deterministic_eval = saved
        policy.reset()
        policy.eval()
    return eval_row(results)


def check_finite(metrics: dict[str, float], cfg: OnPolicyRunConfig, counters: dict[str, Any]) -> None:
    """Stop at the first update whose losses are not finite (nothing after the last finite checkpoint is saved)."""
    bad = {k: v for k, v in metrics.items() if k.endswith("loss") and not math.isfinite(float(v))}
    if bad:
        name, value = next(iter(bad.items()))
        raise TrainingDiverged(
            f"{name}={value} at env step {counters['env_steps']} (rollout {counters['rollouts'] + 1}): training "
            f"diverged and stopped; checkpoints/last is the last finite one. Lower --algorithm.lr (now "
            f"{cfg.algorithm.lr:g}) or set --algorithm.target_kl, and start again in a new --output_dir."
        )


def _rows(obs: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    return {k: _rows(v, index) if isinstance(v, dict) else np.asarray(v)[index] for k, v in obs.items()}


def store(batch: ChunkBatch, buffer: RolloutBuffer, actor: ChainActor, algorithm, episodic: bool) -> np.ndarray:
    """Put one chunk step into the rollout; returns which envs' rows count (GRPO: each env's first
    episode; PPO: all). Time-limit rows of a value-learning run get V(last observation) to bootstrap."""
    n = len(batch)
    bootstrap = None
    if algorithm.config.needs_value and batch.truncated.any():
        index = np.flatnonzero(batch.truncated)
        bootstrap = torch.zeros(n)
        bootstrap[torch.as_tensor(index)] = actor.value(_rows(batch.next_obs, index), index)
    valid = torch.ones(n, dtype=torch.bool)
    if episodic and len(buffer):
        valid = buffer["valid"][-1] & ~(buffer["terminated"][-1] | buffer["truncated"][-1])
    extras = batch.extras
    buffer.add(batch.obs, torch.as_tensor(extras["chain"]), log_prob=torch.as_tensor(extras["log_prob"]),
               value=torch.as_tensor(extras["value"]) if "value" in extras else None, reward=batch.discounted_reward,
               discount=algorithm.config.gamma ** batch.n_steps.astype(np.float64), terminated=batch.terminated,
               truncated=batch.truncated, bootstrap_value=bootstrap, valid=valid,
               weights_version=algorithm.optimization_step)
    return valid.numpy()


def rollout_complete(buffer: RolloutBuffer, episodic: bool) -> bool:
    if buffer.full:
        return True
    return episodic and not bool((buffer["valid"][-1] & ~(buffer["terminated"][-1] | buffer["truncated"][-1])).any())


def train(cfg: OnPolicyRunConfig) -> dict[str, Any]:
    """Run (or resume) one on-policy run; returns the last logged row. The output folder is locked for
    the run, and the first SIGINT / SIGTERM stops it after the current chunk step with a checkpoint."""
    with user_input():
        cfg.validate()
    with guarded_run(cfg) as stop:
        return _run(cfg, stop)


def _run(cfg: OnPolicyRunConfig, stop: StopSignals) -> dict[str, Any]:
    resume_from = checkpoint_to_resume(cfg, REQUIRED_FILES)
    local = cfg.runtime == "local"
    policy, preprocessor, postprocessor, env_pre, env_post, envs, algorithm, actor, buffer = build(
        cfg, None if local else 0)
    episodic = cfg.algorithm.episodic
    if local:
        collector = ChunkCollector(envs, gamma=cfg.algorithm.gamma)
    else:
        from .ray_runtime import RayRollouts  # Ray is an optional extra

        collector = rollouts = RayRollouts(cfg, algorithm)
    counters: dict[str, Any] = {"env_steps": 0, "updates": 0, "rollouts": 0, "episodes": 0, "wall_s": 0.0}
    try:
        if resume_from is not None:
            # A Ray round collects whole rollouts: a local run's partial one is dropped (its steps stay counted).
            counters.update(load_training_state(resume_from, policy=policy, algorithm=algorithm, buffer=buffer,
                                                collector=collector, partial_rollout=local))
            logger.info("Resuming %s from env step %d (%d optimizer steps, %d chunk steps of the rollout collected)",
                        cfg.output_dir, counters["env_steps"], counters["updates"], len(buffer))
        elif not episodic:
            collector.reset(seed=cfg.seed)
    except BaseException:
        collector.close()
        raise
    save_config(cfg, cfg.output_dir / TRAIN_CONFIG_NAME)
    log = MetricsLog(cfg.output_dir, resume_env_steps=counters["env_steps"] if resume_from else None,
                     wandb_cfg=cfg.wandb, run_config=draccus.encode(cfg) if cfg.wandb.enable else None)

    timers = Timers()
    recent = deque((tuple(e) for e in counters.pop("recent_episodes", [])), maxlen=50)
    last_stats: dict[str, float] = counters.pop("last_stats", {})
    window_start, window_steps = time.perf_counter(), 0
    row: dict[str, Any] = {}

    def timed_actor(obs):
        with timers.time("inference"):
            return actor(obs)

    bar = tqdm(total=cfg.steps, initial=counters["env_steps"], unit="step", desc=f"{cfg.policy.type} {cfg.algorithm.type}",
               disable=not cfg.progress, mininterval=2.0)
    say = bar.write if cfg.progress else logger.info
    try:
        while counters["env_steps"] < cfg.steps:
            before = counters["env_steps"]
            if local:
                if episodic and not len(buffer):  # a GRPO rollout starts from seeded resets, group by group
                    collector.reset(seed=group_seeds(cfg, counters["rollouts"]))
                t0, inference0 = time.perf_counter(), timers.seconds["inference"]
                batch, episodes = collector.collect(timed_actor)
                timers.seconds["physics"] += time.perf_counter() - t0 - (timers.seconds["inference"] - inference0)
                with timers.time("other"):
                    valid = store(batch, buffer, actor, algorithm, episodic)
                steps_now = batch.action.shape[1] * len(batch)
                # GRPO: the first episode of each env
                finished = [(e.success, e.episode_return, e.length) for e in episodes if valid[e.env_index]]
                complete = rollout_complete(buffer, episodic)
            else:  # one synchronous round: every worker's rollout, merged (acting and physics run there)
                with timers.time("physics"):
                    steps_now, finished, last_value, actor.last_stats = rollouts.collect(buffer, counters["rollouts"])
                complete = True
            counters["env_steps"] += steps_now
            window_steps += steps_now
            bar.update(steps_now)
            counters["episodes"] += len(finished)
            recent.extend(finished)

            if complete:
                with timers.time("updates"):
                    if local:
                        last_value = actor.value(collector.obs) if cfg.algorithm.needs_value else None
                    stats = algorithm.learn(buffer, actor.batch, last_value)
                    last_stats = {**stats.losses, **stats.extra}
                    check_finite(last_stats, cfg, counters)
                    buffer.clear()
                    counters["rollouts"] += 1
                    counters["updates"] = algorithm.optimization_step

            now = counters["env_steps"]
            done = now >= cfg.steps
            eval_due = cfg.eval.n_episodes > 0 and (done or _crossed(before, now, cfg.eval.freq))
            if _crossed(before, now, cfg.log_freq) or done:
                elapsed = time.perf_counter() - window_start
                counters["wall_s"] += elapsed
                row = window_row(counters, ("env_steps", "updates", "rollouts", "episodes"), recent)
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
                timers.seconds = dict.fromkeys(timers.seconds, 0.0)
            elif eval_due:
                log.log({"env_steps": now, **evaluate(cfg, policy, preprocessor, postprocessor, env_pre, env_post)})

            if _crossed(before, now, cfg.save_freq) or done or stop.requested:
                with timers.time("other"):
                    path = save_checkpoint(cfg, policy=policy, preprocessor=preprocessor, postprocessor=postprocessor,
                                           algorithm=algorithm, buffer=buffer, collector=collector,
                                           counters={**counters, "recent_episodes": list(recent),
                                                     "last_stats": last_stats})
                say(f"checkpoint: {path}")
            if stop.requested and not done:
                raise RunInterrupted(interrupted_message(cfg, stop.signum, now, path, command=COMMAND), stop.signum)
    finally:
        bar.close()
        collector.close()
        log.close()
    return row


@parser.wrap()
def train_cli(cfg: OnPolicyRunConfig) -> None:
    with user_input():  # --resume=true without a saved run
        cfg = _resume_config(cfg, sys.argv[1:], OnPolicyRunConfig)
    train(cfg)


def main() -> None:
    """User errors print `error: <message>` and exit 2; Ctrl-C / SIGTERM print the resume command and
    exit 130 / 143 (`cli_errors.run_command`)."""
    from lerobot.utils.utils import init_logging

    init_logging()
    run_command(train_cli)


if __name__ == "__main__":
    main()
