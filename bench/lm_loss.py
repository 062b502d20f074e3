"""LM head + next-token cross-entropy: full logits vs the chunked fused loss, for a training
step (forward and backward) and for evaluation (forward only, no gradient).

The CPU profile's shape by default (16 blocks x 128 tokens, width 128, GPT-2's
50,257 ids). Both routes run interleaved in one process on the same inputs;
reports medians and the ratio, plus the peak extra memory each route allocates
(the high-water mark of resident memory in a fresh child process, Linux).

    python bench/lm_loss.py --json [--rounds 7] [--tokens 2048] [--width 128] [--default-malloc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from moe_emergence.core.allocator import keep_freed_memory
from moe_emergence.model.lm_loss import (
    DEFAULT_CHUNK_TOKENS,
    lm_loss_from_hidden,
    sequence_lm_loss,
)

VOCAB = 50257


def inputs(tokens: int, width: int, block: int):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens // block, block, width, generator=g)
    w = torch.randn(VOCAB, width, generator=g) * 0.02
    ids = torch.randint(0, VOCAB, (tokens // block, block), generator=g)
    return h, w, ids


def full(h, w, ids):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    sequence_lm_loss(h @ w.t(), ids).mean().backward()


def chunked(h, w, ids, chunk=DEFAULT_CHUNK_TOKENS):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    lm_loss_from_hidden(h, w, ids, chunk)[0].backward()


@torch.no_grad()
def full_eval(h, w, ids):
    sequence_lm_loss(h @ w.t(), ids)


@torch.no_grad()
def chunked_eval(h, w, ids):
    lm_loss_from_hidden(h, w, ids)


ROUTES = {"full_logits": full, "chunked": chunked, "full_logits_eval": full_eval, "chunked_eval": chunked_eval}


def peak_rss_mb(route: str, a) -> float:
    """Peak RSS of a child that builds the inputs and runs one step of `route`, minus one that only builds them."""
    code = (
        "import re\n"
        "import bench.lm_loss as B\n"
        "x=B.inputs({t},{w},{b})\n"
        "{call}\n"
        # VmHWM belongs to the new address space; ru_maxrss would carry over the parent's peak across exec
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = []
    for call in (f"B.ROUTES['{route}'](*x)", "pass"):
        src = code.format(t=a.tokens, w=a.width, b=a.block, call=call)
        r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, check=True)
        out.append(int(r.stdout.split()[-1]) / 1024)
    return out[0] - out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's mmap/trim thresholds as they are (the stages raise them)")
    a = parser.parse_args()
    malloc_tuned = False if a.default_malloc else keep_freed_memory()
    x = inputs(a.tokens, a.width, a.block)
    times: dict[str, list[float]] = {k: [] for k in ROUTES}
    for i in range(a.rounds + 1):
        for name, f in ROUTES.items():
            t0 = time.perf_counter()
            f(*x)
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "config": {"tokens": a.tokens, "width": a.width, "vocab": VOCAB, "chunk_tokens": DEFAULT_CHUNK_TOKENS,
                   "threads": torch.get_num_threads(), "rounds": a.rounds,
                   "malloc_tuned": malloc_tuned},
        "full_logits_s": med["full_logits"],
        "chunked_s": med["chunked"],
        "speedup": med["full_logits"] / med["chunked"],
        "eval_full_logits_s": med["full_logits_eval"],
        "eval_chunked_s": med["chunked_eval"],
        "eval_speedup": med["full_logits_eval"] / med["chunked_eval"],
        **{f"{r}_peak_extra_mb": peak_rss_mb(r, a) for r in ROUTES},
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"train: full logits {med['full_logits']:.3f}s, chunked {med['chunked']:.3f}s, "
              f"speedup {out['speedup']:.2f}x; eval: speedup {out['eval_speedup']:.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
