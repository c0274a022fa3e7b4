"""Chunk-level data collection on a gymnasium vector env: one transition per executed chunk per env.

Steering methods (DSRL, VGD) act in the chunk-level MDP: the policy picks a whole chunk of
k actions, the env executes them open-loop, and the learner sees one transition with the summed
reward and the discount exponent `n_steps`. LeRobot's actor loop is single-step and single-env, so
this module is the missing piece between `EnvConfig.create_envs(...)` vector envs and a replay buffer.

Episode ends inside a chunk. LeRobot's `create_envs` builds vector envs with gymnasium's
`AutoresetMode.SAME_STEP`: the step that ends an episode already returns the *reset* observation,
with the true last observation in `info["final_obs"][i]` and the last step's info in
`info["final_info"]` (masked by `info["_final_obs"]`). For that env the collector

* stops accumulating reward and steps (`n_steps` < k), keeps `terminated` and `truncated` apart
  (a time-out is not a terminal: the learner bootstraps from it), and uses the pre-reset
  `final_obs` as the transition's `next_obs`;
* still has to feed it actions for the rest of the chunk (a vector env steps every sub-env). Those
  "ghost" steps run in the new episode, so after the chunk the env is reset once more, by itself
  (`reset(options={"reset_mask": ...})`): the next chunk starts from a clean reset observation and
  nothing from the old chunk leaks into the new episode. Cost: at most k - 1 wasted steps and one
  extra reset per episode end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

logger = logging.getLogger(__name__)

Observation = dict[str, Any]  # a gym (possibly nested) dict of batched numpy arrays


class ActedChunk(NamedTuple):
    """What a chunk policy returns: the chunk the envs execute, what the replay buffer keeps beside it,
    and, when the learner trains on another representation of the same chunk (the policy's
    normalized actions rather than env units), that one. A plain `(action, extras)` pair also works."""

    action: Any  # (n_envs, k, action_dim), env units
    extras: Mapping[str, Any]  # {name: (n_envs, ...)}
    learner_action: Any = None  # (n_envs, k', action_dim) or None: `action` is what the learner sees


ChunkPolicy = Callable[[Observation], ActedChunk | tuple[Any, Mapping[str, Any]]]


@dataclass
class EpisodeStats:
    """One finished episode. `failure` is the env's failure-taxonomy label (`info['failure']`)."""

    env_index: int
    episode_return: float
    length: int
    success: bool
    terminated: bool
    truncated: bool
    failure: str | None = None


@dataclass
class ChunkBatch:
    """One chunk-level transition per env (leading dimension n_envs), numpy arrays.

    obs: chunk-start observations. next_obs: observation after the last *executed* step (the
    pre-reset final observation when the episode ended inside the chunk). action: the commanded
    chunk (n_envs, k, action_dim); only its first `n_steps` actions ran. reward: undiscounted sum of
    the executed steps' rewards. terminated / truncated: how the episode ended inside the chunk (both
    False if it did not). extras: what the policy returned alongside the chunk (e.g. `noise`).
    learner_action: the chunk as the learner trains on it, when the policy gave one (`ActedChunk`).
    discounted_reward: with a collector built with `gamma`, the executed steps' rewards summed with
    the per-step discount, r_0 + gamma r_1 + ... (the chunk's own discount is then gamma^n_steps).
    """

    obs: Observation
    action: np.ndarray
    reward: np.ndarray
    next_obs: Observation
    n_steps: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    learner_action: np.ndarray | None = None
    discounted_reward: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reward)


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _copy(obs: Observation) -> Observation:
    return {k: _copy(v) if isinstance(v, Mapping) else np.array(v, copy=True) for k, v in obs.items()}


def _set_row(batch: Observation, i: int, single: Mapping[str, Any]) -> None:
    """batch[...][i] = single[...], through nested dicts (e.g. `pixels/<camera>`)."""
    for key, value in single.items():
        if isinstance(value, Mapping):
            _set_row(batch[key], i, value)
        else:
            batch[key][i] = value


def _info_at(info: Mapping[str, Any], key: str, i: int, default: Any = None) -> Any:
    """info[key][i] if env i reported `key` this step (gymnasium's `_key` masks)."""
    mask = info.get(f"_{key}")
    if key not in info or (mask is not None and not mask[i]):
        return default
    return info[key][i]


class ChunkCollector:
    """Executes action chunks open-loop in every env of a SAME_STEP-autoreset vector env.

    Keeps the current observation between calls; `episode_start[i]` says whether env i's current
    observation is the first of an episode (for policies that keep per-env history). `gamma`: also
    sum each chunk's rewards with this per-step discount (`ChunkBatch.discounted_reward`).
    """

    def __init__(self, envs: gym.vector.VectorEnv, gamma: float | None = None):
        mode = envs.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"ChunkCollector needs a vector env with autoreset_mode=SAME_STEP (as LeRobot's "
                f"EnvConfig.create_envs builds them); got {mode}"
            )
        self.envs = envs
        self.gamma = gamma
        self.num_envs = envs.num_envs
        self.obs: Observation | None = None
        self.episode_start = np.ones(self.num_envs, dtype=bool)
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._warned_no_sim_state = False

    def reset(self, seed: int | None = None) -> Observation:
        """Start a fresh episode in every env (discarding any unfinished one)."""
        self.obs, _ = self.envs.reset(seed=seed)
        self.episode_start[:] = True
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self.obs

    def collect(
        self, policy: ChunkPolicy, observe: Callable[[Observation], None] | None = None
    ) -> tuple[ChunkBatch, list[EpisodeStats]]:
        """Ask `policy` for one chunk per env, run it, return the transitions and finished episodes.

        `observe(obs)` sees the observation after every executed step but the chunk's last (which
        the next `policy` call sees): a policy with observation history (diffusion's n_obs_steps)
        keeps it current between chunks, as `select_action` does step by step. Envs whose episode
        ended are flagged in `episode_start` afterwards, so the policy can forget their history.
        """
        if self.obs is None:
            self.reset()
        obs = self.obs
        chunk, extras, learner_action = ActedChunk(*policy(obs))
        chunk = to_numpy(chunk)
        if chunk.ndim != 3 or chunk.shape[0] != self.num_envs or chunk.shape[1] < 1:
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}; expected (n_envs={self.num_envs}, k, action_dim)")
        n, k = chunk.shape[:2]

        reward = np.zeros(n, dtype=np.float64)
        discounted = np.zeros(n, dtype=np.float64)
        n_steps = np.zeros(n, dtype=np.int64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        active = np.ones(n, dtype=bool)  # still inside the episode the chunk was chosen for
        final_obs: dict[int, Mapping[str, Any]] = {}
        episodes: list[EpisodeStats] = []

        step_obs = obs
        for t in range(k):
            if t > 0 and observe is not None:
                observe(step_obs)
            step_obs, r, term, trunc, info = self.envs.step(chunk[:, t])
            r = np.asarray(r, dtype=np.float64)
            reward[active] += r[active]
            if self.gamma is not None:
                discounted[active] += self.gamma ** t * r[active]
            n_steps[active] += 1
            self._episode_return[active] += r[active]
            self._episode_length[active] += 1
            for i in np.flatnonzero(active & (term | trunc)):
                terminated[i], truncated[i] = bool(term[i]), bool(trunc[i])
                final_obs[i] = info["final_obs"][i]
                episodes.append(self._finish_episode(i, info.get("final_info", {}), terminated[i], truncated[i]))
                active[i] = False
        ended = terminated | truncated

        next_obs = _copy(step_obs)
        for i, o in final_obs.items():
            _set_row(next_obs, i, o)

        # Envs that ended before the chunk's last step took ghost steps in their new episode:
        # reset them again so the next chunk starts from a true reset observation.
        ghost = ended & (n_steps < k)
        if ghost.any():
            step_obs, _ = self.envs.reset(options={"reset_mask": ghost})
        self.obs = step_obs
        self.episode_start = ended

        batch = ChunkBatch(
            obs=obs, action=chunk, reward=reward.astype(np.float32), next_obs=next_obs, n_steps=n_steps,
            terminated=terminated, truncated=truncated, extras={key: to_numpy(v) for key, v in extras.items()},
            learner_action=None if learner_action is None else to_numpy(learner_action),
            discounted_reward=None if self.gamma is None else discounted.astype(np.float32),
        )
        return batch, episodes

    def metrics(self) -> dict[str, float]:
        """The collector's own log entries (none here; the Ray collector reports its workers')."""
        return {}

    def close(self) -> None:
        self.envs.close()

    # -------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """What the next chunk depends on: the current observations, the per-env episode counters
        and, for envs exposing a `sim_state` property (the SO-101 sim), each env's simulator state.
        Observations/counters are numpy arrays; `sim_states` is JSON-able (None if not supported)."""
        if self.obs is None:
            self.reset()
        sim_states = list(self.envs.get_attr("sim_state")) if self.envs_have_sim_state() else None
        return {
            "obs": _copy(self.obs), "episode_start": self.episode_start.copy(),
            "episode_return": self._episode_return.copy(), "episode_length": self._episode_length.copy(),
            "sim_states": sim_states,
        }

    def envs_have_sim_state(self) -> bool:
        """Whether the envs expose `sim_state` (then a checkpoint resumes their episodes exactly).

        Asked of each env rather than inferred from an AttributeError of `get_attr`: an error raised
        inside an env's `sim_state` must surface, not quietly turn an exact resume into restarted
        episodes. In-process envs are inspected without evaluating the property; envs in worker
        processes answer gymnasium's `has_wrapper_attr`. Envs without it are warned about, once.
        """
        local = getattr(self.envs, "envs", None)  # SyncVectorEnv: the envs themselves
        if local is not None:
            have = [_defines(env, "sim_state") for env in local]
        else:
            have = [bool(x) for x in self.envs.call("has_wrapper_attr", "sim_state")]
        if all(have):
            return True
        if any(have):
            raise ValueError(f"only the envs {[i for i, h in enumerate(have) if h]} of {len(have)} have `sim_state`: "
                             "a vector env must hold envs of one kind")
        if not self._warned_no_sim_state:
            self._warned_no_sim_state = True
            logger.warning("the envs have no `sim_state` property: a resumed run restarts their episodes "
                           "(everything else resumes exactly)")
        return False

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put every env back where `state_dict()` found it (falls back to a fresh reset of the
        episodes when the envs have no `sim_state`: the run goes on, the episodes restart)."""
        if state.get("sim_states") is None:
            if self.envs_have_sim_state():
                logger.warning("the checkpoint holds no env states (saved with envs without `sim_state`): "
                               "the episodes restart")
            self.reset()
            return
        if len(state["sim_states"]) != self.num_envs:
            raise ValueError(f"saved state has {len(state['sim_states'])} envs, this collector {self.num_envs}: resume with the same --n_envs")
        self.envs.reset()  # start the vector env's own bookkeeping, then overwrite each sim
        self.envs.set_attr("sim_state", list(state["sim_states"]))
        self.obs = _copy(state["obs"])
        self.episode_start = np.asarray(state["episode_start"], dtype=bool).copy()
        self._episode_return = np.asarray(state["episode_return"], dtype=np.float64).copy()
        self._episode_length = np.asarray(state["episode_length"], dtype=np.int64).copy()

    def _finish_episode(self, i: int, final_info: Mapping[str, Any], terminated: bool, truncated: bool) -> EpisodeStats:
        stats = EpisodeStats(
            env_index=int(i),
            episode_return=float(self._episode_return[i]),
            length=int(self._episode_length[i]),
            success=bool(_info_at(final_info, "is_success", i, False)),
            terminated=terminated,
            truncated=truncated,
            failure=_info_at(final_info, "failure", i),
        )
        self._episode_return[i] = 0.0
        self._episode_length[i] = 0
        return stats


def _defines(env: gym.Env, name: str) -> bool:
    """Whether `env` or an env it wraps defines attribute `name`, found without evaluating it."""
    while env is not None:
        if name in vars(env) or any(name in vars(k) for k in type(env).__mro__):
            return True
        env = vars(env).get("env")  # a gymnasium Wrapper's inner env
    return False
