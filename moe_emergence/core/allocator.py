"""Keep freed large blocks in the process heap instead of returning them to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MB by default)
with fresh pages from mmap and unmaps them on free, so each large temporary is
page-faulted and zeroed by the kernel again. Training allocates such temporaries
on every step (a 256-row chunk of LM-head logits over 50,257 ids is 51 MB, the
embedding gradient 26 MB). Raising both thresholds keeps those blocks for reuse;
BENCHMARKS.md has what it saves (`bench/train_step.py --default-malloc`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: larger blocks (rare) still come from mmap


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB; False where there is no glibc."""
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return False
    value = ctypes.c_int(_THRESHOLD)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
