"""The two router losses, defined once; training, analysis and tests import them.

- Switch load balancing: `E * sum_i f_i * P_i`, with f_i the fraction of the
  N*k hard assignments sent to expert i (no gradient) and P_i the mean routing
  probability (after noise, the probabilities the experts were picked from).
  Balanced routing gives 1; full collapse onto one confident expert gives E.
- ST-MoE router z-loss: `mean_t logsumexp(logits_t)^2` on the raw logits.

`AuxLosses` averages both over the MoE layers of a model, once per micro-batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from moe_emergence.model.router import RouterOutput, count_assignments, router_entropy


def load_balance_loss(
    probs: Tensor, expert_idx: Tensor, n_experts: int | Tensor, counts: Tensor | None = None
) -> Tensor:
    """Switch LB loss `n_experts * sum_i f_i * P_i` for one layer.

    probs: [N, E] routing probabilities (differentiable; P is their mean over tokens).
    expert_idx: [N, k] the experts used; f counts these (fractions of the N*k assignments).
    n_experts: the E factor, the number of routable experts, so balance over them gives 1.
    counts: [E] hard counts to take f from instead of expert_idx (e.g. accumulated
        over the micro-batches of an optimizer step).
    """
    if counts is None:
        counts = count_assignments(expert_idx, probs.shape[-1])
    f = counts.float() / counts.sum().clamp_min(1)
    p_mean = probs.float().mean(0)
    return n_experts * torch.dot(f, p_mean)


def z_loss(logits: Tensor) -> Tensor:
    """Router z-loss `mean(logsumexp(logits, -1)^2)` over tokens; -inf logits
    (dormant experts) drop out of the logsumexp."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


class AuxLosses:
    """LB and z losses of every MoE layer, averaged over layers, once per micro-batch.

        aux = AuxLosses(model, scope="step")
        for step ...:
            aux.start_step()
            for micro-batch ...:
                out = model(...)
                lb, z = aux.compute(latest_routing(model))
                loss = out.loss + lb_coef * lb + z_coef * z

    scope "step": f_i uses the hard counts of all micro-batches of the current
    optimizer step so far (this one included), summed over DDP ranks when
    torch.distributed is initialized; P_i is this micro-batch's (the only part
    with a gradient). The load is thus balanced over the step's tokens rather
    than within each few-sequence micro-batch, which would push the router to
    spread every sequence, and so every domain, over all experts. The first
    micro-batch of a step sees only its own counts: a causal running estimate,
    since the later micro-batches' routing does not exist yet when its
    backward runs.
    scope "micro": f_i from this micro-batch on this rank only (the reference
    project's behaviour).

    Each layer's E factor is its number of routable experts (n_experts, plus any
    ghost experts woken so far), so balanced routing gives 1 either way.

    `step_counts()` and `step_entropy()` give the routing of the step so far,
    all ranks, for logging (whatever the scope).
    """

    def __init__(self, model: nn.Module, scope: str = "step", n_experts: int | None = None) -> None:
        from moe_emergence.model.gpt2 import moe_layers

        if scope not in ("step", "micro"):
            raise ValueError(f"model.lb_scope must be 'step' or 'micro', got {scope!r}")
        self.layers = moe_layers(model)
        if not self.layers:
            raise ValueError("AuxLosses: the model has no MoE layers (was to_moe applied?)")
        if n_experts is not None:
            for i, layer in self.layers:
                if layer.n_primary != n_experts:
                    raise ValueError(
                        f"AuxLosses: layer {i} has {layer.n_primary} primary experts, "
                        f"model.n_experts says {n_experts}"
                    )
        self.scope = scope
        self._counts: Tensor | None = None  # [L, E] over the step so far, all ranks
        self._entropy: Tensor | None = None  # [L, 2] (sum of per-token entropy, tokens), all ranks

    def start_step(self) -> None:
        self._counts = None
        self._entropy = None

    def compute(self, routing: Mapping[int, RouterOutput]) -> tuple[Tensor, Tensor]:
        """(lb, z) of one forward's routing (layer -> router output), each the mean over
        MoE layers; adds its counts to the step's. Call once per micro-batch."""
        rs = [routing[i] for i, _ in self.layers]
        with torch.no_grad():
            counts = torch.stack([r.counts for r in rs])  # [L, E]
            ent_sum = torch.stack([router_entropy(r.logits).sum() for r in rs])
            ent = torch.stack([ent_sum, torch.full_like(ent_sum, float(rs[0].logits.shape[0]))], 1)
            if dist.is_available() and dist.is_initialized():
                counts = counts.clone()
                dist.all_reduce(counts)
                dist.all_reduce(ent)
            self._counts = counts if self._counts is None else self._counts + counts
            self._entropy = ent if self._entropy is None else self._entropy + ent
        lbs, zs = [], []
        for li, ((_, layer), r) in enumerate(zip(self.layers, rs, strict=True)):
            f_counts = self._counts[li] if self.scope == "step" else r.counts
            n_routable = layer.active.sum() if layer.n_primary < layer.n_experts else layer.n_experts
            lbs.append(load_balance_loss(r.probs, r.expert_idx, n_routable, counts=f_counts))
            zs.append(z_loss(r.logits))
        return torch.stack(lbs).mean(), torch.stack(zs).mean()

    def step_counts(self) -> dict[int, Tensor]:
        """Block index -> [E] assignment counts over the step so far (all ranks)."""
        if self._counts is None:
            return {}
        return {i: self._counts[li] for li, (i, _) in enumerate(self.layers)}

    def step_entropy(self) -> dict[int, float]:
        """Block index -> mean per-token router entropy (nats, clean probs) over the step so far."""
        if self._entropy is None:
            return {}
        ent = self._entropy.cpu()
        return {i: float(ent[li, 0] / ent[li, 1].clamp_min(1)) for li, (i, _) in enumerate(self.layers)}
