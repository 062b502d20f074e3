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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--sampled", type=Path, default=Path("data/sampled"))
    ap.add_argument("--out", type=Path, default=Path("data/packed"))
    ap.add_argument("--report", type=Path, default=Path("reports/data/pack.json"))
    ap.add_argument("--report-dir", type=Path, default=Path("reports/data"))
    a = ap.parse_args()
    pp = load_params(a.params).pack
    s = run_pack(pp, a.sampled, a.out, a.report)
    arts = write_samples_and_artifacts(a.sampled, a.report_dir / "samples", a.report_dir / "artifacts.json",
                                       seed=pp.seed)
    write_summary(a.report_dir, a.sampled, a.report_dir / "report.md")
    per = ", ".join(f"{d} {r['blocks_balanced']:,}" for d, r in s["train"]["domains"].items())
    print(f"pack: train {s['train']['blocks']:,} blocks ({per}), eval {s['eval']['blocks']:,} blocks of "
          f"{s['block_size']} tokens; {arts['flags']} artifact flags -> {a.out}")


if __name__ == "__main__":
    run_stage("pack", main)
