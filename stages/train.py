"""Stage `train@<variant>` / `train_dense`: fine-tune one variant from the base model.

Usage: python -m stages.train --variant moe --seed 0 [--packed data/packed --base models/base]
Several GPUs: python -m stages.train --processes N ... (torchrun, one node); multi-node: README
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moe_emergence.core.cli import relaunch, run_stage
from moe_emergence.core.config import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, required=True, help="one of the `seeds` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--processes", type=int, default=1,
                    help="data-parallel processes on this machine (train.nproc; torchrun when > 1)")
    parser.add_argument("--packed", type=Path, default=Path("data/packed"))
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--model-out", type=Path)
    parser.add_argument("--report-out", type=Path)
    parser.add_argument("--work-root", type=Path, default=None,
                    help="where resumable work in progress lives (default .cache/runs)")
    args = parser.parse_args()
    params = load_params(args.params)
    params.variant(args.variant)  # an unknown variant fails here, before any work
    if relaunch(args.processes, "stages.train", sys.argv[1:]):  # each rank runs this same command
        return
    # Imported once the params are valid: the training package loads torch and transformers
    # (~4 s), and a wrong parameter should be reported before that.
    from moe_emergence.training.runs import run_name, run_variant

    run = run_name(args.variant, args.seed)
    run_variant(params, args.variant, args.seed, args.packed, args.base, args.model_out or Path("models") / run,
                args.report_out or Path("reports/train") / run, work_root=args.work_root)


if __name__ == "__main__":
    run_stage("train", main)
