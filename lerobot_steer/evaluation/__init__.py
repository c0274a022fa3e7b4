"""`lerobot-steer-eval`: evaluate LeRobot checkpoints on the SO-101 sim, with the numbers a
comparison needs (success with a 95 % Wilson interval, failure taxonomy, paired seeds) and videos.

One job per module: `stats` (intervals, summaries, paired test), `checks` (policy vs env features),
`loading` (checkpoint -> policy + processors), `baselines` (scripted reference policies),
`rollout` (seeded lock-step episodes on a vector env), `video` (captioned MP4s), `trails` (predicted
chunks drawn as end-effector trails, base vs steered), `report` (JSON,
markdown, bar chart), `cli` (the command).
"""

from .rollout import EpisodeResult, PolicyUnderTest, run_episodes
from .stats import Summary, paired_comparison, summarize, wilson_interval

__all__ = [
    "EpisodeResult",
    "PolicyUnderTest",
    "Summary",
    "paired_comparison",
    "run_episodes",
    "summarize",
    "wilson_interval",
]
