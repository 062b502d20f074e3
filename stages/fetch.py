"""Stage `fetch`: every domain's documents, filtered, deduplicated, with provenance.

Usage: python stages/fetch.py --out data/raw --report reports/data/fetch.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params
from moe_emergence.data.fetch import run_fetch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("data/raw"))
    ap.add_argument("--report", type=Path, default=Path("reports/data/fetch.json"))
    a = ap.parse_args()
    data = load_params(a.params).data
    summary = run_fetch(data, a.out, a.report)
    parts = [f"{d} {c['kept']['docs']:,} docs / {c['kept']['chars']:,} chars" for d, c in summary["domains"].items()]
    print(f"fetch: {'; '.join(parts)} -> {a.out}")


if __name__ == "__main__":
    run_stage("fetch", main)
