"""`make demo` (scripts/demo.py) end to end at tiny budgets: every stage runs its real CLI, the final
table compares the fine-tuned policy with each free baseline of its base, and a rerun resumes instead
of starting over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
TINY = ["--episodes=2", "--train_steps=2", "--eval_episodes=1", "--rl_steps=64", "--rl_eval_episodes=1",
        "--compare_episodes=2", "--episode_length=24"]


def run_demo(output_dir: Path, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(DEMO), f"--output_dir={output_dir}", *TINY],
                            capture_output=True, text=True, cwd=cwd, timeout=900)
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, tmp_path)
    for stage in ("lerobot-steer-generate", "lerobot-train", "lerobot-eval", "lerobot-steer-rl", "lerobot-steer-eval"):
        assert f"/{stage} " in first, f"stage {stage} did not run"

    # The comparison holds the fine-tuned policy and the four modes of its base, on the same seeds.
    table = (out / "compare" / "results.md").read_text()
    assert table in first, "the summary does not print the comparison table"
    rows = [line for line in table.splitlines() if line.startswith("| ") and "@" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| rl_dsrl@last", "| train@last", "| train@last[noise=zero]", "| train@last[noise=tanh]",
        "| train@last[noise=executed]"]
    assert table.count("vs rl_dsrl@last:") == 4, "each base mode must be McNemar-tested against the fine-tuned policy"
    assert (out / "rl_dsrl" / "learning_curve.png").stat().st_size > 1000
    assert (out / "rl_dsrl" / "checkpoints" / "last" / "pretrained_model" / "config.json").exists()

    # A rerun skips the stages whose outputs exist: no new demonstrations, base training or fine-tuning.
    second = run_demo(out, tmp_path)
    for stage in ("lerobot-steer-generate", "lerobot-train", "lerobot-steer-rl"):
        assert f"/{stage} " not in second, f"the rerun repeated {stage}"
    assert "base vs fine-tuned" in second
