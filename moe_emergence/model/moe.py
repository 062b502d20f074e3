"""The MoE layer that takes the place of a GPT-2 block's `mlp`.

It sees exactly what GPT-2 feeds its MLP (the block's `ln_2` output) and
returns a tensor of the same shape, so the block's own forward (attention,
norms, residuals, masking, caching) runs unchanged around it.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from moe_emergence.model import dispatch as dsp
from moe_emergence.model.router import Router, RouterOutput

# GPT-2 MLP parameter -> the stacked parameter holding it (expert e's is slice e)
STACKED = {"c_fc.weight": "w_fc", "c_fc.bias": "b_fc", "c_proj.weight": "w_proj", "c_proj.bias": "b_proj"}


class GroupedExperts(nn.Module):
    """E GPT-2 MLPs (Conv1D -> act -> Conv1D -> dropout) as stacked weights.

    Expert e's `c_fc.weight` [d, h] (Conv1D stores [in, out]) is `w_fc[e]`, and so
    on by `STACKED`. `act` and `dropout` are the dense block's own modules.
    """

    def __init__(self, n_experts: int, d: int, h: int, act: nn.Module, dropout: nn.Module) -> None:
        super().__init__()
        self.w_fc = nn.Parameter(torch.zeros(n_experts, d, h))
        self.b_fc = nn.Parameter(torch.zeros(n_experts, h))
        self.w_proj = nn.Parameter(torch.zeros(n_experts, h, d))
        self.b_proj = nn.Parameter(torch.zeros(n_experts, d))
        self.act = act
        self.dropout = dropout

    @classmethod
    def from_mlp(cls, mlp: nn.Module, n_experts: int) -> GroupedExperts:
        """E exact copies of a `GPT2MLP`, on its device and dtype."""
        d, h = mlp.c_fc.weight.shape
        ex = cls(n_experts, d, h, copy.deepcopy(mlp.act), copy.deepcopy(mlp.dropout))
        ex.to(mlp.c_fc.weight)
        with torch.no_grad():
            for name, stacked in STACKED.items():
                getattr(ex, stacked).copy_(mlp.get_parameter(name).unsqueeze(0))
        return ex

    @property
    def n_experts(self) -> int:
        return self.w_fc.shape[0]

    def forward(self, x: Tensor, counts: Tensor, sorted_experts: Tensor, path: str) -> Tensor:
        """x [M, d] sorted by expert (counts [E] rows each) -> [M, d] in the same order."""
        dtype = dsp.compute_dtype(x)  # autocast is off inside: both paths cast once, here
        w = (self.w_fc.to(dtype), self.b_fc.to(dtype), self.w_proj.to(dtype), self.b_proj.to(dtype))
        mlp = dsp.grouped_mlp if path == "grouped" else dsp.loop_mlp
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = mlp(x.to(dtype), counts, sorted_experts, w, self.act)
        return self.dropout(y)


class MoELayer(nn.Module):
    """Top-k mixture of GPT-2 MLP experts with a linear fp32 router.

    n_primary: experts routable from the start; the rest are ghost experts,
        dormant (masked out of routing, zero load) until `active[e]` is set (ghost.py).

    Attributes the trainer and analysis use:
        routing: the `RouterOutput` of the latest forward (graph kept for the aux
            losses): this layer's only side channel, read through `gpt2.latest_routing`.
        noise_scale: multiplies `router_noise_std`; the trainer anneals it to 0.
        active: bool buffer [E], experts that may be routed.
    """

    def __init__(
        self,
        experts: GroupedExperts,
        d_model: int,
        top_k: int = 1,
        router_noise_std: float = 0.0,
        n_primary: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        n = experts.n_experts
        n_primary = n if n_primary is None else n_primary
        if not 1 <= n_primary <= n:
            raise ValueError(f"n_primary must be in 1..{n} (the number of experts), got {n_primary}")
        if not 1 <= top_k <= n_primary:
            raise ValueError(f"top_k must be in 1..{n_primary} (model.n_experts), got {top_k}")
        if backend not in dsp.PATHS:
            raise ValueError(f"backend must be one of {dsp.PATHS}, got {backend!r}")
        self.experts = experts
        self.router = Router(d_model, n)
        self.top_k = top_k
        self.router_noise_std = float(router_noise_std)
        self.noise_scale = 1.0
        self.n_primary = n_primary
        self.backend = backend
        self.register_buffer("active", torch.arange(n) < n_primary)
        self.routing: RouterOutput | None = None

    @property
    def n_experts(self) -> int:
        """All experts, ghosts included."""
        return self.experts.n_experts

    def forward(self, hidden: Tensor) -> Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])  # [N, d]; may be a non-contiguous view upstream
        noise = self.router_noise_std * self.noise_scale if self.training else 0.0
        # Masking costs N*E; skip it when the layer has no ghost experts at all.
        active = self.active if self.n_primary < self.n_experts else None
        self.routing = r = self.router(x, self.top_k, noise, active)
        path = self.backend
        if path == "auto":
            d, h = self.experts.w_fc.shape[1:]
            # grouped_mm needs 16-byte aligned strides: bf16 rows of a multiple of 8
            path = "loop" if d % 8 or h % 8 else dsp.choose_path(x.device, dsp.compute_dtype(x))
        return dsp.dispatch(x, r, self.experts, path).view(shape)

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, n_primary={self.n_primary}, top_k={self.top_k}, "
            f"router_noise_std={self.router_noise_std}, backend={self.backend!r}"
        )
