"""Near-duplicate detection: MinHash signatures over token shingles, banded LSH.

A document is cut into word and symbol tokens (`\\w+` runs and single other
characters, lower-cased); a shingle is `k` consecutive tokens. Shingle hashes
are computed with numpy from per-token CRC32s (deterministic across runs and
machines, unlike Python's `hash`), then fed to `datasketch`'s MinHash, whose
LSH index finds candidate pairs whose estimated Jaccard similarity is then
checked against the threshold.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

_TOKEN = re.compile(r"\w+|[^\w\s]")
_MIX = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: mixes token hashes into a shingle hash
_MINHASH_SEED = 1
_SCHEME = "affine32"  # 32-bit shingle hashes in, datasketch's 2.x default scheme


def shingle_hashes(text: str, k: int, cache: dict[str, int] | None = None) -> np.ndarray:
    """Distinct 32-bit hashes of the k-token shingles of `text` (one shingle if shorter)."""
    cache = {} if cache is None else cache
    toks = _TOKEN.findall(text.lower())
    if not toks:
        return np.zeros(1, dtype=np.uint32)
    ids = np.fromiter((cache.get(t) or cache.setdefault(t, zlib.crc32(t.encode()) | 1) for t in toks),
                      dtype=np.uint64, count=len(toks))
    n = max(1, len(ids) - k + 1)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(min(k, len(ids))):
            h = (h ^ ids[j : j + n]) * _MIX
    return np.unique(((h >> np.uint64(32)) ^ (h & np.uint64(0xFFFFFFFF))).astype(np.uint32))


def _identity(x):  # datasketch hashes each element with `hashfunc`; ours are hashed already
    return x


def signatures(texts: Sequence[str], k: int, num_perm: int) -> list[LeanMinHash]:
    cache: dict[str, int] = {}
    perms = MinHash(num_perm=num_perm, seed=_MINHASH_SEED, scheme=_SCHEME).permutations  # drawn once
    out = []
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=_MINHASH_SEED, hashfunc=_identity, permutations=perms,
                    scheme=_SCHEME)
        m.update_batch(shingle_hashes(text, k, cache))
        out.append(LeanMinHash(m))
    return out


@dataclass(frozen=True)
class NearDup:
    query: int  # index into the query documents
    match: int  # index into the indexed documents
    jaccard: float  # MinHash estimate


def find_near_duplicates(
    indexed: Sequence[LeanMinHash], queries: Sequence[LeanMinHash], threshold: float, num_perm: int
) -> list[NearDup]:
    """For each query with a near-twin among `indexed` (estimated Jaccard >= threshold), its best match."""
    if not indexed or not queries:
        return []
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(indexed):
            session.insert(i, m, check_duplication=False)
    found = []
    for q, m in enumerate(queries):
        best: tuple[float, int] | None = None
        for i in sorted(lsh.query(m)):  # sorted: set order must not decide ties
            j = m.jaccard(indexed[i])
            if j >= threshold and (best is None or j > best[0]):
                best = (j, i)
        if best is not None:
            found.append(NearDup(q, best[1], best[0]))
    return found
