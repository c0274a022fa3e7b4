"""Pool `lerobot-steer-eval` reports of the same checkpoints run on disjoint seed sets.

    python scripts/pool_evals.py outputs/eval_200000 outputs/eval_400000 --output_dir outputs/eval_pooled \
        [--labels "zero,gaussian,tanh,DSRL sampled,DSRL mean"]

A run that finished after its baselines were evaluated is evaluated alone on the same seed sets, then
joined to the table by checkpoint path, its paired tests matched seed by seed:

    python scripts/pool_evals.py outputs/eval_200000 outputs/eval_400000 outputs/late_200000 outputs/late_400000 \
        --match path --output_dir outputs/eval_pooled

Writes eval_report.json, results.md (with each steered checkpoint against every free baseline) and
success_rates.png, as one evaluation over all the seeds would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lerobot_steer.evaluation.pooling import MATCHES, free_baseline_lines, load_reports, pool_reports
from lerobot_steer.evaluation.report import write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="eval_report.json files or the folders holding them")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--labels", default=None, help="comma-separated names for the checkpoints, in order")
    parser.add_argument("--match", choices=MATCHES, default="position",
                        help="position: the same --policy_paths list on disjoint seed sets; path: checkpoints "
                             "matched by path and merged seed by seed across the reports")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else None
    report = pool_reports(load_reports(args.reports), labels, args.match)
    paths = write_outputs(report, args.output_dir)
    extra = free_baseline_lines(report)
    if extra:
        with open(paths["markdown"], "a") as f:
            f.write("\nAgainst every free baseline (exact McNemar on the paired seeds):\n\n" + "\n".join(extra) + "\n")
    print(paths["markdown"].read_text())


if __name__ == "__main__":
    main()
