"""Router outputs and modes of the MoE layer."""

from __future__ import annotations

import pytest
import torch

from moe_emergence.model.router import router_entropy
from tests.model.moe_testing import make_layer


def test_eval_mode_no_noise_and_unit_gate():
    layer = make_layer(noise=1.0).eval()
    x = torch.randn(2, 8, 16)
    y1 = layer(x)
    r = layer.routing
    assert torch.equal(r.probs, r.logits.softmax(-1))
    assert torch.equal(r.gate, torch.ones(16, 1))
    assert torch.equal(y1, layer(x))  # deterministic
    assert torch.equal(r.expert_idx, layer.routing.expert_idx)


def test_training_noise_changes_selection_probs_only():
    layer = make_layer(noise=1.0).train()
    x = torch.randn(64, 16)
    layer(x)
    a = layer.routing
    layer(x)
    b = layer.routing
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert not torch.equal(a.probs, b.probs)
    assert torch.equal(a.expert_idx, a.probs.argmax(-1, keepdim=True))
    # straight-through gate: forward exactly 1, but attached to the graph
    assert torch.equal(a.gate.detach(), torch.ones(64, 1)) and a.gate.requires_grad
    layer.noise_scale = 0.0  # annealed away
    layer(x)
    assert torch.equal(layer.routing.probs, layer.routing.logits.softmax(-1))


def test_routing_fields_consistent():
    layer = make_layer(n_experts=5, top_k=2).train()
    x = torch.randn(3, 7, 16)
    layer(x)
    r = layer.routing
    n = 21
    assert r.expert_idx.shape == (n, 2) and r.expert_idx.dtype == torch.long
    assert r.logits.shape == r.probs.shape == (n, 5)
    assert r.logits.dtype == torch.float32
    p = r.logits.softmax(-1)
    torch.testing.assert_close(router_entropy(r.logits), -(p * p.log()).sum(-1))
    assert torch.equal(r.expert_idx, r.probs.topk(2, -1).indices)
    torch.testing.assert_close(r.gate.sum(-1), torch.ones(n))  # top-2 renormalized
    assert torch.equal(r.counts, torch.bincount(r.expert_idx.flatten(), minlength=5))
    assert int(r.counts.sum()) == n * 2


def test_rejects_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        make_layer(n_experts=2, top_k=3)


def test_router_fp32_under_autocast():
    layer = make_layer().train()
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert layer.routing.logits.dtype == torch.float32
