"""Router-collapse detection, one rule for every variant.

A check looks at each MoE layer's expert load fractions over a logging window
(all tokens of the window, never one micro-batch). A layer is *hit* when its
top expert's share exceeds `threshold`, or when fewer than `min_live` experts
received any token. `patience` consecutive hit checks of any layer make a
collapse. The first collapse is recorded and never overwritten: later checks,
the final eval and the final save leave it as it was. Whether the run stops on
it is the trainer's choice (`train.collapse_stop`); the record is kept either
way. Checks before `warmup` steps count nothing (a freshly initialized router
may be briefly unbalanced).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from moe_emergence.model.routing_stats import dead_experts, top_share


@dataclass
class CollapseRecord:
    detected: bool = False
    step: int = -1
    layer: int = -1
    expert: int = -1
    share: float = 0.0
    live_experts: int = -1
    reason: str = ""


@dataclass
class CollapseDetector:
    threshold: float = 0.6
    patience: int = 3
    min_live: int = 2
    warmup: int = 0
    streak: int = 0
    record: CollapseRecord = field(default_factory=CollapseRecord)
    history: list[dict] = field(default_factory=list)

    def observe(self, step: int, fractions: dict[int, torch.Tensor],
                active: dict[int, torch.Tensor] | None = None) -> bool:
        """Feed one check (load fractions by block; `active` masks out dormant ghost experts).

        Returns True on the check that first detects collapse.
        """
        hit = None
        for layer in sorted(fractions):
            frac = fractions[layer].double()
            mask = active.get(layer) if active else None
            share = float(top_share(frac, mask))
            n_routable = int(mask.sum()) if mask is not None else frac.numel()
            live = n_routable - int(dead_experts(frac, mask))
            if share > self.threshold:
                hit = (layer, int(frac.argmax()), share, live, f"top expert share {share:.3f} > {self.threshold}")
                break
            if live < self.min_live:
                hit = (layer, int(frac.argmax()), share, live, f"{live} live experts < floor {self.min_live}")
                break
        counted = step >= self.warmup
        self.streak = self.streak + 1 if (hit and counted) else 0
        self.history.append({"step": step, "hit": bool(hit and counted), "streak": self.streak})
        if self.streak >= self.patience and not self.record.detected:
            layer, expert, share, live, why = hit
            self.record = CollapseRecord(True, step, layer, expert, share, live, why)
            return True
        return False

    def state_dict(self) -> dict:
        return {"streak": self.streak, "record": asdict(self.record), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.streak = int(state["streak"])
        self.record = CollapseRecord(**state["record"])
        self.history = list(state["history"])
