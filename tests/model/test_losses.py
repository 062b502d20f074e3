"""Load-balancing and z losses on hand-computed cases, and their per-step accumulation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from moe_emergence.model.gpt2 import latest_routing, moe_layers, to_moe
from moe_emergence.model.losses import AuxLosses, load_balance_loss, z_loss


def test_balanced_routing_gives_one():
    probs = torch.full((8, 4), 0.25)
    idx = torch.arange(8).remainder(4).unsqueeze(1)
    assert load_balance_loss(probs, idx, 4).item() == pytest.approx(1.0)


def test_collapse_onto_confident_expert_approaches_e():
    for eps, expect in [(1e-2, 4 * 0.97), (1e-6, 4.0)]:  # float32: 4 * (1 - 3e-6)
        probs = torch.tensor([[1 - 3 * eps, eps, eps, eps]]).repeat(16, 1)
        idx = torch.zeros(16, 1, dtype=torch.long)
        assert load_balance_loss(probs, idx, 4).item() == pytest.approx(expect, abs=1e-4)


def test_hand_computed_value_and_gradient_only_through_p():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1]], requires_grad=True)
    idx = torch.tensor([[0], [1]])
    lb = load_balance_loss(probs, idx, 4)
    # f = [.5, .5, 0, 0], P = [.4, .35, .15, .1] -> 4 * (.2 + .175)
    assert lb.item() == pytest.approx(1.5)
    lb.backward()
    # d/dprobs[t, i] = E * f_i / N
    torch.testing.assert_close(probs.grad, torch.tensor([[1.0, 1.0, 0, 0]] * 2))


def test_top2_counts_fraction_of_all_assignments():
    probs = torch.full((2, 4), 0.25)
    idx = torch.tensor([[0, 1], [2, 3]])
    assert load_balance_loss(probs, idx, 4).item() == pytest.approx(1.0)
    idx = torch.tensor([[0, 1], [0, 1]])  # f = [.5, .5, 0, 0]
    assert load_balance_loss(probs, idx, 4).item() == pytest.approx(1.0)
    probs = torch.tensor([[0.5, 0.5, 0, 0]] * 2)
    assert load_balance_loss(probs, idx, 4).item() == pytest.approx(2.0)


def test_counts_override_f():
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    idx = torch.tensor([[0], [0]])
    counts = torch.tensor([1, 3])
    assert load_balance_loss(probs, idx, 2, counts=counts).item() == pytest.approx(1.0)


def test_z_loss_value():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expect = (math.log(2) ** 2 + math.log(4) ** 2) / 2
    assert z_loss(logits).item() == pytest.approx(expect, rel=1e-6)
    # dormant experts at -inf drop out
    masked = torch.tensor([[0.0, 0.0, float("-inf")]])
    assert z_loss(masked).item() == pytest.approx(math.log(2) ** 2, rel=1e-6)


def _forward(model, seed):
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(seed))
    return model(x)


@pytest.mark.parametrize("scope", ["step", "micro"])
def test_aux_losses_scope(dense, mp_factory, scope):
    model = to_moe(copy.deepcopy(dense), mp_factory(), seed=0).train()
    with torch.no_grad():
        for _, layer in moe_layers(model):
            layer.router.weight.normal_(0, 1.0)  # uneven loads, so the scopes differ
    aux = AuxLosses(model, scope=scope, n_experts=4)
    aux.start_step()
    _forward(model, 0)
    aux.compute(latest_routing(model))
    first = {i: layer.routing.counts.clone() for i, layer in moe_layers(model)}
    _forward(model, 1)
    lb, z = aux.compute(latest_routing(model))
    lbs, zs = [], []
    for i, layer in moe_layers(model):
        r = layer.routing
        counts = first[i] + r.counts if scope == "step" else r.counts
        lbs.append(load_balance_loss(r.probs, r.expert_idx, 4, counts=counts))
        zs.append(z_loss(r.logits))
    torch.testing.assert_close(lb, torch.stack(lbs).mean())
    torch.testing.assert_close(z, torch.stack(zs).mean())
    assert lb.requires_grad and z.requires_grad
    for i, layer in moe_layers(model):
        assert torch.equal(aux.step_counts()[i], first[i] + layer.routing.counts)
        assert 0 < aux.step_entropy()[i] <= math.log(4) + 1e-6
    aux.start_step()
    assert aux.step_counts() == {}


def test_aux_losses_checks_expert_count(dense, mp_factory):
    model = to_moe(copy.deepcopy(dense), mp_factory(), seed=0)
    with pytest.raises(ValueError, match="n_experts"):
        AuxLosses(model, n_experts=8)
    with pytest.raises(ValueError, match="lb_scope"):
        AuxLosses(model, scope="global")
