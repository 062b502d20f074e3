"""Token identity vs context: how much of routing the token id alone explains.

Two views, both per layer on top-1 routing:

1. Held-out predictability (no estimation bias). Documents are split in two
   halves (seeded, within each domain). On one half each key's modal expert
   is fitted; the other half is predicted; then the halves swap, so every
   token is predicted once from the half it is not in. Keys, each backing off
   to the next when unseen in the fitting half:
   - majority: one global modal expert (the baseline);
   - domain: the domain's modal expert;
   - token: the token id's modal expert;
   - token_domain: the (token id, domain) pair's modal expert.
   `tip_norm` = (acc_token - acc_majority) / (1 - acc_majority) is the share
   of the majority baseline's errors the token id fixes; `domain_gain` =
   acc_token_domain - acc_token is what knowing the domain adds on top.

2. Uncertainty coefficients on the tokens whose id occurs at least
   `min_token_count` times (plug-in estimates, empirical priors):
   U(E|X) = I(E;X)/H(E), U(E|D) = I(E;D)/H(E), U(E|X,D) = I(E;X,D)/H(E), and
   U(E|D given X) = I(E;D|X)/H(E) = U(E|X,D) - U(E|X): the share of routing
   entropy the token id explains, the domain explains, and the domain adds
   beyond the token. Plug-in MI is biased upward with many ids, so each comes
   with a null: experts shuffled across tokens (for U(E|X), U(E|D)) and
   domains shuffled among the occurrences of each token id (for I(E;D|X)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moe_emergence.analysis.information import entropy_of_counts, mi_of_codes


def split_documents(doc: np.ndarray, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask [N]: True for tokens of documents in half A (seeded, halved within each stratum)."""
    doc_ids, d = np.unique(np.asarray(doc), return_inverse=True)
    n_docs = len(doc_ids)
    doc_stratum = np.zeros(n_docs, dtype=np.int64)
    if strata is not None:
        doc_stratum[d] = np.asarray(strata)
    rng = np.random.default_rng(seed)
    in_a = np.zeros(n_docs, dtype=bool)
    for s in np.unique(doc_stratum):
        members = rng.permutation(np.flatnonzero(doc_stratum == s))
        in_a[members[: (len(members) + 1) // 2]] = True
    return in_a[d]


def _modal(
    keys: np.ndarray, expert: np.ndarray, n_keys: int, n_experts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each key's most frequent expert (lowest index on ties) and whether the key was seen."""
    counts = np.bincount(keys * n_experts + expert, minlength=n_keys * n_experts).reshape(
        n_keys, n_experts
    )
    return counts.argmax(axis=1), counts.sum(axis=1) > 0


_KEYS = ("majority", "domain", "token", "token_domain")


def _fit_and_test(
    fit: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_experts: int,
    n_dom: int,
    n_tok: int,
) -> tuple[dict[str, int], int]:
    """Correct predictions per key on `test` from modal experts fitted on `fit`; and test ids seen in fit.

    Each part is (expert, domain code, compact token code).
    """
    e_fit, d_fit, x_fit = fit
    e_test, d_test, x_test = test
    glob = int(np.bincount(e_fit, minlength=n_experts).argmax())
    dom_m, dom_seen = _modal(d_fit, e_fit, n_dom, n_experts)
    tok_m, tok_seen = _modal(x_fit, e_fit, n_tok, n_experts)
    td_m, td_seen = _modal(x_fit * n_dom + d_fit, e_fit, n_tok * n_dom, n_experts)
    xd_test = x_test * n_dom + d_test
    pred_tok = np.where(tok_seen[x_test], tok_m[x_test], glob)
    preds = {
        "majority": np.full(len(e_test), glob),
        "domain": np.where(dom_seen[d_test], dom_m[d_test], glob),
        "token": pred_tok,
        "token_domain": np.where(td_seen[xd_test], td_m[xd_test], pred_tok),
    }
    return {k: int((e_test == preds[k]).sum()) for k in _KEYS}, int(tok_seen[x_test].sum())


def _accuracy_summary(correct: dict[str, int], covered: int, n: int) -> dict[str, Any]:
    acc = {k: (correct[k] / n if n else float("nan")) for k in _KEYS}
    base = acc["majority"]
    return {
        "n_tokens": n,
        "accuracy": acc,
        "tip_norm": (acc["token"] - base) / (1 - base) if base < 1 else float("nan"),
        "domain_gain": acc["token_domain"] - acc["token"],
        "coverage": covered / n if n else float("nan"),
    }


def heldout_predictability(
    expert: np.ndarray,
    token_id: np.ndarray,
    domain: np.ndarray,
    doc: np.ndarray,
    n_experts: int,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Two-fold held-out accuracy of predicting the expert from majority, domain, token, token+domain.

    Returns {n_tokens (tokens predicted), accuracy {majority, domain, token,
    token_domain}, tip_norm, domain_gain, coverage (share of predicted tokens
    whose id occurs in the fitting half), seed}.
    """
    expert = np.asarray(expert, dtype=np.int64)
    domain = np.asarray(domain, dtype=np.int64)
    _, tok = np.unique(np.asarray(token_id), return_inverse=True)
    n_tok = int(tok.max()) + 1 if tok.size else 0
    n_dom = int(domain.max()) + 1 if domain.size else 0
    in_a = split_documents(doc, seed, strata=domain)
    correct = dict.fromkeys(_KEYS, 0)
    covered = n = 0
    for fit in (in_a, ~in_a):
        test = ~fit
        if not fit.any() or not test.any():
            continue
        c, cov = _fit_and_test(
            (expert[fit], domain[fit], tok[fit]),
            (expert[test], domain[test], tok[test]),
            n_experts,
            n_dom,
            n_tok,
        )
        correct = {k: correct[k] + c[k] for k in _KEYS}
        covered += cov
        n += int(test.sum())
    return {**_accuracy_summary(correct, covered, n), "seed": seed}


def transfer_predictability(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_experts: int,
) -> dict[str, Any]:
    """Accuracy on eval tokens of modal experts fitted on train tokens; each part is (expert, token_id, domain).

    Compared with `heldout_predictability` on eval alone, it says whether the
    token/domain -> expert map learned on train text carries over to unseen
    documents (specialization generalizes rather than memorizes).
    """
    e_tr, x_tr, d_tr = (np.asarray(a, dtype=np.int64) for a in train)
    e_ev, x_ev, d_ev = (np.asarray(a, dtype=np.int64) for a in evaluation)
    _, tok = np.unique(np.concatenate([x_tr, x_ev]), return_inverse=True)
    n_tok = int(tok.max()) + 1 if tok.size else 0
    n_dom = int(max(d_tr.max(initial=-1), d_ev.max(initial=-1))) + 1
    if e_tr.size == 0 or e_ev.size == 0:
        return _accuracy_summary(dict.fromkeys(_KEYS, 0), 0, 0)
    c, cov = _fit_and_test(
        (e_tr, d_tr, tok[: len(x_tr)]), (e_ev, d_ev, tok[len(x_tr) :]), n_experts, n_dom, n_tok
    )
    return _accuracy_summary(c, cov, int(e_ev.size))


def _within_group_shuffle(
    values: np.ndarray,
    groups: np.ndarray,
    rng: np.random.Generator,
    by_group: np.ndarray | None = None,
) -> np.ndarray:
    """`values` permuted among positions that share a group (vectorized: one sort per call).

    `by_group` = argsort(groups, stable) may be passed in when shuffling the same groups often.
    """
    if by_group is None:
        by_group = np.argsort(groups, kind="stable")
    shuffled = np.argsort(groups + rng.random(groups.size))
    out = np.empty_like(values)
    out[by_group] = values[shuffled]
    return out


def routing_information(
    expert: np.ndarray,
    token_id: np.ndarray,
    domain: np.ndarray,
    n_experts: int,
    *,
    min_token_count: int = 10,
    n_shuffles: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Uncertainty coefficients of routing given token id and domain, with shuffle nulls."""
    expert = np.asarray(expert, dtype=np.int64)
    domain = np.asarray(domain, dtype=np.int64)
    ids, tok, freq = np.unique(np.asarray(token_id), return_inverse=True, return_counts=True)
    keep = freq[tok] >= min_token_count
    kept_ids = np.flatnonzero(freq >= min_token_count)
    remap = np.full(len(ids), -1, dtype=np.int64)
    remap[kept_ids] = np.arange(len(kept_ids))
    e, x, d = expert[keep], remap[tok[keep]], domain[keep]
    n_x = len(kept_ids)
    n_d = int(domain.max()) + 1 if domain.size else 1
    h_e = entropy_of_counts(np.bincount(e, minlength=n_experts))

    def coefs(e_: np.ndarray, d_: np.ndarray) -> dict[str, float]:
        if h_e <= 0:
            return {
                k: float("nan")
                for k in ("u_token", "u_domain", "u_token_domain", "u_domain_given_token")
            }
        i_x = mi_of_codes(x, n_x, e_, n_experts)
        i_xd = mi_of_codes(x * n_d + d_, n_x * n_d, e_, n_experts)
        return {
            "u_token": i_x / h_e,
            "u_domain": mi_of_codes(d_, n_d, e_, n_experts) / h_e,
            "u_token_domain": i_xd / h_e,
            "u_domain_given_token": (i_xd - i_x) / h_e,
        }

    observed = coefs(e, d)
    rng = np.random.default_rng(seed)
    null_e = [coefs(rng.permutation(e), d) for _ in range(n_shuffles)]
    by_x = np.argsort(x, kind="stable")
    null_d = [coefs(e, _within_group_shuffle(d, x, rng, by_x)) for _ in range(n_shuffles)]

    def band(samples: list[dict[str, float]], key: str) -> dict[str, float]:
        v = np.array([s[key] for s in samples])
        return (
            {"null_mean": float(v.mean()), "null_p95": float(np.percentile(v, 95))}
            if v.size
            else {}
        )

    # OLMoE-style vocabulary specialization: mean over kept ids of the top expert's share of the id.
    counts = np.bincount(x * n_experts + e, minlength=n_x * n_experts).reshape(n_x, n_experts)
    vocab = (
        float((counts.max(axis=1) / np.maximum(counts.sum(axis=1), 1)).mean())
        if n_x
        else float("nan")
    )
    null_vocab = []
    for _ in range(n_shuffles):
        c = np.bincount(x * n_experts + rng.permutation(e), minlength=n_x * n_experts).reshape(
            n_x, n_experts
        )
        null_vocab.append((c.max(axis=1) / np.maximum(c.sum(axis=1), 1)).mean() if n_x else np.nan)
    nv = np.array(null_vocab, dtype=np.float64)
    return {
        "min_token_count": min_token_count,
        "n_ids": int(n_x),
        "token_fraction": float(keep.mean()) if keep.size else float("nan"),
        "h_expert": h_e,
        "u_token": {"value": observed["u_token"], **band(null_e, "u_token")},
        "u_domain": {"value": observed["u_domain"], **band(null_e, "u_domain")},
        "u_token_domain": {"value": observed["u_token_domain"], **band(null_e, "u_token_domain")},
        "u_domain_given_token": {
            "value": observed["u_domain_given_token"],
            **band(null_d, "u_domain_given_token"),
        },
        "vocab_specialization": {
            "value": vocab,
            "null_mean": float(nv.mean()) if nv.size else float("nan"),
            "null_p95": float(np.percentile(nv, 95)) if nv.size else float("nan"),
        },
        "n_shuffles": n_shuffles,
    }
