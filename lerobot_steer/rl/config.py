"""`lerobot-steer-rl` configuration: one typed dataclass, parsed by draccus as LeRobot's CLIs are.

    lerobot-steer-rl --policy.type=dsrl --policy.base_policy_path=<diffusion checkpoint> \
        --env.type=so101_sim --env.obs_type=state --n_envs=8 --steps=20000 --output_dir=outputs/rl/dsrl

`--policy.path=<checkpoint>` continues from a trained steering checkpoint (fresh counters and
buffer); `--resume=true --output_dir=<run>` continues an interrupted run exactly where its last
checkpoint left it (weights, optimizers, buffer, env states, RNG, counters).
"""


import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.configs import parser
from lerobot.configs.default import DatasetConfig, WandBConfig
from lerobot.configs.policies import PreTrainedConfig
from lerobot.envs.configs import EnvConfig
from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_steer.config_error import ConfigError
from lerobot_steer.policies.common.config import COUNT, NON_NEGATIVE, POSITIVE, Interval, check_fields
from lerobot_steer.sim.env_config import SO101SimEnvConfig
from lerobot_steer.steering.base_adapter import load_checkpoint_config

TRAIN_CONFIG_NAME = "train_config.json"
STEERING_TYPES = ("dsrl", "dyna_vgd")
RATIO = Interval(0, 1)


def _state_sim() -> SO101SimEnvConfig:
    return SO101SimEnvConfig(obs_type="state")


@dataclass
class OnlineEvalConfig:
    """Periodic evaluation on fresh envs (seeds `seed`, `seed + 1`, ... every time, so the curve
    compares like with like). freq: env steps between evaluations (0: only at the end);
    n_episodes=0 turns evaluation off."""

    freq: int = 5000
    n_episodes: int = 10
    batch_size: int = 10
    seed: int = 100_000
    use_async_envs: bool = False
    # dsrl: False samples the noise actor (as the reference evaluates and as the saved policy acts in
    # lerobot-eval); True acts with its mean noise. also_deterministic adds the other mode's numbers
    # under `eval_deterministic/...`.
    deterministic: bool = False
    also_deterministic: bool = False


RUNTIMES = ("local", "ray")


@dataclass
class RayClusterConfig:
    """Where Ray runs a run's remote workers and what it reserves for each (`--ray.*`).

    address: None starts Ray on this machine (`ray.init()`); "auto" joins the cluster this machine is
        part of (`ray start --head` / `ray start --address=...`), or "ray://<head>:10001".
    num_cpus_per_worker: the CPUs Ray reserves for each worker (its envs or robot, physics and base
        decodes run on them; torch in a worker uses this many threads, at least one).
    num_gpus_per_worker: > 0 puts each worker's policy on a GPU share (a VLA base); 0 acts on CPU.
        The learner's device is `--policy.device`.
    max_restarts: how often Ray restarts a worker that died (what it was collecting is lost and
        counted); a worker past it is dropped, and the run stops when none is left.
    node_label: "key=value": place the workers only on Ray nodes started with that label
        (`ray start --labels='{"key": "value"}'`), e.g. the machine wired to a robot or its cameras.
    """

    address: str | None = None
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    max_restarts: int = 3
    node_label: str | None = None

    @property
    def worker_device(self) -> str:
        """Where a worker's policy acts: on its GPU share when it has one, else on CPU."""
        return "cuda" if self.num_gpus_per_worker > 0 else "cpu"

    def label_selector(self) -> dict[str, str] | None:
        if not self.node_label:
            return None
        key, sep, value = self.node_label.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--ray.node_label={self.node_label}: expected key=value, e.g. --ray.node_label=robot=so101")
        return {key.strip(): value.strip()}


@dataclass
class RayRuntimeConfig(RayClusterConfig):
    """`--runtime=ray`: rollouts in Ray actors, the learner in this process (`rl/ray_runtime.py`).

    num_workers: rollout workers, each a Ray actor with its own `--n_envs` vector envs and an acting
        copy of the policy (the frozen base loaded once per worker; only what acting needs is
        broadcast after updates: DSRL's noise actor, VGD's critic). A worker's lost chunks are
        counted in `ray/lost_chunks`. The other options: `RayClusterConfig`.
    """

    num_workers: int = 2


@dataclass
class SteerRLConfig:
    """Online chunk-level RL of a steering policy in a vectorized sim.

    policy: `--policy.type=dsrl|dyna_vgd` with `--policy.base_policy_path=...` (fresh), or
        `--policy.path=<checkpoint>` (continue from trained weights).
    algorithm: `--algorithm.type=<same as the policy>` and its options (default: the policy's type
        with its defaults). One `update()` of the algorithm makes `algorithm.grad_steps_per_update`
        gradient steps (default 1); how many follow each chunk transition is `utd_ratio` below.
    env: the sim (`--env.type=so101_sim` and its options).
    n_envs / async_envs: vectorized envs; async runs each in its own process (worth it once the
        physics or rendering of one step costs more than the inter-process round trip).
    steps: env steps in total (all envs together). prefill_steps: env steps acting with the base
        on N(0, I) noise before the first update (the prior the base was trained on).
    utd_ratio: gradient steps per collected chunk transition (one transition = one executed chunk
        of one env). None: the method's default (`default_utd_ratio`): DSRL-SAC 2 (the references
        make 5 on robomimic, utd 20 per step of 4 envs, with 3 x 2048 networks; at 4 ours scored
        69-81.5 % where 2 scored 78-92.5 % on the same seeds, in twice the time: learning_curves.md
        round 14), DSRL-NA 0.5, (Dynamic) VGD 2 with its decode-free value bootstrap
        (`--policy.td_bootstrap=value`, the online default) and 0.25 with the reference's guided
        decode at s' (`decode`), whose every gradient step decodes the base and would otherwise cap
        a CPU run at a few env steps per second.
    batch_size / buffer_capacity: replay batch size and capacity (in chunk transitions).
    dataset: offline data mixed into every update batch (`--dataset.repo_id=... --dataset.root=...`,
        LeRobot's dataset options), e.g. the demonstrations the base was trained on. Its chunks are
        read once into a second buffer (`rl/offline_data.py`). Learners of recorded actions only:
        DSRL-NA (chosen when --policy.variant is not given) and dyna_vgd; DSRL-SAC refuses it.
    online_ratio: the share of each update batch drawn from the online buffer when a dataset is given
        (RLPD's symmetric sampling: 0.5).
    save_freq / log_freq: in env steps. Checkpoints land in `output_dir/checkpoints/<env step>/`.
    runtime: "local" (one process: acting, physics and updates in turn) or "ray" (`ray` options:
        rollout workers in Ray actors feed the learner here while it updates; `pip install
        'lerobot_policy_steer[ray]'`). Both write the same checkpoints and metrics, and either resumes
        the other's run (a resume across runtimes, or of a Ray run, restarts the envs' episodes).
    """

    policy: PreTrainedConfig | None = None
    algorithm: RLAlgorithmConfig | None = None
    env: EnvConfig = field(default_factory=_state_sim)
    n_envs: int = 8
    async_envs: bool = False
    steps: int = 20_000
    prefill_steps: int = 5_000
    utd_ratio: float | None = None
    batch_size: int = 256
    buffer_capacity: int = 100_000
    dataset: DatasetConfig | None = None
    online_ratio: float = 0.5
    eval: OnlineEvalConfig = field(default_factory=OnlineEvalConfig)
    save_freq: int = 5_000
    log_freq: int = 1_000
    seed: int = 1000
    output_dir: Path | None = None
    job_name: str | None = None
    resume: bool = False
    progress: bool = True
    wandb: WandBConfig = field(default_factory=WandBConfig)
    runtime: str = "local"
    ray: RayRuntimeConfig = field(default_factory=RayRuntimeConfig)

    def validate(self) -> None:
        """Resolve `--policy.path`, check the numbers, pick the output folder. Errors name the flag."""
        resolve_policy_path(self)
        if self.policy is None:
            raise ConfigError(
                "no policy: pass --policy.type=dsrl (or dyna_vgd) --policy.base_policy_path=<base checkpoint>, "
                "or --policy.path=<a dsrl/dyna_vgd checkpoint> to continue from it"
            )
        if self.policy.type not in STEERING_TYPES:
            raise ConfigError(
                f"--policy.type={self.policy.type}: lerobot-steer-rl fine-tunes {STEERING_TYPES}; to fine-tune a "
                f"{self.policy.type} policy, steer it: --policy.type=dsrl --policy.base_policy_path=<its checkpoint>"
            )
        if self.algorithm is None:
            self.algorithm = RLAlgorithmConfig.get_choice_class(self.policy.type)()
        elif self.algorithm.type != self.policy.type:
            raise ConfigError(f"--algorithm.type={self.algorithm.type} does not train a {self.policy.type} policy: "
                             f"use --algorithm.type={self.policy.type}")
        if self.policy.type == "dsrl":
            # online: the variant whose updates need no base decode, unless recorded actions join in
            self.policy.resolve_variant("na" if self.dataset is not None else "sac")
            self.policy.resolve_na_learning(online=True)
            if self.dataset is not None and self.policy.variant == "sac":
                raise ConfigError(
                    f"--dataset.repo_id={self.dataset.repo_id} with --policy.variant=sac: DSRL-SAC's critic learns "
                    "from the noise that produced each chunk, which recorded actions do not have. Use "
                    "--policy.variant=na (its action critic learns from recorded chunks) or drop --dataset.*"
                )
        if self.policy.type == "dyna_vgd":
            self.policy.resolve_td_bootstrap(online=True)
        if self.dataset is not None:
            check_local_dataset(self.dataset)
        if self.utd_ratio is None:
            self.utd_ratio = default_utd_ratio(self.policy)
        self.check_numbers()
        if not self.job_name:
            self.job_name = f"{self.env.type}_{self.policy.type}"
        resolve_output_dir(self, "outputs/rl")

    def check_numbers(self) -> None:
        """Every count, size and schedule of the run in its range, before anything is built (the
        policy's and the env's own numbers are checked when they are parsed). A frequency of 0 means
        "only at the end"."""
        check_fields(self, {"n_envs": COUNT, "steps": COUNT, "prefill_steps": NON_NEGATIVE, "utd_ratio": POSITIVE,
                            "batch_size": COUNT, "buffer_capacity": COUNT, "save_freq": NON_NEGATIVE,
                            "log_freq": NON_NEGATIVE, "seed": NON_NEGATIVE, "online_ratio": RATIO}, prefix="--")
        check_eval_numbers(self.eval)
        check_runtime(self.runtime, self.ray)
        if hasattr(self.algorithm, "grad_steps_per_update"):
            check_fields(self.algorithm, {"grad_steps_per_update": COUNT}, prefix="--algorithm.")

    @classmethod
    def __get_path_fields__(cls) -> list[str]:
        """`--policy.path` is resolved in validate() (LeRobot's parser filters it out first)."""
        return ["policy"]


def resolve_policy_path(cfg) -> None:
    """`--policy.path=<checkpoint>`: its saved policy config, with the command line's `--policy.*` on
    top, becomes `cfg.policy` (a run config's `validate()`; LeRobot's parser leaves the path to it)."""
    policy_path = parser.get_path_arg("policy")
    if policy_path:
        overrides = parser.get_cli_overrides("policy") or []
        # a local path that does not exist is named as such, never sent to the Hub
        cfg.policy = load_checkpoint_config(policy_path, cli_overrides=overrides)
        cfg.policy.pretrained_path = Path(policy_path)


def resolve_output_dir(cfg, outputs: str) -> None:
    """`cfg.output_dir` as a Path: by default `<outputs>/<date>/<time>_<job_name>`; a resumed run must
    name its folder, and a fresh run refuses a folder that already holds one."""
    if cfg.output_dir is None:
        if cfg.resume:
            raise ConfigError("--resume=true needs the run to continue: pass --output_dir=<its folder>")
        now = dt.datetime.now()
        cfg.output_dir = Path(outputs) / f"{now:%Y-%m-%d}" / f"{now:%H-%M-%S}_{cfg.job_name}"
    cfg.output_dir = Path(cfg.output_dir)
    if not cfg.resume and (cfg.output_dir / "checkpoints").exists():
        raise FileExistsError(
            f"{cfg.output_dir} already holds a run: continue it with --resume=true, or pick another --output_dir"
        )


def check_eval_numbers(eval_cfg: OnlineEvalConfig) -> None:
    """`--eval.*` counts and schedule in their range (a frequency of 0: only at the end)."""
    check_fields(eval_cfg, {"freq": NON_NEGATIVE, "n_episodes": NON_NEGATIVE, "batch_size": COUNT,
                            "seed": NON_NEGATIVE}, prefix="--eval.")


def check_local_dataset(dataset: DatasetConfig) -> None:
    """A `--dataset.root` that is not a LeRobot dataset is named before any work (otherwise LeRobot
    takes it for a Hub id and, offline, fails with a traceback about the Hub)."""
    if dataset.root is None:
        return
    info = Path(dataset.root) / "meta" / "info.json"
    if not info.is_file():
        what = "does not exist" if not Path(dataset.root).exists() else "has no meta/info.json (not a LeRobot dataset)"
        raise ConfigError(f"--dataset.root={dataset.root} {what}: pass the folder of a LeRobot dataset "
                          "(e.g. one written by lerobot-steer-generate or lerobot-record)")


def check_runtime(runtime: str, ray: RayClusterConfig) -> None:
    """`--runtime` and, for Ray, `--ray.*` in range and Ray installed (named with the install command),
    before any work."""
    import importlib.util

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime={runtime}: choose one of {RUNTIMES}")
    if runtime != "ray":
        return
    fields = {"num_cpus_per_worker": POSITIVE, "num_gpus_per_worker": NON_NEGATIVE, "max_restarts": NON_NEGATIVE}
    if isinstance(ray, RayRuntimeConfig):
        fields["num_workers"] = COUNT
    check_fields(ray, fields, prefix="--ray.")
    ray.label_selector()
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--runtime=ray needs Ray: pip install 'lerobot_policy_steer[ray]' (or use --runtime=local)")


def default_utd_ratio(policy: PreTrainedConfig) -> float:
    """Gradient steps per chunk transition when --utd_ratio is not given (see SteerRLConfig)."""
    if policy.type == "dsrl":
        return 2.0 if policy.variant == "sac" else 0.5
    return 2.0 if policy.td_bootstrap == "value" else 0.25
