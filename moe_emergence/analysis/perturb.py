"""Format perturbations of a document and the map from its tokens to the perturbed ones.

The format-artifact test routes a document and a copy with its formatting
changed, and compares routing on the content tokens only. Which tokens are
"the same" is not obvious with BPE: whitespace merges into the next word
(" word"), runs of newlines become one token, so a formatting change alters
the tokens around it. The rule here: a perturbation is a list of character
edits, which gives each original character its position in the perturbed
text (or none if deleted). An original token is matched when its characters
all survive, stay contiguous, and the perturbed text has a token with exactly
that character span and the same id. Everything else (tokens touched by an
edit, tokens whose split changed) is left out of the comparison and counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Edit = tuple[int, int, str]  # replace text[start:end] with the string (start == end: insert)


def _prefix(text: str, prefix: str) -> list[Edit]:
    return [(0, 0, prefix)]


def _each(pattern: str, make: Callable[[re.Match[str]], Edit]) -> Callable[[str, str], list[Edit]]:
    return lambda text, prefix: [make(m) for m in re.finditer(pattern, text)]


# Each perturbation: text -> edits. Insertions keep every original character, so
# content tokens survive unless BPE re-splits them.
PERTURBATIONS: dict[str, Callable[[str, str], list[Edit]]] = {
    "prefix": _prefix,  # a fixed prefix such as "Problem: " before the document
    "blank_lines": _each(r"\n", lambda m: (m.end(), m.end(), "\n")),  # every line break doubled
    "crlf": _each(r"\n", lambda m: (m.start(), m.start(), "\r")),  # Windows line endings
    "double_spaces": _each(r" ", lambda m: (m.start(), m.start(), " ")),  # every space doubled
    "join_lines": _each(r"\n", lambda m: (m.start(), m.end(), " ")),  # line breaks become spaces
    "strip_indent": _each(
        r"(?m)^[ \t]+", lambda m: (m.start(), m.end(), "")
    ),  # indentation removed
}


@dataclass
class Perturbed:
    kind: str
    text: str
    char_map: (
        np.ndarray
    )  # [len(original)] index of each original character in `text`, -1 if deleted


def apply_edits(text: str, edits: Sequence[Edit]) -> tuple[str, np.ndarray]:
    """Apply non-overlapping edits; return the new text and the original-to-new character map."""
    edits = sorted(edits, key=lambda e: (e[0], e[1]))
    n = len(text)
    shift = np.zeros(n + 1, dtype=np.int64)
    deleted = np.zeros(n + 1, dtype=np.int64)
    pieces, pos = [], 0
    for start, end, repl in edits:
        if start < pos or end < start or end > n:
            raise ValueError(
                f"edit ({start}, {end}) overlaps an earlier edit or lies outside the text"
            )
        pieces.append(text[pos:start])
        pieces.append(repl)
        pos = end
        # characters at or after `end` move by the net length change; [start, end) are gone
        shift[end] += len(repl) - (end - start)
        deleted[start] += 1
        deleted[end] -= 1
    pieces.append(text[pos:])
    char_map = np.arange(n, dtype=np.int64) + np.cumsum(shift)[:n]
    char_map[np.cumsum(deleted)[:n] > 0] = -1
    return "".join(pieces), char_map


def perturb(text: str, kind: str, prefix: str = "Problem: ") -> Perturbed:
    """The document with one format perturbation applied (see `PERTURBATIONS`)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown format perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")
    new, cmap = apply_edits(text, PERTURBATIONS[kind](text, prefix))
    return Perturbed(kind, new, cmap)


def tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [T] and character offsets [T, 2] from a fast tokenizer (`return_offsets_mapping`)."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, offsets


def _span_keys(offsets: np.ndarray, base: int) -> np.ndarray:
    return offsets[:, 0] * base + offsets[:, 1]


def align_tokens(
    orig_ids: np.ndarray,
    orig_offsets: np.ndarray,
    pert_ids: np.ndarray,
    pert_offsets: np.ndarray,
    char_map: np.ndarray,
    text: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (orig [M], pert [M]) of original tokens that appear unchanged in the perturbed text.

    Given the original `text`, tokens made
    only of whitespace are left out too: they are format, not content.
    """
    orig_ids = np.asarray(orig_ids, dtype=np.int64)
    pert_ids = np.asarray(pert_ids, dtype=np.int64)
    oo = np.asarray(orig_offsets, dtype=np.int64).reshape(-1, 2)
    po = np.asarray(pert_offsets, dtype=np.int64).reshape(-1, 2)
    cmap = np.asarray(char_map, dtype=np.int64)
    n = len(cmap)
    if len(oo) == 0 or len(po) == 0 or n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    s = np.clip(oo[:, 0], 0, n)
    e = np.clip(oo[:, 1], 0, n)
    # a span survives when none of its characters is deleted and consecutive ones stay adjacent
    bad_char = np.concatenate([[0], np.cumsum(cmap < 0)])
    broken = (
        np.concatenate([[0], np.cumsum(np.diff(cmap) != 1)])
        if n > 1
        else np.zeros(1, dtype=np.int64)
    )
    intact = (e > s) & (bad_char[e] - bad_char[s] == 0)
    intact &= broken[np.maximum(e - 1, s)] - broken[s] == 0
    if text is not None:
        ink = np.concatenate([[0], np.cumsum([not c.isspace() for c in text])])
        intact &= ink[e] - ink[s] > 0
    new_start = np.where(intact, cmap[np.minimum(s, n - 1)], -1)
    new_spans = np.stack([new_start, new_start + (e - s)], axis=1)

    # Several byte-level tokens can share one character span (a multi-byte
    # character); such tokens are matched by their rank within the span, and
    # only when both sides split the span into the same number of tokens.
    base = int(max(po.max(), new_spans.max(), oo.max(), 0)) + 2
    o_rank, o_size = _rank_and_size(_span_keys(oo, base))
    p_rank, p_size = _rank_and_size(_span_keys(po, base))
    width = int(max(o_size.max(), p_size.max())) + 1
    pkeys = _span_keys(po, base) * width + p_rank
    okeys = _span_keys(new_spans, base) * width + o_rank
    order = np.argsort(pkeys, kind="stable")
    pos = np.clip(np.searchsorted(pkeys[order], okeys), 0, len(order) - 1)
    cand = order[pos]
    found = intact & (pkeys[cand] == okeys) & (p_size[cand] == o_size)
    orig_idx = np.flatnonzero(found)
    pert_idx = cand[found]
    same = orig_ids[orig_idx] == pert_ids[pert_idx]
    return orig_idx[same], pert_idx[same]


def _rank_and_size(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each element: its rank among equal keys (in array order) and the number of equal keys."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    new_group = np.concatenate([[True], sk[1:] != sk[:-1]])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(sk)), 0))
    group_id = np.cumsum(new_group) - 1
    sizes = np.bincount(group_id)
    rank = np.empty(len(keys), dtype=np.int64)
    size = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(sk)) - group_start
    size[order] = sizes[group_id]
    return rank, size


@dataclass
class PerturbationPair:
    """A document and one perturbed copy, tokenized, with the aligned content tokens."""

    kind: str
    orig_ids: np.ndarray
    pert_ids: np.ndarray
    orig_index: np.ndarray  # positions in orig_ids of the matched content tokens
    pert_index: np.ndarray  # their positions in pert_ids
    n_content: int  # original tokens with a non-whitespace character

    @property
    def coverage(self) -> float:
        """Fraction of the original content tokens that take part in the comparison."""
        return len(self.orig_index) / max(self.n_content, 1)


def perturbation_pairs(
    tokenizer: Any,
    text: str,
    kinds: Sequence[str],
    *,
    prefix: str = "Problem: ",
    max_tokens: int | None = None,
) -> list[PerturbationPair]:
    """Tokenize `text` and each perturbed copy (truncated to `max_tokens`) and align them."""
    ids, offs = tokenize_with_offsets(tokenizer, text)
    if max_tokens is not None:
        ids, offs = ids[:max_tokens], offs[:max_tokens]
    n_content = sum(1 for a, b in offs.tolist() if text[a:b].strip())
    out = []
    for kind in kinds:
        p = perturb(text, kind, prefix)
        pids, poffs = tokenize_with_offsets(tokenizer, p.text)
        if max_tokens is not None:
            pids, poffs = pids[:max_tokens], poffs[:max_tokens]
        oi, pi = align_tokens(ids, offs, pids, poffs, p.char_map, text)
        out.append(PerturbationPair(kind, ids, pids, oi, pi, n_content))
    return out
