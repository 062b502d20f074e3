"""What a stage process pays before and after its work: importing torch and transformers,
and the interpreter's teardown at exit, which `run_stage` skips once a stage that loaded
torch has published and flushed its outputs (moe_emergence/core/cli.py).

Each round starts two fresh interpreters that import what the train stage imports, one
leaving through the normal teardown and one through `os._exit`, alternated; the figures are
medians over rounds.

    python bench/stage_exit.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = """
import time
t0 = time.time()
import moe_emergence.training.runs  # torch, transformers' GPT-2, the trainer
print(t0, time.time(), flush=True)
if {quick}:
    import os
    os._exit(0)
"""


def one(quick: bool) -> tuple[float, float]:
    """(import seconds, seconds from the last line to the process's end)."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(quick=quick)], capture_output=True, text=True,
                         check=True).stdout
    end = time.time()
    t0, t1 = (float(x) for x in out.split())
    return t1 - t0, end - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    imports, normal, quick = [], [], []
    for r in range(args.rounds):
        for q in ((False, True) if r % 2 == 0 else (True, False)):
            imp, tail = one(q)
            imports.append(imp)
            (quick if q else normal).append(tail)
        print(f"round {r + 1}/{args.rounds}: teardown {normal[-1]:.2f} s, os._exit {quick[-1]:.2f} s",
              file=sys.stderr)
    res = {"rounds": args.rounds, "import_s": round(statistics.median(imports), 2),
           "exit_teardown_s": round(statistics.median(normal), 2), "exit_quick_s": round(statistics.median(quick), 2)}
    print(json.dumps(res) if args.json else
          f"import {res['import_s']} s; exit: teardown {res['exit_teardown_s']} s, quick {res['exit_quick_s']} s")


if __name__ == "__main__":
    main()
