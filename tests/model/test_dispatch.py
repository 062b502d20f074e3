"""Sort-based dispatch equals running every expert on every token."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_emergence.model import dispatch as dsp
from tests.model.moe_testing import make_layer


def oracle(layer, x):
    """Every expert on every token, combined by one-hot selection."""
    r = layer.router(x, layer.top_k, 0.0, None)
    all_out = torch.stack([expert(layer, e, x) for e in range(layer.n_experts)], 1)  # [N, E, d]
    sel = all_out.gather(1, r.expert_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [N, k, d]
    return (r.gate.unsqueeze(-1) * sel).sum(1)


def expert(layer, e, x):
    """Expert e as a GPT-2 MLP would compute it (Conv1D is addmm(bias, x, weight))."""
    ex = layer.experts
    h = ex.act(torch.addmm(ex.b_fc[e], x, ex.w_fc[e]))
    return ex.dropout(torch.addmm(ex.b_proj[e], h, ex.w_proj[e]))


def grads(layer, x, y, g):
    layer.zero_grad(set_to_none=True)
    x.grad = None
    (y * g).sum().backward()
    out = {"x": x.grad.clone()}
    for name, p in layer.named_parameters():
        out[name] = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
    return out


def check(layer, n, backend, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 16, requires_grad=True)
    g = torch.randn(n, 16)  # a real, non-expanded upstream gradient
    layer.train()
    layer.backend = backend
    y = layer(x)
    got = grads(layer, x, y, g)
    ref_y = oracle(layer, x)
    ref = grads(layer, x, ref_y, g)
    torch.testing.assert_close(y, ref_y, atol=1e-5, rtol=1e-5)
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4, msg=k)
    if layer.n_experts > 1:
        assert got["router.weight"].abs().sum() > 0


BACKENDS = ["loop"] + (["grouped"] if dsp.GROUPED_MM is not None else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_dispatch_matches_oracle(backend, top_k):
    check(make_layer(n_experts=4, top_k=top_k), 37, backend)


def test_unrouted_expert_gets_zero_gradient():
    layer = make_layer(n_experts=4).train()
    with torch.no_grad():
        layer.router.weight[3] = -100.0  # never chosen for positive inputs
    x = (torch.rand(20, 16) + 0.1).requires_grad_()
    (layer(x) * torch.randn(20, 16)).sum().backward()
    assert int(layer.routing.counts[3]) == 0
    for p in layer.experts.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad[3]) == 0
        assert torch.count_nonzero(p.grad[:3]) > 0


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), n_experts=st.integers(1, 6), k=st.integers(1, 3), seed=st.integers(0, 99))
def test_dispatch_matches_oracle_property(n, n_experts, k, seed):
    k = min(k, n_experts)
    check(make_layer(n_experts=n_experts, top_k=k, seed=seed), n, "loop", seed)


def test_sort_assignments_inverse():
    idx = torch.tensor([[2, 0], [1, 2], [0, 1]])
    perm, inv, sorted_e = dsp.sort_assignments(idx)
    assert sorted_e.tolist() == [0, 0, 1, 1, 2, 2]
    assert perm.tolist() == [1, 4, 2, 5, 0, 3]  # stable: ties keep assignment order
    assert torch.equal(perm[inv], torch.arange(6))


def test_auto_path_is_the_loop_on_cpu():
    assert dsp.choose_path(torch.device("cpu"), torch.float32) == "loop"
    assert dsp.choose_path(torch.device("cpu"), torch.bfloat16) == "loop"


@pytest.mark.skipif(dsp.GROUPED_MM is None, reason="no grouped_mm in this torch")
def test_grouped_backend_bf16_autocast_close_to_loop():
    layer = make_layer(n_experts=4, top_k=2).train()
    x = torch.randn(64, 16)
    outs = {}
    for backend in ("loop", "grouped"):
        layer.backend = backend
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[backend] = layer(x).float()
    torch.testing.assert_close(outs["grouped"], outs["loop"], atol=3e-2, rtol=3e-2)
