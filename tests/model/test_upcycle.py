"""Upcycling keeps the dense function; the straight-through gate feeds the router."""

from __future__ import annotations

import copy

import torch
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from moe_emergence.model.gpt2 import mlp_inputs, moe_layers, to_moe
from moe_emergence.model.moe import MoELayer


def test_swaps_only_chosen_mlps(dense, mp_factory):
    moe = to_moe(copy.deepcopy(dense), mp_factory(moe_layers=[1]), seed=0)
    assert isinstance(moe.transformer.h[0].mlp, GPT2MLP)
    layer = moe.transformer.h[1].mlp
    assert isinstance(layer, MoELayer) and [i for i, _ in moe_layers(moe)] == [1]
    # experts are stacked copies of the dense MLP (Conv1D's [in, out] layout), not shared storage
    mlp = dense.transformer.h[1].mlp
    assert layer.experts.w_fc.shape == (4, *mlp.c_fc.weight.shape)
    assert torch.equal(layer.experts.w_proj[3], mlp.c_proj.weight)
    assert layer.experts.w_fc.data_ptr() != mlp.c_fc.weight.data_ptr()
    assert type(layer.experts.act) is type(mlp.act)
    assert layer.router.weight.dtype == torch.float32 and not hasattr(layer.router, "bias")


def test_zero_noise_logits_equal_dense(dense, mp_factory, tokens):
    moe = to_moe(copy.deepcopy(dense), mp_factory(upcycle_noise=0.0), seed=0)
    for train in (False, True):
        dense.train(train)
        moe.train(train)
        ref = dense(tokens).logits
        out = moe(tokens).logits
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_small_noise_layer_outputs_within_two_percent(dense, mp_factory):
    moe = to_moe(copy.deepcopy(dense), mp_factory(upcycle_noise=1e-3), seed=0)
    x = torch.randn(4, 16, 32)
    for i, layer in moe_layers(moe):
        layer.eval()
        ref = dense.transformer.h[i].mlp(x)
        rel = ((layer(x) - ref).norm() / ref.norm()).item()
        assert 0 < rel < 0.02, (i, rel)
        # every expert differs from the others (symmetry broken)
        w = layer.experts.w_fc
        assert not torch.equal(w[0], w[1])


def test_scratch_experts_are_fresh(dense, mp_factory):
    moe = to_moe(copy.deepcopy(dense), mp_factory(moe_init="scratch"), seed=0)
    layer = moe.transformer.h[0].mlp
    assert not torch.equal(layer.experts.w_fc[0], dense.transformer.h[0].mlp.c_fc.weight)
    assert abs(layer.experts.w_fc[0].std().item() - 0.02) < 0.005


def test_same_seed_same_model(dense, mp_factory):
    a = to_moe(copy.deepcopy(dense), mp_factory(upcycle_noise=1e-2), seed=3)
    b = to_moe(copy.deepcopy(dense), mp_factory(upcycle_noise=1e-2), seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_router_gets_gradient_from_lm_loss_alone_at_top1(dense, mp_factory, tokens):
    moe = to_moe(copy.deepcopy(dense), mp_factory(top_k=1), seed=0).train()
    loss = moe(tokens, labels=tokens).loss  # LM loss only, no aux losses
    loss.backward()
    for i, layer in moe_layers(moe):
        g = layer.router.weight.grad
        assert g is not None and g.abs().sum().item() > 0, i


def test_bad_moe_layers_named(dense, mp_factory):
    import pytest

    with pytest.raises(ValueError, match="model.moe_layers"):
        to_moe(copy.deepcopy(dense), mp_factory(moe_layers=[5]), seed=0)


def _skewed_dense(dense):
    """The tiny model with a large common component in every MLP input (as GPT-2's ln_2 bias gives)."""
    m = copy.deepcopy(dense)
    with torch.no_grad():
        for block in m.transformer.h:
            block.ln_2.bias.copy_(torch.randn(block.ln_2.bias.shape, generator=torch.Generator().manual_seed(5)) * 6)
    return m


def _loads(model, ids):
    from moe_emergence.model.gpt2 import mlp_inputs

    out = {}
    for i, layer in moe_layers(model):
        h = mlp_inputs(model, ids, [i])[i]
        out[i] = torch.bincount(layer.router(h, 1).expert_idx[:, 0], minlength=layer.n_experts).double() / len(h)
    return out


def test_centered_router_starts_balanced_where_a_random_one_does_not(dense, mp_factory):
    """The common component of the MLP inputs picks the winner of a random router for almost every
    token; the centered init routes by what differs between tokens, whatever the init seed."""
    ids = torch.randint(0, 97, (64, 16), generator=torch.Generator().manual_seed(2))
    calib = torch.randint(0, 97, (32, 16), generator=torch.Generator().manual_seed(3))
    skewed = _skewed_dense(dense)
    for seed in range(3):
        plain = to_moe(copy.deepcopy(skewed), mp_factory(router_init="normal"), seed=seed)
        centered = to_moe(copy.deepcopy(skewed), mp_factory(router_init="centered"), seed=seed,
                          calibration=calib)
        assert max(float(f.max()) for f in _loads(plain, ids).values()) > 0.6
        for f in _loads(centered, ids).values():
            assert float(f.max()) < 0.45 and int((f > 0).sum()) == 4
        # the rows keep the random init's spread; only the common offset is gone
        for (i, a), (_, b) in zip(moe_layers(plain), moe_layers(centered), strict=True):
            h = mlp_inputs(centered, calib, [i])[i]
            assert abs(float((h.mean(0) @ b.router.weight.detach().t()).abs().max())) < 1e-4
            assert not torch.equal(a.router.weight, b.router.weight)


def test_centered_router_needs_calibration(dense, mp_factory):
    import pytest

    with pytest.raises(ValueError, match="calibration"):
        to_moe(copy.deepcopy(dense), mp_factory(router_init="centered"), seed=0)
