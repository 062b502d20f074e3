"""Stage `split`: train/eval by group, with the leakage proof (exact and near-duplicates).

Usage: python -m stages.split --raw data/raw --out data/split --report reports/data/split.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params
from moe_emergence.data.split import run_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--out", type=Path, default=Path("data/split"))
    parser.add_argument("--report", type=Path, default=Path("reports/data/split.json"))
    args = parser.parse_args()
    summary = run_split(load_params(args.params).split, args.raw, args.out, args.report)
    parts = [f"{d} {r['train']['docs']:,}/{r['eval']['docs']:,}" for d, r in summary["domains"].items()]
    leak = summary["leakage"]
    print(f"split: train/eval docs {'; '.join(parts)}; shared hashes {leak['shared_content_hashes']}, "
          f"near-dups dropped {leak['near_dup_dropped']} -> {args.out}")


if __name__ == "__main__":
    run_stage("split", main)
