"""The statistics of an evaluation: a success rate is only worth its confidence interval.

With the 20-100 episodes a sim evaluation affords, a plain percentage hides how much two checkpoints
could differ by chance. We report the Wilson score interval (good coverage at small n and near 0 or
1, where the normal approximation gives impossible bounds), and, because every checkpoint runs the
same seeds, an exact McNemar test on the paired outcomes.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from scipy.stats import binomtest

from lerobot_steer.sim.pick_place_env import OUTCOMES


def wilson_interval(successes: int, n: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3).

    Returns (low, high) within [0, 1]; (0, 1) when there is no episode at all.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence_level, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class Summary:
    """What one checkpoint achieved over its episodes."""

    n_episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    outcomes: dict[str, int] = field(default_factory=dict)
    mean_steps_to_success: float | None = None
    median_steps_to_success: float | None = None
    mean_return: float = 0.0
    mean_episode_steps: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def summarize(episodes: Sequence) -> Summary:
    """Summary of `EpisodeResult`-like objects (attributes success, outcome, steps, steps_to_success, ret)."""
    n = len(episodes)
    k = sum(bool(e.success) for e in episodes)
    outcomes = dict.fromkeys(OUTCOMES, 0)
    outcomes.update(Counter(e.outcome for e in episodes))
    to_success = [e.steps_to_success for e in episodes if e.success and e.steps_to_success is not None]
    return Summary(
        n_episodes=n,
        successes=k,
        success_rate=k / n if n else float("nan"),
        ci95=wilson_interval(k, n),
        outcomes=outcomes,
        mean_steps_to_success=statistics.fmean(to_success) if to_success else None,
        median_steps_to_success=float(statistics.median(to_success)) if to_success else None,
        mean_return=statistics.fmean(e.ret for e in episodes) if n else float("nan"),
        mean_episode_steps=statistics.fmean(e.steps for e in episodes) if n else float("nan"),
    )


def paired_comparison(reference: Sequence[bool], candidate: Sequence[bool]) -> dict:
    """Exact McNemar test of two checkpoints evaluated on the same seeds.

    Only discordant seeds carry information: `gained` (candidate succeeds where the reference
    fails) and `lost`. Under "no difference" each discordant seed is a fair coin, so the p-value is
    a two-sided exact binomial test of `gained` out of `gained + lost` at p = 1/2 (1 when no seed is
    discordant). Far more sensitive than comparing two unpaired intervals.
    """
    if len(reference) != len(candidate):
        raise ValueError("paired comparison needs the same episodes (seeds) for both checkpoints")
    gained = sum(bool(c) and not bool(r) for r, c in zip(reference, candidate, strict=True))
    lost = sum(bool(r) and not bool(c) for r, c in zip(reference, candidate, strict=True))
    m = gained + lost
    p_value = float(binomtest(gained, m, p=0.5).pvalue) if m else 1.0
    return {"gained": gained, "lost": lost, "p_value": p_value}
