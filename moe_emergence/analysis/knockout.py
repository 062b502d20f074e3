"""Expert knockout: per-domain change of eval loss when one expert is disabled.

The stage measures the losses (the knocked-out expert's tokens go to their
next choice); this module turns them into the delta table. A domain's loss
changes more the more of its tokens the expert takes, so a large change where
the routing sends many tokens is expected without any functional
specialization: the report shows the changes and claims no chance level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def knockout_table(
    base: Mapping[str, float],
    knocked: Mapping[tuple[int, int], Mapping[str, float]],
    shares: Mapping[int, np.ndarray] | None = None,
    domains: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows (layer, expert, domain, base_loss, loss, delta, rel_delta[, share]).

    `base`: per-domain eval loss of the intact model; `knocked[(layer,
    expert)]`: per-domain loss with that expert disabled; `shares[layer]`:
    optional P(expert|domain) [D, E] in `domains` order, added as `share`.
    """
    domains = list(domains) if domains is not None else list(base)
    rows = []
    for (layer, expert), losses in sorted(knocked.items()):
        for j, dom in enumerate(domains):
            if dom not in losses or dom not in base:
                raise ValueError(
                    f"knockout of layer {layer} expert {expert}: no loss for domain {dom!r}"
                )
            b, k = float(base[dom]), float(losses[dom])
            row = {
                "layer": int(layer),
                "expert": int(expert),
                "domain": dom,
                "base_loss": b,
                "loss": k,
                "delta": k - b,
                "rel_delta": (k - b) / b if b else float("nan"),
            }
            if shares is not None and layer in shares:
                row["share"] = float(np.asarray(shares[layer])[j, expert])
            rows.append(row)
    return pd.DataFrame(rows)
