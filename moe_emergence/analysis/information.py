"""Entropy and mutual information of count tables, in nats (plug-in estimates).

Every specialization number that is an information quantity goes through
these functions, so there is one definition of each. Tables may carry leading
batch axes (one table per permutation or bootstrap draw): the joint is always
the last two axes.
"""

from __future__ import annotations

import numpy as np


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """H(p) = -sum p log p along `axis` (0 log 0 = 0); `p` is normalized first."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(total > 0, p / np.where(total > 0, total, 1.0), 0.0)
        terms = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return -terms.sum(axis=axis)


def entropy_of_counts(counts: np.ndarray) -> float:
    """Entropy of the distribution given by a flat count vector (any shape, flattened)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    return float(entropy(c))


def mutual_information(joint: np.ndarray) -> np.ndarray:
    """I(A;B) of a joint count or probability table over its last two axes [..., A, B].

    I = H(A) + H(B) - H(A,B); each table is normalized on its own, so counts
    work directly and a batch of tables gives a batch of values.
    """
    j = np.asarray(joint, dtype=np.float64)
    flat = j.reshape(*j.shape[:-2], -1)
    return entropy(j.sum(axis=-1)) + entropy(j.sum(axis=-2)) - entropy(flat)


def mi_of_codes(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> float:
    """I(A;B) of two aligned arrays of integer codes (a in 0..n_a-1, b in 0..n_b-1)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.size == 0:
        return 0.0
    joint = np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)
    return float(mutual_information(joint))
