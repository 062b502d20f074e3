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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--split", type=Path, default=Path("data/split"))
    ap.add_argument("--out", type=Path, default=Path("data/sampled"))
    ap.add_argument("--report", type=Path, default=Path("reports/data/sample.json"))
    a = ap.parse_args()
    s = run_sample(load_params(a.params).sample, a.split, a.out, a.report)
    parts = [
        f"{d} {r['sampled']['train']['chars'] + r['sampled']['eval']['chars']:,} chars"
        for d, r in s["domains"].items()
    ]
    print(f"sample: {'; '.join(parts)} -> {a.out}")


if __name__ == "__main__":
    run_stage("sample", main)
