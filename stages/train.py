"""Stage `train@<variant>` / `train_dense`: fine-tune one variant from the base model.

Usage: python stages/train.py --variant moe --seed 0 [--packed data/packed --base models/base]
Several GPUs: torchrun --nproc_per_node N stages/train.py --variant moe --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params
from moe_emergence.training.runs import run_name, run_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--seed", type=int, required=True, help="one of the `seeds` in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--packed", type=Path, default=Path("data/packed"))
    ap.add_argument("--base", type=Path, default=Path("models/base"))
    ap.add_argument("--model-out", type=Path)
    ap.add_argument("--report-out", type=Path)
    ap.add_argument("--work-root", type=Path, default=None,
                    help="where resumable work in progress lives (default .cache/runs)")
    a = ap.parse_args()
    params = load_params(a.params)
    params.variant(a.variant)  # an unknown variant fails here, before any work
    run = run_name(a.variant, a.seed)
    run_variant(params, a.variant, a.seed, a.packed, a.base, a.model_out or Path("models") / run,
                a.report_out or Path("reports/train") / run, work_root=a.work_root)


if __name__ == "__main__":
    run_stage("train", main)
