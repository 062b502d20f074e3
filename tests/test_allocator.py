"""The stages' allocator setting: a large block freed by one training step is reused by
the next without page faults (counted by the kernel, not timed)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = """
import resource, sys
import torch
from moe_emergence.core.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
n = (64 << 20) // 4  # a 64 MB fp32 temporary, above glibc's default mmap threshold
# allocated, touched, freed, as a step's temporaries are; the heap takes a few rounds to
# settle (aligned allocations do not fit the first freed blocks), then reuses them
for _ in range(16):
    torch.empty(n).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(n).fill_(1.0)
print(int(tuned), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    tuned, n = out.stdout.split()
    return tuned == "1", int(n)


@pytest.mark.slow  # two child processes that import torch
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_large_block_is_reused_without_page_faults():
    tuned, with_setting = faults("tuned")
    _, default = faults("default")
    pages = 4 * (64 << 20) // 4096
    assert tuned
    assert default > pages // 2  # glibc's default: each 64 MB comes back from the kernel, page by page
    assert with_setting < pages // 50  # kept in the heap: reused as is
