"""Learning-rate schedule: linear warmup, then cosine decay whose horizon is always max_steps."""

from __future__ import annotations

import math


def warmup_steps(max_steps: int, warmup_frac: float) -> int:
    return int(warmup_frac * max_steps)


def lr_factor(step: int, max_steps: int, warmup: int, min_lr_frac: float) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based).

    Warmup rises linearly to 1 over `warmup` steps (step 0 already trains, at
    1/warmup), then a half cosine falls to `min_lr_frac` exactly at `max_steps`.
    The horizon never depends on the data size.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr_frac + (1.0 - min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def noise_scale(step: int, max_steps: int, anneal_frac: float) -> float:
    """Router-noise multiplier: decays linearly from 1 to 0 over `anneal_frac` of training.

    `anneal_frac` 0 keeps the noise constant (no annealing); the std itself is
    `model.router_noise_std`, so 0 there turns noise off.
    """
    if anneal_frac <= 0:
        return 1.0
    return max(0.0, 1.0 - step / (anneal_frac * max_steps))
