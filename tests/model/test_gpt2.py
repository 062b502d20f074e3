"""Dense GPT-2 construction and loading; attention masking kept through the MoE swap."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2LMHeadModel

from moe_emergence.model import gpt2
from moe_emergence.model.gpt2 import load_pretrained, make_dense, to_moe
from tests.model.conftest import ARCH, VOCAB


def test_make_dense_shape_and_ties():
    m = make_dense(ARCH, vocab_size=VOCAB, seed=0)
    assert m.config.n_layer == 2 and m.config.resid_pdrop == 0.0 and m.config.attn_pdrop == 0.0
    assert m.config._attn_implementation == "sdpa"
    assert m.lm_head.weight is m.transformer.wte.weight
    again = make_dense(ARCH, vocab_size=VOCAB, seed=0)
    assert torch.equal(m.transformer.h[0].mlp.c_fc.weight, again.transformer.h[0].mlp.c_fc.weight)


def test_left_padded_batch_matches_unpadded(dense, mp_factory):
    model = to_moe(copy.deepcopy(dense), mp_factory(upcycle_noise=1e-2), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, VOCAB, (1, 12), generator=g)
    b = torch.randint(0, VOCAB, (1, 7), generator=g)
    pad = 5
    ids = torch.cat([a, torch.cat([torch.full((1, 5), pad), b], 1)])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, position_ids=pos).logits
        ref_a = model(a).logits
        ref_b = model(b).logits
    torch.testing.assert_close(out[0:1], ref_a, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1:, pad:], ref_b, atol=1e-4, rtol=0)


def test_load_pretrained_local_dir(dense, tokens, tmp_path):
    dense.save_pretrained(tmp_path / "gpt2-tiny")
    m = load_pretrained(str(tmp_path / "gpt2-tiny"))
    assert isinstance(m, GPT2LMHeadModel)
    dense.eval()
    m.eval()
    torch.testing.assert_close(m(tokens).logits, dense(tokens).logits, rtol=0, atol=0)
    m2 = load_pretrained(str(tmp_path / "gpt2-tiny"), dropout=0.0)
    assert m2.config.resid_pdrop == 0.0


@pytest.mark.parametrize("reachable", [True, False])
def test_load_pretrained_offline_is_a_clear_error(monkeypatch, reachable):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs["local_files_only"])
        assert kwargs["trust_remote_code"] is False
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(gpt2.GPT2LMHeadModel, "from_pretrained", refuse)
    monkeypatch.setattr(gpt2, "hub_unreachable", lambda: None if reachable else "no DNS")
    with pytest.raises(RuntimeError, match="offline") as e:
        load_pretrained("gpt2")
    assert "model.init: scratch" in str(e.value)
    assert calls == ([True, False] if reachable else [True])  # cache first; no retries when unreachable


def test_load_pretrained_missing_local_path(tmp_path):
    with pytest.raises(RuntimeError, match="model.init: scratch"):
        load_pretrained(str(tmp_path / "no-such-model"))


def test_load_pretrained_dir_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="directory"):
        load_pretrained(str(tmp_path / "empty"))
