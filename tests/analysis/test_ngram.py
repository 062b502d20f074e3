"""Count baselines: proper distributions, scored like the models, and a bigram that learns order."""

from __future__ import annotations

import numpy as np

from moe_emergence.analysis.ngram import Bigram, Unigram, block_losses


def test_bigram_is_a_distribution_for_every_context():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, size=(30, 9))  # id 11 never occurs: an unseen context and target
    big = Bigram.fit(ids, 12)
    for v in range(12):
        probe = np.stack([np.full(12, v), np.arange(12)], axis=1)
        p = np.exp(-big.token_losses(probe)[:, 0])
        assert np.isclose(p.sum(), 1.0)
        assert (p > 0).all()


def test_bigram_learns_order_the_unigram_cannot():
    # a deterministic cycle: the previous token says everything
    cycle = (np.arange(10)[None, :] + np.arange(40)[:, None]) % 10  # every id as often a target
    big, uni = Bigram.fit(cycle, 10), Unigram.fit(cycle, 10)
    assert block_losses(big, cycle).mean() < 0.1
    assert abs(block_losses(uni, cycle).mean() - np.log(10)) < 0.01
    # each block scores T-1 targets: the first token has no context
    assert block_losses(big, cycle).shape == (40,)
    assert big.token_losses(cycle).shape == (40, 9)
