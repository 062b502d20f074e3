"""Where each domain's documents come from, chosen per domain by `data.sources.<domain>.kind`.

Every source returns `(provenance, documents)`: a dict describing the source as
a whole (dataset id, revision, versions, licence, files) and a lazy iterator of
`RawDoc`, so that fetch can stop a stream once it has `max_docs` documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from moe_emergence.core.config import DataParams
from moe_emergence.data.documents import RawDoc
from moe_emergence.core.errors import DataError


def open_source(domain: str, data: DataParams) -> tuple[dict[str, Any], Iterator[RawDoc]]:
    src = data.sources[domain]
    if src.kind == "embedded":
        from moe_emergence.data.sources import embedded

        if domain == "code":
            return embedded.code_source(src)
        if domain == "math":
            return embedded.math_source(src, data.seed)
        if domain == "prose":
            return embedded.prose_source(data)
        raise DataError(f"data.sources.{domain}: there is no embedded corpus for domain {domain!r}")
    if src.kind == "hf":
        from moe_emergence.data.sources.hub import hub_source

        return hub_source(domain, src, data.seed, data.max_chars)
    if src.kind == "local":
        from moe_emergence.data.sources.local import local_source

        return local_source(domain, src)
    raise DataError(f"data.sources.{domain}.kind: unknown source kind {src.kind!r} (embedded, hf, local)")
