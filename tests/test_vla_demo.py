"""scripts/vla_demo.py at tiny budgets: generated camera demonstrations -> LeRobot's `lerobot-train
--policy.type=smolvla` (tiny VLM, offline) -> `smolvla_rl` PPO and GRPO, and DSRL over the same base ->
one paired evaluation with the base's free modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "vla_demo.py"


@pytest.mark.slow  # six CLI stages of a tiny SmolVLA (~2.5 min on 2 shared cores)
def test_sft_then_ppo_and_grpo_then_a_paired_evaluation(tmp_path):
    out = tmp_path / "vla"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), f"--output_dir={out}", "--episodes=2", "--train_steps=4", "--rl_steps=64",
         "--rl_chunks=2", "--n_envs=2", "--compare_episodes=2", "--episode_length=16"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, f"vla_demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"

    # the base is a stock LeRobot smolvla checkpoint; each RL run saved a smolvla_rl one that made updates
    base = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert json.loads((base / "config.json").read_text())["type"] == "smolvla"
    for name, kind in (("ppo", "smolvla_rl"), ("grpo", "smolvla_rl"), ("dsrl", "dsrl")):
        run = out / f"rl_{name}"
        assert json.loads((run / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text())["type"] == kind
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["env_steps"] == 64 and last["updates"] > 0, f"{name} made no update"

    report = json.loads((out / "compare" / "eval_report.json").read_text())
    assert [c["label"] for c in report["checkpoints"]] == [
        "rl_ppo@last", "rl_grpo@last", "rl_dsrl@last", "train@last", "train@last[noise=zero]", "train@last[noise=tanh]"]
    assert [c["policy_type"] for c in report["checkpoints"]][:4] == ["smolvla_rl", "smolvla_rl", "dsrl", "smolvla"]
    assert all(len(c["episodes"]) == 2 for c in report["checkpoints"])
    assert len(report["paired_vs_first"]) == 5  # each McNemar-tested against PPO
    assert (out / "compare" / "results.md").read_text() in result.stdout
