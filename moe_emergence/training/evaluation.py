"""Evaluation on the whole eval set and router statistics over a window of tokens.

LM loss is computed per sequence (mean over its shifted positions) and grouped
by the block's domain. The overall loss is reported both block-weighted (every
eval block counts once) and macro-averaged over domains (every domain counts
once, whatever its eval share). Perplexity comes from the LM loss alone; the
auxiliary losses are reported separately and never folded in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from moe_emergence.core.progress import progress
from moe_emergence.model.gpt2 import latest_routing, moe_layers
from moe_emergence.model.lm_loss import model_sequence_losses
from moe_emergence.model.losses import load_balance_loss, z_loss
from moe_emergence.model.router import RouterOutput, router_entropy
from moe_emergence.model.routing_stats import (
    dead_experts,
    load_fractions,
    normalized_load_entropy,
    top_share,
)


def group_by_domain(per_seq: np.ndarray, domain_codes: np.ndarray, names: list[str]) -> dict[str, float]:
    out = {}
    for code, name in enumerate(names):
        sel = domain_codes == code
        if sel.any():
            out[name] = float(per_seq[sel].mean())
    return out


class RouterWindow:
    """Expert counts and router entropy per MoE layer, accumulated over many forwards."""

    def __init__(self, model: torch.nn.Module):
        self.layers = [(i, layer) for i, layer in moe_layers(model)]
        self.reset()

    def reset(self) -> None:
        self.counts: dict[int, torch.Tensor] = {}
        self.entropy_sum: dict[int, float] = {}
        self.tokens: dict[int, int] = {}

    def update(self, routing: Mapping[int, RouterOutput]) -> None:
        """Add one forward's routing (layer -> router output, `gpt2.latest_routing`)."""
        for i, _ in self.layers:
            r = routing[i]
            c = r.counts.detach().double().cpu()
            self.counts[i] = self.counts.get(i, torch.zeros_like(c)) + c
            ent = router_entropy(r.logits.detach())
            self.entropy_sum[i] = self.entropy_sum.get(i, 0.0) + float(ent.double().sum())
            self.tokens[i] = self.tokens.get(i, 0) + ent.numel()

    def all_reduce(self) -> None:
        """Sum the window over data-parallel ranks (no-op in one process)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for i in self.counts:
            extra = torch.tensor([self.entropy_sum[i], float(self.tokens[i])], dtype=torch.float64)
            buf = torch.cat([self.counts[i], extra])
            torch.distributed.all_reduce(buf)
            self.counts[i] = buf[:-2]
            self.entropy_sum[i], self.tokens[i] = float(buf[-2]), int(buf[-1])

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """The window so far (part of the trainer's resumable state: a resumed run logs the same curves)."""
        return {"counts": {str(i): c.clone() for i, c in self.counts.items()},
                "entropy_sum": {str(i): v for i, v in self.entropy_sum.items()},
                "tokens": {str(i): v for i, v in self.tokens.items()}}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        self.counts = {int(i): c.double() for i, c in state["counts"].items()}
        self.entropy_sum = {int(i): float(v) for i, v in state["entropy_sum"].items()}
        self.tokens = {int(i): int(v) for i, v in state["tokens"].items()}

    def active(self) -> dict[int, torch.Tensor]:
        """Routable experts per layer (dormant ghost experts are neither dead nor balanced)."""
        return {i: layer.active.detach().cpu() for i, layer in self.layers}

    def fractions(self) -> dict[int, torch.Tensor]:
        """Load fractions over all of a layer's experts (dormant ones at 0), by layer index."""
        return {i: load_fractions(c) for i, c in self.counts.items()}

    def stats(self) -> dict[str, float]:
        """Flat metrics, `router/layer<i>/...`, plus the max top share over layers."""
        out: dict[str, float] = {}
        shares = []
        active = self.active()
        for i, c in sorted(self.counts.items()):
            frac = load_fractions(c)
            share = float(top_share(c, active[i]))
            shares.append(share)
            p = f"router/layer{i}"
            out[f"{p}/top_share"] = share
            out[f"{p}/load_entropy"] = float(normalized_load_entropy(c, active[i]))
            out[f"{p}/dead_experts"] = float(dead_experts(c, active[i]))
            out[f"{p}/token_entropy"] = self.entropy_sum[i] / max(1, self.tokens[i])
            for e, f in enumerate(frac.tolist()):
                out[f"{p}/load_e{e}"] = f
        if shares:
            out["router/max_share"] = max(shares)
        return out


    def layer_summary(self) -> dict[str, dict[str, Any]]:
        """Per layer (`layer<i>`): top share, live experts and the load fractions, for the records."""
        out: dict[str, dict[str, Any]] = {}
        active = self.active()
        for i, c in sorted(self.counts.items()):
            n_routable = int(active[i].sum())
            out[f"layer{i}"] = {
                "top_share": float(top_share(c, active[i])),
                "live_experts": n_routable - int(dead_experts(c, active[i])),
                "fractions": [float(f) for f in load_fractions(c).tolist()],
                "tokens": int(c.sum()),
            }
        return out


@torch.no_grad()
def route_only(
    model: torch.nn.Module,
    batches: Iterable[np.ndarray],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> RouterWindow:
    """Expert counts of every MoE layer over `batches` of [B, T] model ids, in eval mode
    (no noise), without the LM head: the routing a model would give, at the cost of a forward."""
    was_training = model.training
    model.eval()
    window = RouterWindow(model)
    for ids in batches:
        x = torch.from_numpy(np.asarray(ids).astype(np.int64)).to(device)
        with autocast():
            model.transformer(input_ids=x)
        window.update(latest_routing(model))
    model.train(was_training)
    return window


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    ids: np.ndarray,
    domain_codes: np.ndarray,
    domain_names: list[str],
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Whole-eval-set metrics in `eval/...` names, plus router stats in `router/...`."""
    was_training = model.training
    model.eval()
    window = RouterWindow(model)
    per_seq = np.empty(len(ids), dtype=np.float64)
    lb_sum = z_sum = 0.0
    n_batches = 0
    starts = range(0, len(ids), batch_size)
    for start in progress(starts, f"eval ({len(ids)} blocks)", total=len(starts), unit="batch"):
        x = torch.from_numpy(ids[start : start + batch_size].astype(np.int64)).to(device)
        with autocast():
            losses = model_sequence_losses(model, x)
        per_seq[start : start + len(x)] = losses.double().cpu().numpy()
        if window.layers:
            routing = latest_routing(model)
            window.update(routing)
            lbs, zs = [], []
            for i, layer in window.layers:
                r = routing[i]
                # E is the number of routable experts (dormant ghosts excluded), so balanced = 1
                lbs.append(float(load_balance_loss(r.probs, r.expert_idx, int(layer.active.sum()))))
                zs.append(float(z_loss(r.logits)))
            lb_sum += sum(lbs) / len(lbs)
            z_sum += sum(zs) / len(zs)
        n_batches += 1
    model.train(was_training)
    by_dom = group_by_domain(per_seq, domain_codes, domain_names)
    lm = float(per_seq.mean())
    out = {
        "eval/lm_loss": lm,
        "eval/lm_loss_macro": float(np.mean(list(by_dom.values()))),
        "eval/ppl": math.exp(min(lm, 20.0)),
        "eval/blocks": float(len(ids)),
    }
    for name, v in by_dom.items():
        out[f"eval/lm_loss_{name}"] = v
        out[f"eval/ppl_{name}"] = math.exp(min(v, 20.0))
    if window.layers:
        out["eval/lb_loss"] = lb_sum / n_batches
        out["eval/z_loss"] = z_sum / n_batches
        out.update(window.stats())
    return out
