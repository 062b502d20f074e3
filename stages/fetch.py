"""Stage `fetch`: every domain's documents, filtered, deduplicated, with provenance.

Usage: python -m stages.fetch --out data/raw --report reports/data/fetch.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import DataParams, ParamsError, load_params
from moe_emergence.data.fetch import run_fetch

# The folder dvc.yaml declares as a dependency of fetch: local sources live here, so that
# editing one makes `dvc status` flag fetch (a file elsewhere would be read but not tracked).
INPUTS = "inputs"


def check_tracked(data: DataParams) -> None:
    for dom, src in data.sources.items():
        if src.kind == "local" and os.path.normpath(src.path).split(os.sep)[0] != INPUTS:
            raise ParamsError(f"params.yaml: `data.sources.{dom}.path` ({src.path}) must lie under {INPUTS}/, the "
                              f"folder DVC tracks for fetch; move the files there (an edit elsewhere would not re-run "
                              "fetch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--report", type=Path, default=Path("reports/data/fetch.json"))
    args = parser.parse_args()
    data = load_params(args.params).data
    check_tracked(data)
    summary = run_fetch(data, args.out, args.report)
    parts = [f"{d} {c['kept']['docs']:,} docs / {c['kept']['chars']:,} chars" for d, c in summary["domains"].items()]
    print(f"fetch: {'; '.join(parts)} -> {args.out}")


if __name__ == "__main__":
    run_stage("fetch", main)
