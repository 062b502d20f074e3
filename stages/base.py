"""Stage `base`: the dense model every variant starts from.

CPU profile (`model.init: scratch`): a small GPT-2-shaped model trained on the
train split for `base.max_steps`. GPT-2 profile (`model.init: gpt2`,
`base.max_steps: 0`): the pretrained checkpoint, exported as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moe_emergence.core.cli import relaunch, run_stage
from moe_emergence.core.config import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--processes", type=int, default=1,
                    help="data-parallel processes on this machine (train.nproc; torchrun when > 1)")
    parser.add_argument("--packed", type=Path, default=Path("data/packed"))
    parser.add_argument("--model-out", type=Path, default=Path("models/base"))
    parser.add_argument("--report-out", type=Path, default=Path("reports/train/base"))
    args = parser.parse_args()
    params = load_params(args.params)
    if relaunch(args.processes, "stages.base", sys.argv[1:]):  # each rank runs this same command
        return
    # Imported once the params are valid: the training package loads torch and transformers
    # (~4 s), and a wrong parameter should be reported before that.
    from moe_emergence.training.runs import run_base

    run_base(params, args.packed, args.model_out, args.report_out)


if __name__ == "__main__":
    run_stage("base", main)
