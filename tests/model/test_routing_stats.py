"""Routing statistics on hand-made count vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_emergence.model.routing_stats import (
    dead_experts,
    load_fractions,
    normalized_load_entropy,
    top_share,
)


def test_balanced_and_collapsed():
    bal = torch.tensor([5, 5, 5, 5])
    assert float(top_share(bal)) == 0.25
    assert float(normalized_load_entropy(bal)) == pytest.approx(1.0)
    assert int(dead_experts(bal)) == 0
    col = [0, 12, 0, 0]
    assert float(top_share(col)) == 1.0
    assert float(normalized_load_entropy(col)) == pytest.approx(0.0)
    assert int(dead_experts(col)) == 3


def test_types_follow_input_and_batch_over_leading_dims():
    t = load_fractions(torch.tensor([[1, 3], [2, 2]]))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    torch.testing.assert_close(t, torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))
    n = top_share(np.array([[1, 3], [2, 2]]))
    assert isinstance(n, np.ndarray) and n.tolist() == [0.75, 0.5]
    assert load_fractions([0, 0]).tolist() == [0.0, 0.0]  # no tokens: no NaN


def test_hand_entropy():
    # fractions .5 .25 .25: H = 1.5 ln 2, over ln 4 = 2 ln 2
    assert float(normalized_load_entropy([2, 1, 1, 0])) == pytest.approx(0.75)


def test_active_mask_leaves_out_dormant_experts():
    counts = torch.tensor([4, 4, 0, 0])
    active = torch.tensor([True, True, False, False])
    assert int(dead_experts(counts, active)) == 0
    assert float(normalized_load_entropy(counts, active)) == pytest.approx(1.0)
    assert float(top_share(counts, active)) == 0.5
