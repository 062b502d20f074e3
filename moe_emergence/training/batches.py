"""Deterministic, resumable batches over the packed train blocks.

The order is a function of (stream, seed, epoch) only: epoch e visits the
blocks in `randperm(n)` drawn from a generator seeded with a hash of the three.
The base trains on stream "base" and the variants on "finetune", so a variant
never replays the base's batches in the base's order, whatever the seeds; all
variants with one seed see the same batches (their comparison is paired). The global sequence
index of micro-batch m of optimizer step s is (s * grad_accum + m) * batch_size
onwards, so the data position is the step itself: a resumed run sees exactly
the batches an uninterrupted one would. Under data parallel each rank takes its
contiguous share of every micro-batch, so the global batch does not depend on
the number of processes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def stream_seed(stream: str, seed: int, epoch: int) -> int:
    """A 63-bit generator seed for one epoch of one data stream."""
    digest = hashlib.sha256(f"{stream}/{seed}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class BatchPlan:
    def __init__(self, n_blocks: int, batch_size: int, grad_accum: int, seed: int, rank: int = 0, world: int = 1,
                 stream: str = "finetune"):
        if n_blocks < 1:
            raise ValueError("the packed train set has no blocks; re-run `dvc repro pack` with a larger sample.size_mb")
        if batch_size % world:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({world})"
            )
        self.n, self.bs, self.accum, self.seed = n_blocks, batch_size, grad_accum, seed
        self.rank, self.world, self.stream = rank, world, stream
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(stream_seed(self.stream, self.seed, epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g).numpy()}
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> np.ndarray:
        """Block indices for this rank's part of micro-batch `micro` of optimizer step `step`."""
        local = self.bs // self.world
        start = (step * self.accum + micro) * self.bs + self.rank * local
        out = np.empty(local, dtype=np.int64)
        for j in range(local):
            k = start + j
            out[j] = self._perm(k // self.n)[k % self.n]
        return out

    def epochs_at(self, step: int) -> float:
        return step * self.accum * self.bs / self.n
