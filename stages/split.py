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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", type=Path, default=Path("data/raw"))
    ap.add_argument("--out", type=Path, default=Path("data/split"))
    ap.add_argument("--report", type=Path, default=Path("reports/data/split.json"))
    a = ap.parse_args()
    s = run_split(load_params(a.params).split, a.raw, a.out, a.report)
    parts = [f"{d} {r['train']['docs']:,}/{r['eval']['docs']:,}" for d, r in s["domains"].items()]
    lk = s["leakage"]
    print(f"split: train/eval docs {'; '.join(parts)}; shared hashes {lk['shared_content_hashes']}, "
          f"near-dups dropped {lk['near_dup_dropped']} -> {a.out}")


if __name__ == "__main__":
    run_stage("split", main)
