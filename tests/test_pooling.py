"""Pooling held-out evaluations run on disjoint seed sets gives what one evaluation over all the seeds
would report, and tests every steered checkpoint against every free baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_steer.evaluation.pooling import free_baseline_lines, load_reports, pool_reports
from lerobot_steer.evaluation.report import build_report, write_outputs
from lerobot_steer.evaluation.rollout import EpisodeResult
from lerobot_steer.evaluation.stats import wilson_interval

ROOT = Path(__file__).resolve().parents[1]


def _report(seed0: int, outcomes: dict[str, list[bool]], tmp: Path, name: str = "eval") -> Path:
    """A report written by the evaluation's own writer: base on zero noise, base as is, dsrl runs."""
    kinds = {"zero": ("noise:zero:/b", "diffusion"), "base": ("/b", "diffusion"), "dsrl": ("/r", "dsrl"),
             "late": ("/r2", "dsrl")}
    runs = []
    for label, flags in outcomes.items():
        path, policy_type = kinds[label]
        episodes = [EpisodeResult(index=i, seed=seed0 + i, success=ok, outcome="success" if ok else "never_picked_up",
                                  steps=100 if ok else 300, steps_to_success=100 if ok else None, ret=float(ok))
                    for i, ok in enumerate(flags)]
        runs.append({"label": label, "path": path, "policy_type": policy_type, "episodes": episodes})
    out = tmp / f"{name}_{seed0}"
    write_outputs(build_report(runs, {"obs_type": "state"}, [seed0 + i for i in range(len(flags))]), out)
    return out


def test_pooled_report_equals_one_evaluation_over_both_seed_sets(tmp_path):
    a = _report(200_000, {"zero": [True, False, False, False], "base": [False, True, False, False],
                          "dsrl": [True, True, True, False]}, tmp_path)
    b = _report(400_000, {"zero": [False, False, True], "base": [False, False, False],
                          "dsrl": [True, True, False]}, tmp_path)
    pooled = pool_reports(load_reports([a, b]))
    dsrl = pooled["checkpoints"][2]["summary"]
    assert pooled["n_episodes"] == 7 and dsrl["successes"] == 5
    assert dsrl["ci95"] == pytest.approx(list(wilson_interval(5, 7)))
    assert [c["free_baseline"] for c in pooled["checkpoints"]] == [True, True, False]
    vs_zero = next(p for p in pooled["paired_vs_free_baselines"] if p["reference"] == "zero")
    # dsrl succeeds where zero fails on seeds 200001, 200002, 400000 and 400001; the reverse on 400002
    assert (vs_zero["gained"], vs_zero["lost"]) == (4, 1)


def test_pooling_refuses_shared_seeds_and_different_checkpoint_lists(tmp_path):
    a = _report(200_000, {"zero": [True], "dsrl": [True]}, tmp_path)
    with pytest.raises(ValueError, match="disjoint seed sets"):
        pool_reports(load_reports([a, a]))
    b = _report(400_000, {"zero": [True], "base": [False], "dsrl": [True]}, tmp_path)
    with pytest.raises(ValueError, match="same --policy_paths"):
        pool_reports(load_reports([a, b]))
    with pytest.raises(FileNotFoundError, match="eval_report.json"):
        load_reports([tmp_path / "missing"])


def test_pool_evals_script_writes_the_table_with_the_free_baseline_verdicts(tmp_path):
    a = _report(200_000, {"zero": [False] * 10, "dsrl": [True] * 10}, tmp_path)
    b = _report(400_000, {"zero": [False] * 10, "dsrl": [True] * 9 + [False]}, tmp_path)
    out = tmp_path / "pooled"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "pool_evals.py"), str(a), str(b / "eval_report.json"),
                    "--output_dir", str(out), "--labels", "base zero noise,DSRL"], check=True, capture_output=True)
    text = (out / "results.md").read_text()
    assert "seeds 200000–200009, 400000–400009" in text
    assert "DSRL vs base zero noise: +19 / -0 seeds" in text
    assert "clears every free baseline's" in text
    assert json.loads((out / "eval_report.json").read_text())["pooled_from"] == 2
    assert (out / "success_rates.png").stat().st_size > 0


def test_the_verdict_names_the_free_baseline_an_interval_does_not_clear():
    def row(label, low, high, free):
        return {"label": label, "free_baseline": free, "summary": {"ci95": [low, high]}}

    report = {"checkpoints": [row("zero", 0.12, 0.22, True), row("tanh", 0.26, 0.39, True),
                              row("Dynamic VGD", 0.34, 0.48, False), row("DSRL", 0.86, 0.94, False)]}
    lines = free_baseline_lines(report)
    assert "- Dynamic VGD: interval 34.0-48.0 % does not clear tanh's (highest upper bound 39.0 %)" in lines
    assert "- DSRL: interval 86.0-94.0 % clears every free baseline's (highest upper bound 39.0 %)" in lines


def test_a_run_evaluated_later_on_the_same_seeds_joins_by_path_and_pairs_seed_by_seed(tmp_path):
    """Round 16's case: the baselines and four runs in one call per seed set, a fifth run that finished
    later in a second call per set; matched by path, its tests pair with the first call's baselines."""
    first = [_report(200_000, {"zero": [False, True, False], "dsrl": [True, True, False]}, tmp_path),
             _report(400_000, {"zero": [False, False], "dsrl": [True, False]}, tmp_path)]
    late = [_report(200_000, {"late": [True, False, True]}, tmp_path, name="late"),
            _report(400_000, {"late": [True, True]}, tmp_path, name="late")]
    late_reports = load_reports(late)
    late_reports[0]["checkpoints"][0]["episodes"].reverse()  # pairing must follow the seed, not the position
    pooled = pool_reports([*load_reports(first), *late_reports], match="path")
    assert [c["path"] for c in pooled["checkpoints"]] == ["noise:zero:/b", "/r", "/r2"]
    assert pooled["n_episodes"] == 5 and pooled["checkpoints"][2]["summary"]["successes"] == 4
    late_vs_zero = next(p for p in pooled["paired_vs_free_baselines"] if p["candidate"] == "late")
    # late succeeds where zero fails on 200000, 200002, 400000, 400001; zero succeeds alone on 200001
    assert (late_vs_zero["gained"], late_vs_zero["lost"]) == (4, 1)
    # by position the same reports are refused, and the message names the way out
    with pytest.raises(ValueError, match="--match path"):
        pool_reports(load_reports([*first, *late]))


def test_matching_by_path_refuses_an_episode_twice_or_checkpoints_on_different_seeds(tmp_path):
    a = _report(200_000, {"zero": [True, False], "dsrl": [True, True]}, tmp_path)
    with pytest.raises(ValueError, match="evaluated twice on seed 200000"):
        pool_reports(load_reports([a, a]), match="path")
    b = _report(400_000, {"late": [True]}, tmp_path, name="late")
    with pytest.raises(ValueError, match="/r2 was not evaluated on the same seeds"):
        pool_reports(load_reports([a, b]), match="path")
    with pytest.raises(ValueError, match="match="):
        pool_reports(load_reports([a]), match="label")
