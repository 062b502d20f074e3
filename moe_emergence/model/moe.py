"""The MoE layer that takes the place of a GPT-2 block's `mlp`.

It sees exactly what GPT-2 feeds its MLP (the block's `ln_2` output) and
returns a tensor of the same shape, so the block's own forward (attention,
norms, residuals, masking, caching) runs unchanged around it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from moe_emergence.model.dispatch import BACKENDS, choose_backend, dispatch
from moe_emergence.model.router import Router, Routing


class MoELayer(nn.Module):
    """Top-k mixture of GPT-2 MLP experts with a linear fp32 router.

    experts: modules mapping [n, d] -> [n, d]; each a `GPT2MLP` (Conv1D, gelu_new)
        so that upcycling is a copy.
    n_primary: experts routable from the start; the rest are ghost experts,
        dormant (masked out of routing, zero load) until `active[e]` is set.

    Attributes the trainer and analysis use:
        last_routing: the `Routing` of the latest forward (graph kept for the aux losses).
        noise_scale: multiplies `router_noise_std`; the trainer anneals it to 0.
        active: bool buffer [E], experts that may be routed.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        d_model: int,
        top_k: int = 1,
        router_noise_std: float = 0.0,
        n_primary: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        n = len(experts)
        n_primary = n if n_primary is None else n_primary
        if not 1 <= n_primary <= n:
            raise ValueError(f"n_primary must be in 1..{n} (the number of experts), got {n_primary}")
        if not 1 <= top_k <= n_primary:
            raise ValueError(f"top_k must be in 1..{n_primary} (model.n_experts), got {top_k}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.experts = nn.ModuleList(experts)
        self.router = Router(d_model, n)
        self.top_k = top_k
        self.router_noise_std = float(router_noise_std)
        self.noise_scale = 1.0
        self.n_primary = n_primary
        self.backend = backend
        active = torch.zeros(n, dtype=torch.bool)
        active[:n_primary] = True
        self.register_buffer("active", active)
        self.last_routing: Routing | None = None
        self._grouped_failed = False

    @property
    def n_experts(self) -> int:
        """All experts, ghosts included."""
        return len(self.experts)

    def _backend(self, x: Tensor) -> str:
        if self.backend == "auto":
            return "loop" if self._grouped_failed else choose_backend(x, self.experts)
        return self.backend

    def forward(self, hidden: Tensor) -> Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])  # [N, d]; may be a non-contiguous view upstream
        noise = self.router_noise_std * self.noise_scale if self.training else 0.0
        # Masking costs N*E; skip it when the layer has no ghost experts at all.
        active = self.active if self.n_primary < self.n_experts else None
        r = self.router(x, self.top_k, noise, active)
        self.last_routing = r
        backend = self._backend(x)
        try:
            y = dispatch(x, r.expert_idx, r.gate, r.counts, self.experts, backend)
        except (RuntimeError, NotImplementedError) as e:
            if backend != "grouped" or self.backend != "auto":
                raise
            self._grouped_failed = True
            warnings.warn(
                f"grouped_mm MoE backend failed ({str(e).splitlines()[0]}); "
                "using the per-expert loop from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            y = dispatch(x, r.expert_idx, r.gate, r.counts, self.experts, "loop")
        return y.view(shape)

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, n_primary={self.n_primary}, top_k={self.top_k}, "
            f"router_noise_std={self.router_noise_std}, backend={self.backend!r}"
        )
