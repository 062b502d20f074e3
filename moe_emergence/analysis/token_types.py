"""Python token types of BPE tokens, from the standard `tokenize` module.

Every character of a source file gets the type of the Python token that
covers it: keyword (a NAME that `keyword.iskeyword` accepts), name, number,
string (f-string parts included), operator, comment; everything else
(whitespace, NEWLINE/NL, INDENT/DEDENT, error tokens) is `other`. A BPE token
then takes the majority type of its characters; on a tie the earlier type in
`TOKEN_TYPES` wins, so " x" (space + name) is a name, not `other`.

Code that `tokenize` cannot finish (unterminated string, bad dedent, a chunk
cut out of a larger file) keeps the types of the tokens produced before the
error; the rest stays `other`, and the result says it was partial so the
caller can count such files.
"""

from __future__ import annotations

import io
import keyword
import re
import tokenize
from dataclasses import dataclass

import numpy as np

TOKEN_TYPES = ("keyword", "name", "number", "string", "operator", "comment", "other")
OTHER = TOKEN_TYPES.index("other")
_TYPE_OF = {
    tokenize.NUMBER: TOKEN_TYPES.index("number"),
    tokenize.STRING: TOKEN_TYPES.index("string"),
    tokenize.OP: TOKEN_TYPES.index("operator"),
    tokenize.COMMENT: TOKEN_TYPES.index("comment"),
}
for _name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"):  # Python >= 3.12
    if hasattr(tokenize, _name):
        _TYPE_OF[getattr(tokenize, _name)] = TOKEN_TYPES.index("string")


@dataclass
class CharTypes:
    labels: np.ndarray  # [len(source)] int8 index into TOKEN_TYPES
    complete: bool  # False when tokenize stopped early on an error
    error: str = ""


def char_types(source: str) -> CharTypes:
    """Type of every character of `source`."""
    labels = np.full(len(source), OTHER, dtype=np.int8)
    # tokenize reports (row, col) with rows split on "\n" as StringIO.readline does;
    # cols count str characters, so absolute offset = line start + col.
    # Rows are 1-based; index 0 is a placeholder.
    line_starts = [0, 0] + [m.end() for m in re.finditer("\n", source)]
    complete, error = True, ""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME:
                t = (
                    TOKEN_TYPES.index("keyword")
                    if keyword.iskeyword(tok.string)
                    else TOKEN_TYPES.index("name")
                )
            else:
                t = _TYPE_OF.get(tok.type, OTHER)
            if t == OTHER:
                continue
            (r0, c0), (r1, c1) = tok.start, tok.end
            if r0 >= len(line_starts) or r1 >= len(line_starts):
                continue
            a, b = line_starts[r0] + c0, line_starts[r1] + c1
            labels[a:b] = t
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        complete, error = False, f"{type(e).__name__}: {e}"
    return CharTypes(labels, complete, error)


def bpe_token_types(char_labels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Majority character type of each BPE token [T] given its (start, end) offsets [T, 2].

    Tokens with an empty span (special tokens such as EOS) get -1.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n_types = len(TOKEN_TYPES)
    onehot = np.zeros((len(char_labels) + 1, n_types), dtype=np.int64)
    onehot[np.arange(1, len(char_labels) + 1), char_labels.astype(np.int64)] = 1
    cum = onehot.cumsum(axis=0)
    start = np.clip(offsets[:, 0], 0, len(char_labels))
    end = np.clip(offsets[:, 1], 0, len(char_labels))
    per_token = cum[end] - cum[start]  # [T, n_types]
    out = per_token.argmax(axis=1)  # ties -> earlier type, so content beats `other`
    return np.where(end > start, out, -1)


def token_type_routing(types: np.ndarray, expert: np.ndarray, n_experts: int) -> dict[str, object]:
    """Counts [n_types, E] of (token type, top-1 expert), skipping tokens typed -1.

    Returns {types, counts, fractions (rows sum to 1, zero rows for absent
    types), load (expert fractions over all typed tokens: the row a
    type-blind router would give), n_tokens (per type)}.
    """
    types = np.asarray(types, dtype=np.int64)
    expert = np.asarray(expert, dtype=np.int64)
    ok = types >= 0
    n_types = len(TOKEN_TYPES)
    counts = np.bincount(types[ok] * n_experts + expert[ok], minlength=n_types * n_experts).reshape(
        n_types, n_experts
    )
    tot = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, tot, out=np.zeros(counts.shape), where=tot > 0)
    all_load = counts.sum(axis=0) / max(int(counts.sum()), 1)
    return {
        "types": list(TOKEN_TYPES),
        "counts": counts.tolist(),
        "fractions": frac.tolist(),
        "load": all_load.tolist(),
        "n_tokens": {t: int(n) for t, n in zip(TOKEN_TYPES, tot[:, 0], strict=True)},
    }
