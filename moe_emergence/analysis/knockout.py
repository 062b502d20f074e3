"""Expert knockout: per-domain change of eval loss when one expert is disabled.

The stage measures the losses (the knocked-out expert's tokens go to their
next choice); this module turns them into the delta table and a summary that
asks whether the damage is domain-selective where the routing is: for each
knocked-out expert, is the most hurt domain the one that routes the most
tokens to it?
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


def knockout_summary(table: pd.DataFrame) -> dict[str, object]:
    """Per layer: largest delta, and how often the most hurt domain is the most routed one.

    `match_rate` is the fraction of experts whose largest-delta domain is the
    domain with the largest share of its tokens (needs the `share` column);
    chance is 1/|D|. Also the Pearson correlation of delta with share.
    """
    out: dict[str, object] = {}
    if table.empty:
        return out
    n_dom = table["domain"].nunique()
    for layer, g in table.groupby("layer"):
        worst = g.loc[g["delta"].idxmax()]
        entry: dict[str, object] = {
            "max_delta": float(worst["delta"]),
            "max_delta_expert": int(worst["expert"]),
            "max_delta_domain": str(worst["domain"]),
            "mean_delta": float(g["delta"].mean()),
            "chance_match": 1.0 / n_dom,
        }
        if "share" in g:
            by_exp = g.groupby("expert")
            hurt = by_exp.apply(
                lambda x: x.loc[x["delta"].idxmax(), "domain"], include_groups=False
            )
            routed = by_exp.apply(
                lambda x: x.loc[x["share"].idxmax(), "domain"], include_groups=False
            )
            entry["match_rate"] = float((hurt == routed).mean())
            sd = g[["delta", "share"]].std()
            entry["corr_delta_share"] = (
                float(np.corrcoef(g["delta"], g["share"])[0, 1]) if (sd > 0).all() else float("nan")
            )
        out[str(layer)] = entry
    return out
