"""Stage `pack`: GPT-2 BPE into fixed uint16 blocks (Arrow), train balanced; the data report.

Usage: python -m stages.pack --sampled data/sampled --out data/packed \
           --report reports/data/pack.json --report-dir reports/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moe_emergence.core.cli import run_stage
from moe_emergence.core.config import load_params
from moe_emergence.data.pack import run_pack
from moe_emergence.data.report import write_samples_and_artifacts, write_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sampled", type=Path, default=Path("data/sampled"))
    parser.add_argument("--out", type=Path, default=Path("data/packed"))
    parser.add_argument("--report", type=Path, default=Path("reports/data/pack.json"))
    parser.add_argument("--report-dir", type=Path, default=Path("reports/data"))
    args = parser.parse_args()
    pack = load_params(args.params).pack
    summary = run_pack(pack, args.sampled, args.out, args.report)
    artifacts = write_samples_and_artifacts(args.sampled, args.report_dir / "samples",
                                            args.report_dir / "artifacts.json", seed=pack.seed)
    write_summary(args.report_dir, args.sampled, args.report_dir / "report.md")
    per = ", ".join(f"{d} {r['blocks_balanced']:,}" for d, r in summary["train"]["domains"].items())
    print(f"pack: train {summary['train']['blocks']:,} blocks ({per}), eval {summary['eval']['blocks']:,} blocks of "
          f"{summary['block_size']} tokens; {artifacts['flags']} artifact flags -> {args.out}")


if __name__ == "__main__":
    run_stage("pack", main)
