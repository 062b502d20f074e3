"""Stage `analyze`: the trained variants and the eval set in, `reports/` out.

Usage: python -m stages.analyze [--packed data/packed --sampled data/sampled --models models
                                 --train-reports reports/train --out reports]

Writes reports/report.md, reports/figures/*.png, reports/analysis/metrics.json
(DVC metrics), reports/analysis/curves/*.tsv (DVC plots) and
reports/analysis/table.tsv (every number of the report, one row each).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--packed", type=Path, default=Path("data/packed"))
    parser.add_argument("--sampled", type=Path, default=Path("data/sampled"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--train-reports", type=Path, default=Path("reports/train"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    params = load_params(args.params)
    # Imported once the params are valid: the analysis loads torch, transformers and
    # matplotlib (~5 s), and a wrong parameter should be reported before that.
    from moe_emergence.analysis.pipeline import Paths, run_analysis
    from moe_emergence.analysis.publish import one_line_summary

    results = run_analysis(params, Paths(args.packed, args.sampled, args.models, args.train_reports, args.out))
    print(one_line_summary(results, time.perf_counter() - t0, args.out))


if __name__ == "__main__":
    run_stage("analyze", main)
