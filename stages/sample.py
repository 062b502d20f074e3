"""Stage `sample`: seeded shuffle, then truncation to `sample.size_mb` characters per domain.

Usage: python -m stages.sample --split data/split --out data/sampled --report reports/data/sample.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params
from moe_emergence.data.sample import run_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("data/sampled"))
    parser.add_argument("--report", type=Path, default=Path("reports/data/sample.json"))
    args = parser.parse_args()
    summary = run_sample(load_params(args.params).sample, args.split, args.out, args.report)
    parts = [
        f"{d} {r['sampled']['train']['chars'] + r['sampled']['eval']['chars']:,} chars"
        for d, r in summary["domains"].items()
    ]
    print(f"sample: {'; '.join(parts)} -> {args.out}")


if __name__ == "__main__":
    run_stage("sample", main)
