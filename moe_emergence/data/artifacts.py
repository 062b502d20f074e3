"""Formatting-artifact checks: anything besides content that tells one domain from another.

A router can learn "this document starts with a space" or "every doc here ends
with the same sentence" instead of the domain's content (the MMLU-Pro
leading-whitespace leak). Per domain, over the sampled documents:
leading/trailing whitespace, invisible and bidi code points, the distribution
of first characters, and the most common prefix and suffix at a few lengths.
A prefix or suffix shared by more than `shared_limit` of the documents, any
leading/trailing whitespace above 10%, or any invisible character is flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

# Zero-width, joiners, BOM, no-break and line/paragraph separators, bidi embeddings,
# overrides and isolates, word joiner, invisible operators, MVS, CGJ, soft hyphen.
INVISIBLE = {
    0x200B: "ZWSP", 0x200C: "ZWNJ", 0x200D: "ZWJ", 0xFEFF: "BOM", 0x00A0: "NBSP", 0x2028: "LS",
    0x2029: "PS", 0x202A: "LRE", 0x202B: "RLE", 0x202C: "PDF", 0x202D: "LRO", 0x202E: "RLO",
    0x2066: "LRI", 0x2067: "RLI", 0x2068: "FSI", 0x2069: "PDI", 0x200E: "LRM", 0x200F: "RLM",
    0x2060: "WJ", 0x2061: "FA", 0x2062: "IT", 0x2063: "IS", 0x2064: "IP", 0x180E: "MVS",
    0x034F: "CGJ", 0x00AD: "SHY",
}
_INVISIBLE_CHARS = frozenset(map(chr, INVISIBLE))
AFFIX_LENGTHS = (10, 20, 40)
WHITESPACE_LIMIT = 0.10


def check_domain(texts: Sequence[str], shared_limit: float = 0.10) -> dict[str, Any]:
    n = len(texts)
    if n == 0:
        return {"docs": 0, "flags": ["no documents"]}
    lead = sum(1 for t in texts if t[:1].isspace())
    trail = sum(1 for t in texts if t[-1:].isspace())
    invisible_docs = 0
    invisible: Counter[str] = Counter()
    for t in texts:
        found = _INVISIBLE_CHARS.intersection(t)
        if found:
            invisible_docs += 1
            for ch in found:
                invisible[INVISIBLE[ord(ch)]] += t.count(ch)
    first = Counter(t[:1] for t in texts)
    first_char, first_count = first.most_common(1)[0]
    kinds = Counter(
        "letter" if c.isalpha() else "digit" if c.isdigit() else "space" if c.isspace() else "punct" for c in (t[:1] for t in texts)
    )
    prefixes, suffixes = {}, {}
    flags: list[str] = []
    for k in AFFIX_LENGTHS:
        for name, table, pick in (("prefix", prefixes, lambda t, k=k: t[:k]), ("suffix", suffixes, lambda t, k=k: t[-k:])):
            eligible = [pick(t) for t in texts if len(t) >= k]
            if not eligible:
                continue
            text, count = Counter(eligible).most_common(1)[0]
            share = count / n
            table[str(k)] = {"text": text, "docs": count, "share": round(share, 4)}
            if share > shared_limit:
                flags.append(f"{name} {text!r} ({k} chars) starts {share:.0%} of documents" if name == "prefix"
                             else f"suffix {text!r} ({k} chars) ends {share:.0%} of documents")
    if lead / n > WHITESPACE_LIMIT:
        flags.append(f"{lead / n:.0%} of documents start with whitespace")
    if trail / n > WHITESPACE_LIMIT:
        flags.append(f"{trail / n:.0%} of documents end with whitespace")
    if invisible_docs:
        flags.append(f"{invisible_docs} documents contain invisible or bidi characters")
    return {
        "docs": n,
        "leading_whitespace": {"docs": lead, "share": round(lead / n, 4)},
        "trailing_whitespace": {"docs": trail, "share": round(trail / n, 4)},
        "invisible": {"docs": invisible_docs, "share": round(invisible_docs / n, 4), "chars": dict(sorted(invisible.items()))},
        "first_char": {
            "top": [{"char": c, "share": round(k / n, 4)} for c, k in sorted(first.items(), key=lambda x: (-x[1], x[0]))[:10]],
            "max_share": round(first_count / n, 4),
            "max_char": first_char,
            "kinds": {k: round(v / n, 4) for k, v in sorted(kinds.items())},
        },
        "prefix": prefixes,
        "suffix": suffixes,
        "flags": flags,
    }
