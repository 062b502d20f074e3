"""Ghost experts: no load while dormant; saturation wakes one as a copy that splits the load."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from moe_emergence.model.ghost import GhostController
from moe_emergence.model.gpt2 import moe_layers, to_moe
from moe_emergence.model.router import router_entropy


@pytest.fixture
def ghost_model(dense, mp_factory):
    mp = mp_factory(ghost_experts=2, router_noise_std=1.0, ghost_threshold=0.5, ghost_patience=2)
    return to_moe(copy.deepcopy(dense), mp, seed=0), mp


def test_dormant_experts_get_no_load_or_gradient(ghost_model, tokens):
    model, _ = ghost_model
    model.train()
    with torch.no_grad():
        for _, layer in moe_layers(model):
            layer.router.weight[4:] += 10.0  # would win every token if routable
    model(tokens, labels=tokens).loss.backward()
    for _, layer in moe_layers(model):
        r = layer.routing
        assert layer.active.tolist() == [True] * 4 + [False] * 2
        assert r.counts[4:].sum() == 0 and r.counts[:4].sum() == tokens.numel()
        assert torch.all(r.probs[:, 4:] == 0) and torch.all(r.logits[:, 4:] == float("-inf"))
        assert torch.isfinite(router_entropy(r.logits)).all()
        for p in layer.experts.parameters():
            assert torch.count_nonzero(p.grad[4:]) == 0


def test_forced_saturation_wakes_one(ghost_model, tokens):
    model, mp = ghost_model
    ctrl = GhostController.from_params(model, mp, seed=0)
    layer = dict(moe_layers(model))[1]
    w_before = layer.router.weight.detach().clone()
    saturated = {0: [0.25, 0.25, 0.25, 0.25, 0, 0], 1: [0.1, 0.8, 0.05, 0.05, 0, 0]}
    assert ctrl.observe(10, saturated) == []  # patience 2: one check is not enough
    events = ctrl.observe(20, saturated)
    assert len(events) == 1
    ev = events[0]
    assert (ev.step, ev.layer, ev.relieved, ev.woken) == (20, 1, 1, 4)
    assert ev.top_share == pytest.approx(0.8)
    assert layer.active.tolist() == [True] * 5 + [False]
    assert dict(moe_layers(model))[0].active.tolist() == [True] * 4 + [False] * 2
    # a copy of the saturated expert (upcycle_noise 0 here: exact), router rows split around it
    for p in layer.experts.parameters():
        assert torch.equal(p[1], p[4])
    w = layer.router.weight.detach()
    torch.testing.assert_close(w[1] + w[4], 2 * w_before[1])
    assert not torch.equal(w[1], w[4])
    # the streak restarts: the next saturated check alone does not wake the last ghost
    assert ctrl.observe(30, saturated) == []
    assert [e.woken for e in ctrl.observe(40, saturated)] == [5]
    assert ctrl.observe(50, saturated) == [] and ctrl.observe(60, saturated) == []  # none left


def test_woken_expert_takes_part_of_the_load(ghost_model):
    model, mp = ghost_model
    model.eval()
    ctrl = GhostController(model, threshold=0.5, patience=1, router_offset=0.5)
    layer = dict(moe_layers(model))[1]
    with torch.no_grad():
        layer.router.weight[0] += 5.0  # expert 0 takes (nearly) everything
    x = torch.randn(400, 32) + 1.0
    layer(x)
    before = layer.routing.counts.clone()
    assert before[0] > 300
    ctrl.observe(1, {1: before})
    layer(x)
    counts = layer.routing.counts
    assert counts[4] > 0 and counts[0] > 0 and counts[5] == 0
    assert counts[0] + counts[4] == before[0]  # the two split expert 0's tokens


def test_streak_resets_below_threshold(ghost_model):
    model, mp = ghost_model
    ctrl = GhostController.from_params(model, mp, seed=0)
    hot, calm = {1: [0.9, 0.1, 0, 0]}, {1: [0.4, 0.3, 0.2, 0.1]}
    assert ctrl.observe(1, hot) == [] and ctrl.observe(2, calm) == [] and ctrl.observe(3, hot) == []
    assert len(ctrl.observe(4, hot)) == 1


def test_optimizer_state_and_controller_state(ghost_model, tokens):
    model, mp = ghost_model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(tokens, labels=tokens).loss.backward()
    opt.step()
    ctrl = GhostController(model, threshold=0.5, patience=1)
    ev = ctrl.wake(5, 0, relieved=2)
    ctrl.copy_optimizer_state(opt, ev)
    layer = dict(moe_layers(model))[0]
    st = opt.state[layer.experts.w_fc]
    assert torch.equal(st["exp_avg"][2], st["exp_avg"][ev.woken]) and st["exp_avg"][2].abs().sum() > 0
    rs = opt.state[layer.router.weight]
    assert torch.equal(rs["exp_avg_sq"][ev.woken], rs["exp_avg_sq"][2])
    state = json.loads(json.dumps(ctrl.state_dict()))  # plain JSON
    other = GhostController(model, threshold=0.5, patience=1, seed=123)
    other.load_state_dict(state)
    assert other.events == ctrl.events and torch.equal(other.gen.get_state(), ctrl.gen.get_state())
