"""scripts/vla_demo.py at tiny budgets: generated camera demonstrations -> LeRobot's `lerobot-train
--policy.type=smolvla` (tiny VLM, offline) -> `smolvla_rl` PPO and GRPO -> one paired evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "vla_demo.py"


@pytest.mark.slow  # five CLI stages of a tiny SmolVLA (~2 min on 2 shared cores)
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
    for name in ("ppo", "grpo"):
        run = out / f"rl_{name}"
        assert json.loads((run / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text())["type"] == "smolvla_rl"
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["env_steps"] == 64 and last["updates"] > 0, f"{name} made no update"

    report = json.loads((out / "compare" / "eval_report.json").read_text())
    assert [c["label"] for c in report["checkpoints"]] == ["rl_ppo@last", "rl_grpo@last", "train@last"]
    assert [c["policy_type"] for c in report["checkpoints"]] == ["smolvla_rl", "smolvla_rl", "smolvla"]
    assert all(len(c["episodes"]) == 2 for c in report["checkpoints"])
    assert len(report["paired_vs_first"]) == 2  # GRPO and the base, each McNemar-tested against PPO
    assert (out / "compare" / "results.md").read_text() in result.stdout
