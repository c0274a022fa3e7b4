"""Metrics of an online run: console lines, `metrics.csv` + `metrics.jsonl`, and wandb when enabled.

One row per log or evaluation, keyed by `env_steps`. The CSV is rewritten from the JSONL rows each
time (columns appear as new metrics do, e.g. eval rows); both are plain files a plotting script or
a spreadsheet reads. On resume, rows logged after the checkpoint being resumed are dropped, so the
files describe one consistent run.

wandb: off unless `--wandb.enable=true`; `--wandb.mode` defaults to "offline" (written under
`output_dir/wandb`, synced later with `wandb sync`), so nothing leaves the machine unless asked.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JSONL, CSV = "metrics.jsonl", "metrics.csv"


class MetricsLog:
    def __init__(self, output_dir: Path, *, resume_env_steps: int | None = None, wandb_cfg=None, run_config: dict | None = None):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        jsonl = self.output_dir / JSONL
        if resume_env_steps is not None and jsonl.exists():
            self.rows = [r for r in read_rows(jsonl) if r["env_steps"] <= resume_env_steps]
        self._rewrite()
        self._wandb = None
        if wandb_cfg is not None and wandb_cfg.enable:
            import wandb

            self._wandb = wandb.init(
                project=wandb_cfg.project, entity=wandb_cfg.entity, notes=wandb_cfg.notes,
                mode=wandb_cfg.mode or "offline", dir=str(self.output_dir), config=run_config,
                id=wandb_cfg.run_id, resume="allow" if wandb_cfg.run_id else None,
            )

    def log(self, row: dict[str, Any]) -> None:
        row = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int)) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.output_dir / JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=int(row["env_steps"]))

    def _rewrite(self) -> None:
        with open(self.output_dir / JSONL, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        self._write_csv()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        with open(self.output_dir / CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl. A last line cut short (a kill during the append) is dropped with a
    warning: the resumed run logs that step again. A damaged line before it is an error naming it."""
    lines = [(number, line) for number, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
    rows = []
    for number, line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number != lines[-1][0]:
                raise ValueError(f"{path}, line {number} is not JSON ({e}): repair or delete that line, then resume "
                                 "again") from None
            logger.warning("%s: dropped its last line, which was cut short by an interrupted write: %.80r", path, line)
    return rows


def console_line(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A compact `key:value` line of the chosen metrics that the row has."""
    parts = []
    for key in keys:
        if key in row and row[key] is not None:
            value = row[key]
            parts.append(f"{key}:{value:.3g}" if isinstance(value, float) else f"{key}:{value}")
    return " ".join(parts)
