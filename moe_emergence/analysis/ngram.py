"""Count baselines for model quality: a unigram and an interpolated Kneser-Ney bigram.

A language model that cannot beat a bigram fitted on its own train split has
learned little beyond which tokens follow which; its hidden states then say
little about context, and routing them says little about specialization. Both
baselines are fitted on the train blocks and scored like the models: in the
model's ids (so on the same vocabulary), over the same next-token targets
(positions 1..T-1 of every block, each predicted from the token before it), a
block's loss the mean over its targets.

Kneser-Ney (interpolated, one absolute discount D = n1 / (n1 + 2 n2) from the
bigram counts of counts, Chen & Goodman 1998):

    P(w | v) = max(c(v, w) - D, 0) / c(v) + D * N1+(v .) / c(v) * P_cont(w)
    P_cont(w) = max(N1+(. w) - D, 0) / N1+(. .) + D * |{w: N1+(. w) > 0}| / N1+(. .) / V

with P(w | v) = P_cont(w) for a context never seen. The unigram is add-one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _pairs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(context, target) of every next-token position of [n, T] blocks, flattened."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[:, :-1].reshape(-1), ids[:, 1:].reshape(-1)


@dataclass
class Bigram:
    vocab_size: int
    discount: float
    keys: np.ndarray  # sorted v * V + w of the seen bigrams
    counts: np.ndarray  # c(v, w) for each key
    context_total: np.ndarray  # [V] c(v) as a context
    context_types: np.ndarray  # [V] N1+(v .)
    p_cont: np.ndarray  # [V] continuation probability, every entry > 0

    @classmethod
    def fit(cls, ids: np.ndarray, vocab_size: int) -> Bigram:
        v, w = _pairs(ids)
        keys, counts = np.unique(v * vocab_size + w, return_counts=True)
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
        ctx = keys // vocab_size
        nxt = keys % vocab_size
        context_total = np.bincount(ctx, weights=counts, minlength=vocab_size)
        context_types = np.bincount(ctx, minlength=vocab_size).astype(np.float64)
        cont = np.bincount(nxt, minlength=vocab_size).astype(np.float64)  # N1+(. w)
        total_types = float(len(keys))  # N1+(. .)
        seen = float((cont > 0).sum())
        p_cont = np.maximum(cont - d, 0.0) / total_types + d * seen / total_types / vocab_size
        return cls(vocab_size, d, keys, counts.astype(np.float64), context_total, context_types, p_cont)

    def token_losses(self, ids: np.ndarray) -> np.ndarray:
        """-log P(next | previous) for every next-token position: [n, T-1] nats."""
        ids = np.asarray(ids, dtype=np.int64)
        v, w = _pairs(ids)
        key = v * self.vocab_size + w
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        c_vw = np.where(self.keys[pos_c] == key, self.counts[pos_c], 0.0)
        c_v = self.context_total[v]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(
                c_v > 0,
                np.maximum(c_vw - self.discount, 0.0) / c_v
                + self.discount * self.context_types[v] / c_v * self.p_cont[w],
                self.p_cont[w],
            )
        return -np.log(p).reshape(ids.shape[0], ids.shape[1] - 1)


@dataclass
class Unigram:
    log_p: np.ndarray  # [V]

    @classmethod
    def fit(cls, ids: np.ndarray, vocab_size: int) -> Unigram:
        _, w = _pairs(ids)
        c = np.bincount(w, minlength=vocab_size).astype(np.float64) + 1.0
        return cls(np.log(c / c.sum()))

    def token_losses(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return -self.log_p[ids[:, 1:]]


def block_losses(model: Bigram | Unigram, ids: np.ndarray) -> np.ndarray:
    """Per block, the mean loss over its next-token targets (the pipeline's scoring)."""
    return model.token_losses(ids).mean(axis=1)
