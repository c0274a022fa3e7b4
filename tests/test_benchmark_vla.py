"""`scripts/benchmark_vla.py` (the GPU memory / samples-per-second figures of docs/results/gpu_vla.md) keeps
running: its tiny CPU mode goes through the same RL chain and PPO update as the full-size GPU run."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_measures_each_training_mode(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark_vla.py"), "--size", "tiny", "--device", "cpu",
         "--families", "smolvla", "--trainable", "expert", "lora", "all", "--repeats", "1", "--json", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    rows = {row["trainable"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"expert", "lora", "all"}
    for row in rows.values():
        assert row["base_chunks_per_s"] > 0 and row["chain_chunks_per_s"] > 0 and row["update_rows_per_s"] > 0
        assert row["weights_gib"] is None  # memory is only read on CUDA
    # LoRA adds adapters to the frozen VLM: more parameters in all, fewer trained than `all`.
    assert rows["lora"]["params_m"] > rows["expert"]["params_m"] == rows["all"]["params_m"]
    assert rows["expert"]["trained_m"] < rows["lora"]["trained_m"] < rows["all"]["trained_m"]
