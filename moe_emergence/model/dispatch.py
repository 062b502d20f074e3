"""Sort-based dispatch over stacked expert weights: tokens to experts and back.

The N*k assignments are stably sorted by expert, so expert e reads one
contiguous group of `counts[e]` rows. Each projection of the experts' MLP is a
grouped linear over those groups, by one of two paths over the same stacked
[E, in, out] weights (GPT-2's Conv1D layout, which is grouped_mm's): `loop`, an
addmm per expert (CPU: reading the counts is free there, and it measured faster
than the CPU grouped_mm), or `grouped`, grouped_mm with device-side offsets (CUDA,
bf16). `choose_path` decides once per (device, dtype); no runtime fallback.
The permutations are index_selects by a permutation, whose backward adds one row
per destination: exact and deterministic on every device (top-k first repeats
each token's row k times, which backward sums in a fixed order).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moe_emergence.model.router import RouterOutput

GROUPED_MM = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)

PATHS = ("auto", "loop", "grouped")
Weights = tuple[Tensor, Tensor, Tensor, Tensor]  # w_fc [E, d, h], b_fc [E, h], w_proj [E, h, d], b_proj [E, d]


class _LoopLinear(torch.autograd.Function):
    """y[group e] = x[group e] @ w[e] + b[e], one addmm per expert, groups of `sizes` rows.

    Plain autograd over the slices `w[e]` would give each expert's gradient a full
    [E, in, out] zero buffer, or with `unbind` a stack copy (75 MB per weight at
    GPT-2 small sizes: 30-40 ms on the CPU, against ~150 ms for the dense MLP's
    step at 1,024 tokens). This backward writes each expert's gradient into its
    slice of one buffer, zeros for an expert without tokens (DDP sees them all).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.sizes = sizes
        y = x.new_empty(x.shape[0], w.shape[-1])
        for e, (xs, ys) in enumerate(zip(x.split(sizes), y.split(sizes), strict=True)):
            torch.addmm(b[e], xs, w[e], out=ys)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        gs = g.contiguous().split(ctx.sizes)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = g.new_empty(x.shape)
            for e, (ge, gxe) in enumerate(zip(gs, gx.split(ctx.sizes), strict=True)):
                torch.mm(ge, w[e].t(), out=gxe)
        if ctx.needs_input_grad[1]:
            gw = torch.empty_like(w)
            for e, (xs, ge) in enumerate(zip(x.split(ctx.sizes), gs, strict=True)):
                torch.mm(xs.t(), ge, out=gw[e])
        if ctx.needs_input_grad[2]:
            gb = torch.stack([ge.sum(0) for ge in gs])
        return gx, gw, gb, None


def loop_mlp(x: Tensor, counts: Tensor, sorted_experts: Tensor, w: Weights, act: nn.Module) -> Tensor:
    """The experts' MLP on x [M, d] sorted by expert, by per-expert GEMMs -> [M, d]."""
    sizes = counts.tolist()  # a host read: free on CPU, one sync per layer on CUDA
    h = act(_LoopLinear.apply(x, w[0], w[1], sizes))  # [M, h]
    return _LoopLinear.apply(h, w[2], w[3], sizes)


def grouped_mlp(x: Tensor, counts: Tensor, sorted_experts: Tensor, w: Weights, act: nn.Module) -> Tensor:
    """The same by grouped_mm: offsets stay on the device, biases gathered per row."""
    offs = torch.cumsum(counts, 0).to(torch.int32)  # [E] end row of each group
    h = act(GROUPED_MM(x, w[0], offs=offs) + w[1].index_select(0, sorted_experts))  # [M, h]
    return GROUPED_MM(h, w[2], offs=offs) + w[3].index_select(0, sorted_experts)


def compute_dtype(x: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


_CHOSEN: dict[tuple[str, torch.dtype], str] = {}


def choose_path(device: torch.device, dtype: torch.dtype) -> str:
    """`grouped` on CUDA in bf16 (grouped_mm's fast path) when a tiny forward and
    backward runs there; `loop` otherwise. Decided once per (device, dtype)."""
    key = (str(device), dtype)
    if key not in _CHOSEN:
        _CHOSEN[key] = "loop"
        if device.type == "cuda" and dtype == torch.bfloat16 and GROUPED_MM is not None:
            try:
                a = torch.randn(24, 16, device=device, dtype=dtype, requires_grad=True)
                b = torch.randn(2, 16, 8, device=device, dtype=dtype, requires_grad=True)
                offs = torch.tensor([8, 24], device=device, dtype=torch.int32)
                with torch.enable_grad(), torch.autocast(device_type="cuda", enabled=False):
                    GROUPED_MM(a, b, offs=offs).square().sum().backward()
                if torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all():
                    _CHOSEN[key] = "grouped"
            except Exception:  # any refusal (missing kernel, dtype, arch) means "use the loop"
                pass
    return _CHOSEN[key]


def sort_assignments(expert_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stable sort of the flattened [N, k] assignments by expert: (perm, inv, sorted_experts).

    Sorted slot s holds assignment perm[s] (token perm[s] // k); assignment a sits in slot inv[a].
    """
    sorted_experts, perm = torch.sort(expert_idx.reshape(-1), stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return perm, inv, sorted_experts


def dispatch(x: Tensor, r: RouterOutput, experts: nn.Module, path: str) -> Tensor:
    """y [N, d] = sum_j gate[:, j] * expert_{idx[:, j]}(x) for x [N, d], by sort and groups."""
    n, k = r.expert_idx.shape
    d = x.shape[-1]
    perm, inv, sorted_experts = sort_assignments(r.expert_idx)
    xk = x if k == 1 else x.unsqueeze(1).expand(n, k, d).reshape(n * k, d)  # [N*k, d]
    y = experts(xk.index_select(0, perm), r.counts, sorted_experts, path).index_select(0, inv)
    gate = r.gate.to(y.dtype)  # [N, k]; top-1's forward value is exactly 1 (straight-through)
    if k == 1:
        return y * gate
    return torch.bmm(gate.unsqueeze(1), y.view(n, k, d)).squeeze(1)
