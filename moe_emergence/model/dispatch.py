"""Sort-based dispatch: tokens to experts and back, without per-token Python work.

The N*k token-expert assignments are stably sorted by expert, so each expert
reads one contiguous slice of the permuted activations. Two backends compute
the experts on those slices:

- `loop`: a Python loop over the E expert modules (E GEMM pairs). Fastest on
  CPU, where a host read of the per-expert counts costs nothing.
- `grouped`: one `grouped_mm` per projection over the stacked expert weights,
  with device-side offsets, so no host sync. For CUDA with bf16 (autocast).

The permutations are custom autograd functions whose backward is a gather by
the inverse permutation: no zero-filled gradient buffers and no `index_add_`
(atomics, nondeterministic on CUDA); top-k sums each token's k rows in a fixed
order. For top-1 the gate's forward value is exactly 1 (the router's
straight-through gate), so the combine skips the multiply and only computes
the gate's gradient <dL/dy, y>.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

_GROUPED_MM = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)

BACKENDS = ("auto", "loop", "grouped")


class _GatherRows(torch.autograd.Function):
    """x_sorted = x[src], where each of the N rows of x appears k times in src.

    Backward: the rows' gradients in assignment order (gather by `inv`), summed
    over each token's k assignments.
    """

    @staticmethod
    def forward(ctx, x: Tensor, src: Tensor, inv: Tensor, k: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv)
        ctx.k = k
        return x.index_select(0, src)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (inv,) = ctx.saved_tensors
        gx = g.index_select(0, inv)
        if ctx.k > 1:
            gx = gx.view(-1, ctx.k, gx.shape[-1]).sum(1)
        return gx, None, None, None


class _Combine(torch.autograd.Function):
    """out[t] = sum_j gate[t, j] * y_sorted[inv[t*k + j]].

    With `unit_gate` (top-1: the straight-through gate is exactly 1 in the
    forward) the multiply is skipped; the gate still gets its gradient <g, y>.
    """

    @staticmethod
    def forward(ctx, y_sorted: Tensor, gate: Tensor, perm: Tensor, inv: Tensor, unit_gate: bool) -> Tensor:  # type: ignore[override]
        n, k = gate.shape
        y = y_sorted.index_select(0, inv)  # [N*k, d], assignment order
        ctx.unit_gate = unit_gate
        ctx.gate_dtype = gate.dtype
        if unit_gate:
            ctx.save_for_backward(perm, y)
            return y
        yk = y.view(n, k, -1)
        out = torch.bmm(gate.to(y.dtype).unsqueeze(1), yk).squeeze(1)
        ctx.save_for_backward(perm, yk, gate)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        g = g.contiguous()
        if ctx.unit_gate:
            perm, y = ctx.saved_tensors
            ggate = None
            if ctx.needs_input_grad[1]:
                ggate = (g * y).sum(-1, keepdim=True, dtype=torch.float32).to(ctx.gate_dtype)
            return g.index_select(0, perm), ggate, None, None, None
        perm, yk, gate = ctx.saved_tensors
        ggate = None
        if ctx.needs_input_grad[1]:
            ggate = torch.bmm(yk, g.unsqueeze(-1)).squeeze(-1).to(ctx.gate_dtype)
        gyk = gate.to(g.dtype).unsqueeze(-1) * g.unsqueeze(1)  # [N, k, d]
        return gyk.view(-1, g.shape[-1]).index_select(0, perm), ggate, None, None, None


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: grouped_mm's backward
    rejects 0-stride gradients such as those of `y.sum()`."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        return g.contiguous()


def sort_assignments(expert_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stable sort of the flattened [N, k] assignments by expert.

    Returns (perm, inv, sorted_experts): sorted slot s holds assignment perm[s]
    (token perm[s] // k); assignment a sits in sorted slot inv[a].
    """
    flat = expert_idx.reshape(-1)
    sorted_experts, perm = torch.sort(flat, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return perm, inv, sorted_experts


def grouped_mm_available() -> bool:
    return _GROUPED_MM is not None


def _experts_loop(x_sorted: Tensor, counts: Tensor, experts: Sequence[nn.Module]) -> Tensor:
    sizes = counts.tolist()  # a host read: free on CPU, one sync per layer on CUDA
    # Every expert runs, on an empty slice if unrouted, so every expert parameter
    # gets a gradient (zeros when unused), as with the grouped backend and DDP.
    outs = [ex(xs) for ex, xs in zip(experts, x_sorted.split(sizes), strict=True)]
    return torch.cat(outs)


def _experts_grouped(
    x_sorted: Tensor, counts: Tensor, sorted_experts: Tensor, experts: Sequence[nn.Module]
) -> Tensor:
    # GPT-2's Conv1D stores weight as [in, out], which is the [E, K, N] layout grouped_mm wants.
    dtype = _compute_dtype(x_sorted)
    first = experts[0]
    w1 = torch.stack([e.c_fc.weight for e in experts]).to(dtype)  # [E, d, h]
    b1 = torch.stack([e.c_fc.bias for e in experts]).to(dtype)  # [E, h]
    w2 = torch.stack([e.c_proj.weight for e in experts]).to(dtype)  # [E, h, d]
    b2 = torch.stack([e.c_proj.bias for e in experts]).to(dtype)  # [E, d]
    offs = torch.cumsum(counts, 0).to(torch.int32)
    with torch.autocast(device_type=x_sorted.device.type, enabled=False):
        h = _GROUPED_MM(_ContiguousGrad.apply(x_sorted.to(dtype)), w1, offs=offs)
        h = h + b1.index_select(0, sorted_experts)
        h = first.act(h)
        y = _GROUPED_MM(_ContiguousGrad.apply(h), w2, offs=offs)
        y = y + b2.index_select(0, sorted_experts)
    return first.dropout(y)


def _compute_dtype(x: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


_PROBED: dict[tuple[str, torch.dtype], bool] = {}


def _grouped_mm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Forward and backward of a tiny grouped_mm on this device and dtype, once."""
    key = (str(device), dtype)
    if key not in _PROBED:
        try:
            a = torch.randn(24, 16, device=device, dtype=dtype, requires_grad=True)
            b = torch.randn(2, 16, 8, device=device, dtype=dtype, requires_grad=True)
            offs = torch.tensor([8, 24], device=device, dtype=torch.int32)
            with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
                out = _GROUPED_MM(a, b, offs=offs)
                (out * torch.randn_like(out)).sum().backward()
            _PROBED[key] = bool(torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all())
        except Exception:  # any refusal (missing kernel, dtype, arch) means "use the loop"
            _PROBED[key] = False
    return _PROBED[key]


def choose_backend(x: Tensor, experts: Sequence[nn.Module]) -> str:
    """`grouped` on CUDA when grouped_mm exists, the compute dtype is bf16 (its fast
    path), the shapes meet its 16-byte stride alignment and a probe passes;
    `loop` otherwise (always on CPU, where the loop measured faster)."""
    if not (x.is_cuda and grouped_mm_available()):
        return "loop"
    dtype = _compute_dtype(x)
    d, h = experts[0].c_fc.weight.shape
    if dtype != torch.bfloat16 or d % 8 or h % 8:
        return "loop"
    return "grouped" if _grouped_mm_works(x.device, dtype) else "loop"


def dispatch(
    x: Tensor,
    expert_idx: Tensor,
    gate: Tensor,
    counts: Tensor,
    experts: Sequence[nn.Module],
    backend: str = "loop",
) -> Tensor:
    """y [N, d] = sum_j gate[:, j] * experts[expert_idx[:, j]](x), by sort and slices.

    `counts` [E] are the assignments per expert (from the router). `backend` is
    `loop` or `grouped` (see `choose_backend`).
    """
    n, k = expert_idx.shape
    perm, inv, sorted_experts = sort_assignments(expert_idx)
    src = perm // k if k > 1 else perm
    x_sorted = _GatherRows.apply(x, src, inv, k)  # [N*k, d], grouped by expert
    if backend == "grouped":
        y_sorted = _experts_grouped(x_sorted, counts, sorted_experts, experts)
    elif backend == "loop":
        y_sorted = _experts_loop(x_sorted, counts, experts)
    else:
        raise ValueError(f"unknown MoE dispatch backend {backend!r}; use one of {BACKENDS}")
    return _Combine.apply(y_sorted, gate, perm, inv, k == 1)
