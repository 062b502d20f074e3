"""Ghost experts: spare experts held dormant until a layer's routing saturates.

A layer built with `model.ghost_experts` > 0 has that many extra experts whose
`active` flag is False: the router masks them out (logit -inf), so they get no
tokens, load or LM gradient. This module is the only writer of `active` after
`to_moe`. The rule, checked by `observe` at each of the trainer's routing checks:
a layer whose top expert's load share exceeds `threshold` at `patience`
consecutive checks wakes its lowest-indexed dormant expert; its streak restarts.

Waking j to relieve the saturated expert i:
- j's slice of every stacked expert weight becomes i's plus N(0, 1) * `noise` *
  std (model.upcycle_noise), so the layer's function barely changes;
- router row j becomes row i + delta and row i becomes row i - delta, delta ~
  N(0, 1) * `router_offset` * std(row i): the two logits tie up to +-x.delta, so
  i's tokens divide along a random hyperplane and the LB loss takes it from there;
- `active[j]` is set; a layer with no dormant expert left is not touched.

In DDP, call `observe` on every rank with the same (all-reduced) fractions: the
controller's seeded generator then makes identical wakes everywhere. The woken
slices were in the optimizer all along (zero gradients while dormant), so AdamW
needs no rebuild; `copy_optimizer_state`, called right after a wake, gives them
the relieved expert's moments so the copy continues the same trajectory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from moe_emergence.model.gpt2 import moe_layers
from moe_emergence.model.moe import MoELayer
from moe_emergence.model.routing_stats import load_fractions
from moe_emergence.model.spec import MoESpec


@dataclass
class WakeEvent:
    step: int
    layer: int  # transformer layer index
    relieved: int  # the saturated expert whose load is split
    woken: int  # the ghost expert now active
    top_share: float | None  # the relieved expert's share at the triggering check (None if forced)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GhostController:
    """Wakes dormant experts by the rule in this module's docstring."""

    def __init__(self, model: nn.Module, threshold: float, patience: int, noise: float = 1e-3,
                 router_offset: float = 1e-2, seed: int = 0) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"model.ghost_threshold must be in (0, 1], got {threshold}")
        if patience < 1:
            raise ValueError(f"model.ghost_patience must be >= 1, got {patience}")
        self.layers: dict[int, MoELayer] = dict(moe_layers(model))
        self.threshold = threshold
        self.patience = patience
        self.noise = noise
        self.router_offset = router_offset
        self.gen = torch.Generator().manual_seed(seed)
        self.streak: dict[int, int] = {i: 0 for i in self.layers}
        self.events: list[WakeEvent] = []

    @classmethod
    def from_params(cls, model: nn.Module, mp: MoESpec, seed: int) -> GhostController:
        return cls(model, mp.ghost_threshold, mp.ghost_patience, noise=mp.upcycle_noise, seed=seed)

    def dormant(self, layer: int) -> list[int]:
        return [int(e) for e in (~self.layers[layer].active).nonzero().flatten().tolist()]

    def observe(self, step: int, fractions: Mapping[int, Sequence[float] | torch.Tensor | np.ndarray]) -> list[WakeEvent]:
        """Feed one check's load fractions (or counts) per block; returns the wakes it caused."""
        events = []
        for i, frac in fractions.items():
            if i not in self.layers:
                raise KeyError(f"GhostController.observe: layer {i} is not a MoE layer")
            f = torch.as_tensor(load_fractions(frac)).cpu()
            top = int(f.argmax())
            if float(f[top]) > self.threshold:
                self.streak[i] += 1
            else:
                self.streak[i] = 0
            if self.streak[i] >= self.patience and self.dormant(i):
                events.append(self.wake(step, i, top, float(f[top])))
        return events

    def wake(self, step: int, layer: int, relieved: int, top_share: float | None = None) -> WakeEvent:
        """Wake the lowest-indexed dormant expert of `layer` to relieve expert `relieved`."""
        moe = self.layers[layer]
        dormant = self.dormant(layer)
        if not dormant:
            raise RuntimeError(f"layer {layer} has no dormant expert left to wake")
        if not bool(moe.active[relieved]):
            raise ValueError(f"expert {relieved} of layer {layer} is itself dormant")
        woken = dormant[0]
        with torch.no_grad():
            for p in moe.experts.parameters():  # [E, ...], expert e is slice e
                std = p[relieved].float().std().item() if p[relieved].numel() > 1 else 0.0
                noise = torch.randn(p.shape[1:], generator=self.gen) * (std * self.noise)
                p[woken] = p[relieved] + noise.to(p.device, p.dtype)
            w = moe.router.weight
            row = w[relieved].float()
            scale = row.std().item()
            scale = scale if scale > 0 else 1.0  # an all-zero row still needs a split
            delta = torch.randn(row.shape, generator=self.gen) * (scale * self.router_offset)
            delta = delta.to(w.device, w.dtype)
            w[woken] = w[relieved] + delta
            w[relieved] -= delta
            moe.active[woken] = True
        self.streak[layer] = 0
        event = WakeEvent(step=step, layer=layer, relieved=relieved, woken=woken, top_share=top_share)
        self.events.append(event)
        return event

    def copy_optimizer_state(self, optimizer: torch.optim.Optimizer, event: WakeEvent) -> None:
        """Give the woken expert (and its router row) the relieved expert's optimizer state."""
        moe = self.layers[event.layer]
        with torch.no_grad():
            for p in (*moe.experts.parameters(), moe.router.weight):
                for v in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.shape == p.shape:  # moments; not AdamW's `step`
                        v[event.woken] = v[event.relieved]

    def state_dict(self) -> dict[str, Any]:
        """Streaks, events and generator state as plain JSON types, for a resumable
        checkpoint (the active masks live in the model's own state)."""
        return {
            "streak": {str(k): v for k, v in self.streak.items()},
            "events": [e.to_dict() for e in self.events],
            "rng": base64.b64encode(self.gen.get_state().numpy().tobytes()).decode("ascii"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.streak = {int(k): int(v) for k, v in state["streak"].items()}
        self.events = [WakeEvent(**e) for e in state["events"]]
        raw = np.frombuffer(base64.b64decode(state["rng"]), dtype=np.uint8).copy()
        self.gen.set_state(torch.from_numpy(raw))
