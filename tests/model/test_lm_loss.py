"""The chunked LM loss gives the same losses and gradients as full logits + cross-entropy."""

from __future__ import annotations

import pytest
import torch

from moe_emergence.core.config import ArchParams
from moe_emergence.model.gpt2 import make_dense
from moe_emergence.model.lm_loss import (
    CausalLMLoss,
    lm_loss_from_hidden,
    model_sequence_losses,
    sequence_lm_loss,
)


def reference(h: torch.Tensor, w: torch.Tensor, ids: torch.Tensor):
    per_seq = sequence_lm_loss(h @ w.t(), ids)
    return per_seq.mean(), per_seq


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_loss_and_gradients_equal_the_full_logits_route(chunk):
    g = torch.Generator().manual_seed(0)
    b, t, d, v = 3, 9, 16, 101
    h0 = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    w0 = torch.randn(v, d, generator=g, dtype=torch.float64)
    ids = torch.randint(0, v, (b, t), generator=g)

    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss, per_seq = reference(h, w, ids)
    (2.5 * loss).backward()  # a scale on the loss reaches both gradients
    hf, wf = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss_f, per_seq_f = lm_loss_from_hidden(hf, wf, ids, chunk_tokens=chunk)
    (2.5 * loss_f).backward()

    torch.testing.assert_close(loss_f.double(), loss.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(per_seq_f.double(), per_seq.detach(), rtol=1e-6, atol=1e-6)
    assert not per_seq_f.requires_grad
    torch.testing.assert_close(hf.grad, h.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(wf.grad.double(), w.grad, rtol=1e-5, atol=1e-8)
    # the last position has no target: its hidden state gets no gradient
    assert hf.grad[:, -1].abs().max() == 0


def test_no_grad_path_gives_the_same_per_block_losses():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 6, 8, generator=g)
    w = torch.randn(50, 8, generator=g)
    ids = torch.randint(0, 50, (4, 6), generator=g)
    with torch.no_grad():
        loss, per_seq = lm_loss_from_hidden(h, w, ids, chunk_tokens=5)
    torch.testing.assert_close(per_seq, sequence_lm_loss(h @ w.t(), ids))
    torch.testing.assert_close(loss, per_seq.mean())


def test_gpt2_wrapper_matches_the_model_logits():
    model = make_dense(ArchParams(n_layer=2, n_embd=32, n_head=4, n_positions=32), vocab_size=97, seed=0)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    ref = sequence_lm_loss(model(input_ids=ids).logits, ids)
    loss, per_seq = CausalLMLoss(model, chunk_tokens=5)(ids)
    torch.testing.assert_close(per_seq, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model_sequence_losses(model, ids), ref.detach(), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert model.transformer.wte.weight.grad is not None  # tied LM head: the embedding gets the head's gradient


def test_a_block_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        lm_loss_from_hidden(torch.zeros(1, 1, 4), torch.zeros(5, 4), torch.zeros(1, 1, dtype=torch.long))
