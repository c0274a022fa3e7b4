"""`lerobot-steer-record`: LeRobot's recorder with an outcome label per episode.

Offline steering (`dsrl`, `dyna_vgd`) learns from rewards, and a teleoperated recording from
`lerobot-record` has none. This package records exactly as `lerobot-record` does (its config, robot
and teleoperator factories, `record_loop`, dataset writer and key listener) and adds what only the
operator knows: whether each episode succeeded, why it failed, or a score. The label becomes the
`next.reward` / `next.success` / `next.done` columns that `lerobot-steer-generate` writes in the sim
and a row of `meta/outcomes.jsonl`.

Modules, one job each: `config` (the CLI's dataclasses), `outcomes` (what a label is and the columns
it writes), `keys` (key presses -> recording events and labels; keyboard or scripted), `frames`
(the dataset as `record_loop` sees it, and labelling its episode buffer), `dataset` (create or resume,
refusing a dataset recorded with other features), `outcome_log` (`meta/outcomes.jsonl` and the
status line), `recorder` (the episode loop), `cli` (the console script).

`lerobot-steer-eval-real` (policies compared on a robot, labelled the same way) reuses them:
`eval_config` (its config), `evaluate` (the session: schedule, policy episodes, resets),
`eval_report` (the report from `meta/outcomes.jsonl`), `eval_cli` (the console script).
"""
