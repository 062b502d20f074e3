import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_emergence.analysis.perturb import (
    PERTURBATIONS,
    align_tokens,
    apply_edits,
    perturb,
    perturbation_pairs,
)

MATH = "Janet has 3 apples. She buys 5 more.\nHow many apples does she have?\n\nShe has 3 + 5 = 8 apples.\n#### 8"
CODE = 'def area(r):\n    """Circle area."""\n    if r > 0:\n        return 3.14 * r ** 2\n    return None\n'


class WordTokenizer:
    """Words and single non-space characters, each with its character span (like a fast tokenizer)."""

    def __call__(self, text, return_offsets_mapping=False):
        spans = [m.span() for m in re.finditer(r"\w+|\S", text)]
        return {"input_ids": [hash(text[a:b]) % 10_000 for a, b in spans], "offset_mapping": spans}


@st.composite
def text_and_edits(draw):
    text = draw(st.text(alphabet="ab \n", max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    edits, pos = [], 0
    for c in cuts:
        if c < pos:
            continue
        end = draw(st.integers(c, min(len(text), c + 3)))
        edits.append((c, end, draw(st.text(alphabet="xy\n", max_size=3))))
        pos = end
    return text, edits


@settings(max_examples=100, deadline=None)
@given(text_and_edits())
def test_apply_edits_maps_every_kept_character(case):
    text, edits = case
    new, cmap = apply_edits(text, edits)
    deleted = np.zeros(len(text), dtype=bool)
    for a, b, _ in edits:
        deleted[a:b] = True
    assert ((cmap == -1) == deleted).all()
    kept = np.flatnonzero(~deleted)
    assert all(new[cmap[i]] == text[i] for i in kept)
    assert (np.diff(cmap[kept]) > 0).all()
    assert len(new) == len(text) + sum(len(r) - (b - a) for a, b, r in edits)


def test_perturbations_change_format_only():
    p = perturb(MATH, "prefix", prefix="Problem: ")
    assert p.text == "Problem: " + MATH and (p.char_map == np.arange(len(MATH)) + 9).all()
    assert perturb(MATH, "blank_lines").text.count("\n") == 2 * MATH.count("\n")
    assert perturb(CODE, "crlf").text.replace("\r\n", "\n") == CODE
    assert perturb(MATH, "double_spaces").text.replace("  ", " ") == MATH
    assert "\n" not in perturb(MATH, "join_lines").text
    assert perturb(CODE, "strip_indent").text.splitlines()[1] == '"""Circle area."""'
    with pytest.raises(ValueError, match="unknown format perturbation 'bold'"):
        perturb(MATH, "bold")


def test_alignment_with_a_word_tokenizer():
    tok = WordTokenizer()
    for kind in ("prefix", "blank_lines", "double_spaces", "crlf"):
        (pair,) = perturbation_pairs(tok, MATH, [kind])
        assert pair.coverage == 1.0, kind  # words never merge with whitespace here
        assert (pair.orig_ids[pair.orig_index] == pair.pert_ids[pair.pert_index]).all()
        if kind == "prefix":
            assert (pair.pert_index == pair.orig_index + 2).all()  # "Problem" and ":"


def test_alignment_with_gpt2_bpe(gpt2_tokenizer):
    for text in (MATH, CODE):
        pairs = perturbation_pairs(gpt2_tokenizer, text, list(PERTURBATIONS))
        for p in pairs:
            orig = [gpt2_tokenizer.decode([i]) for i in p.orig_ids[p.orig_index]]
            pert = [gpt2_tokenizer.decode([i]) for i in p.pert_ids[p.pert_index]]
            assert orig == pert, p.kind
            assert all(t.strip() for t in orig), "whitespace-only tokens are format, not content"
            assert p.coverage > 0.8, (p.kind, p.coverage)
        by_kind = {p.kind: p for p in pairs}
        # the first word merges with the prefix's space (" Janet" vs "Jan" "et"): it must drop out
        assert 0 not in by_kind["prefix"].orig_index
        assert by_kind["double_spaces"].coverage == 1.0


def test_truncation_keeps_indices_inside_the_window(gpt2_tokenizer):
    (p,) = perturbation_pairs(gpt2_tokenizer, MATH, ["prefix"], max_tokens=12)
    assert len(p.orig_ids) == 12 and len(p.pert_ids) == 12
    assert p.orig_index.max() < 12 and p.pert_index.max() < 12
    assert len(p.orig_index) >= 8


def test_shared_byte_spans_are_matched_by_rank(gpt2_tokenizer):
    text = "Party 🎉 time, 日本 ok"
    (p,) = perturbation_pairs(gpt2_tokenizer, text, ["prefix"])
    assert p.coverage == pytest.approx(
        (p.n_content - 1) / p.n_content
    )  # only the first word changes
    assert (p.orig_ids[p.orig_index] == p.pert_ids[p.pert_index]).all()


def test_empty_inputs_align_to_nothing():
    oi, pi = align_tokens(np.zeros(0), np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0))
    assert oi.size == 0 and pi.size == 0
