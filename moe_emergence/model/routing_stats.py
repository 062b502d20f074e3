"""Routing statistics from expert counts, shared by the training logs and the analysis.

Each takes a count (or load) vector over a layer's E experts, with any leading
dimensions (e.g. [layers, E] or [checkpoints, E]); reductions run over the last
axis. A torch tensor in gives float64 torch tensors out (0-d for a vector);
numpy arrays or lists give numpy results. `float(...)` works on either.

`active`, where accepted, is a bool mask over the experts: dormant ghost
experts are left out (they are neither dead nor part of the balance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray | Sequence[float]


def _t(x: ArrayLike) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x.detach().double(), True
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), False


def _out(x: torch.Tensor, was_torch: bool) -> Any:
    return x if was_torch else x.numpy()


def _select(counts: ArrayLike, active: ArrayLike | None) -> tuple[torch.Tensor, bool]:
    c, was_torch = _t(counts)
    if active is not None:
        mask, _ = _t(active)
        c = c[..., mask.to(c.device).bool()]
    return c, was_torch


def _fractions(c: torch.Tensor) -> torch.Tensor:
    total = c.sum(-1, keepdim=True)
    return torch.where(total > 0, c / total.clamp_min(1e-300), torch.zeros_like(c))


def load_fractions(counts: ArrayLike, active: ArrayLike | None = None) -> Any:
    """Share of the assignments per expert (sums to 1; all zeros for no tokens)."""
    c, was_torch = _select(counts, active)
    return _out(_fractions(c), was_torch)


def top_share(counts: ArrayLike, active: ArrayLike | None = None) -> Any:
    """Largest expert's share of the load: 1/E balanced, 1 collapsed."""
    c, was_torch = _select(counts, active)
    return _out(_fractions(c).amax(-1), was_torch)


def normalized_load_entropy(counts: ArrayLike, active: ArrayLike | None = None) -> Any:
    """Entropy of the load fractions divided by log E: 1 balanced, 0 collapsed."""
    c, was_torch = _select(counts, active)
    n = c.shape[-1]
    h = torch.special.entr(_fractions(c)).sum(-1)
    return _out(h / math.log(n) if n > 1 else torch.zeros_like(h), was_torch)


def dead_experts(counts: ArrayLike, active: ArrayLike | None = None) -> Any:
    """Number of (routable) experts that received no token."""
    c, was_torch = _select(counts, active)
    return _out((c == 0).sum(-1).double(), was_torch)
