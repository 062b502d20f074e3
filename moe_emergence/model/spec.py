"""What the model code needs to know, as small frozen dataclasses the model owns.

The pipeline's validated params (`moe_emergence.core.config`) are one source of
these; a checkpoint's sidecar is another. `from_params` reads the same-named
attributes of any object (duck typed), so nothing under `model/` imports the
config layer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


def _read(cls: type, obj: Any) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        v = getattr(obj, f.name)
        out[f.name] = tuple(v) if isinstance(v, list) else v
    return out


@dataclass(frozen=True)
class ArchSpec:
    """GPT-2 shape of a base trained from scratch."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    dropout: float = 0.0  # residual and embedding dropout (attention dropout stays 0)

    @classmethod
    def from_params(cls, obj: Any) -> ArchSpec:
        return cls(**_read(cls, obj))


@dataclass(frozen=True)
class MoESpec:
    """Which transformer layers get a MoE MLP, and how those layers are built and route."""

    moe_layers: tuple[int, ...] = (2, 3)
    n_experts: int = 8  # routable from the start
    top_k: int = 1
    router_noise_std: float = 0.0
    moe_init: str = "upcycle"  # "upcycle": copies of the dense MLP; "scratch": GPT-2's init
    upcycle_noise: float = 1e-3  # N(0, 1) * this * std(param), per expert (and per woken ghost)
    router_init: str = "normal"  # "normal" or "centered" (Router.center_)
    ghost_experts: int = 0  # dormant extra experts per layer (ghost.py)
    ghost_threshold: float = 0.5
    ghost_patience: int = 3

    @classmethod
    def from_params(cls, obj: Any) -> MoESpec:
        return cls(**_read(cls, obj))
