"""Formatting-artifact checks flag what a router could key on instead of content."""

from __future__ import annotations

from moe_emergence.data.artifacts import check_domain


def test_clean_domain_has_no_flags():
    import random

    r = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "iota"]
    texts = [" ".join(r.choice(words) for _ in range(20)) + f" {i}." for i in range(50)]
    rep = check_domain(texts)
    assert rep["flags"] == []
    assert rep["leading_whitespace"]["docs"] == 0 and rep["invisible"]["docs"] == 0
    assert rep["prefix"]["20"]["share"] <= 0.1 and rep["first_char"]["kinds"] == {"letter": 1.0}


def test_flags_whitespace_invisible_and_shared_affixes():
    texts = [f" Problem: solve item {i} now.\u200b" if i % 3 == 0 else f"Item {i} is a plain text of words {i}." for i in range(60)]
    texts[1] = "bidi \u202e override " + texts[1]
    rep = check_domain(texts)
    flags = " | ".join(rep["flags"])
    assert "start with whitespace" in flags
    assert "invisible or bidi" in flags and rep["invisible"]["chars"] == {"RLO": 1, "ZWSP": 20}
    assert "prefix ' Problem: solve item' (20 chars)" in flags
    assert rep["first_char"]["max_char"] == "I"
