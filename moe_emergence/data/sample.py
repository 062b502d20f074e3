"""Sample: a seeded shuffle, then truncation to the character budget of each domain.

The budget is `size_mb * 2**20` Python characters per domain, train and eval
together; each split gets its share of the
budget in proportion to its characters after the split, so eval keeps its
size relative to train. Documents are shuffled with a local RNG seeded from
(seed, domain, split), in doc-id order first so that the input order does not
matter, then taken while the running total is under the budget (the check
comes before adding, so the last document can overshoot).

Eval's share is capped at `eval_max_mb` characters (the groups, not the
characters, bound what its intervals can say, and every eval token is paid for
at every evaluation). Eval is drawn across its groups rather than as one prefix: the groups (a
template, a package, an article) in a seeded order, one document of each in
turn, then a second of each, and so on, until the eval budget is reached and at
least `eval_min_groups` groups are in (or every eval group is). A prefix of a
shuffle of long documents keeps a handful of them, and the analysis resamples
groups: a handful of groups carries no interval.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from moe_emergence.core.atomic import atomic_dir, write_json
from moe_emergence.core.config import SampleParams
from moe_emergence.data.documents import SPLITS, domain_files, read_docs, write_docs
from moe_emergence.core.errors import DataError


def budget_chars(size_mb: float) -> int:
    return int(size_mb * 2**20)


def shuffled_prefix(doc_ids: list[str], n_chars: list[int], budget: int, rng: random.Random) -> list[int]:
    """Indices of a seeded shuffle of the documents, cut once `budget` characters are reached."""
    order = sorted(range(len(doc_ids)), key=doc_ids.__getitem__)
    rng.shuffle(order)
    taken: list[int] = []
    total = 0
    for i in order:
        if total >= budget:
            break
        taken.append(i)
        total += n_chars[i]
    return taken


def round_robin_prefix(
    doc_ids: list[str], group_ids: list[str], n_chars: list[int], budget: int, min_groups: int,
    rng: random.Random,
) -> list[int]:
    """Indices of documents taken one per group in turn (groups and their documents in a
    seeded order) until `budget` characters are reached and `min_groups` groups are covered."""
    by_group: dict[str, list[int]] = {}
    for i in sorted(range(len(doc_ids)), key=doc_ids.__getitem__):
        by_group.setdefault(group_ids[i], []).append(i)
    groups = sorted(by_group)
    rng.shuffle(groups)
    for g in groups:
        rng.shuffle(by_group[g])
    taken: list[int] = []
    total = 0
    rounds = max((len(v) for v in by_group.values()), default=0)
    for r in range(rounds):
        for k, g in enumerate(groups):
            if total >= budget and (r > 0 or k >= min_groups):
                return taken
            if r < len(by_group[g]):
                taken.append(by_group[g][r])
                total += n_chars[by_group[g][r]]
    return taken


def sample_domain(table: pa.Table, domain: str, sp: SampleParams) -> tuple[pa.Table, dict[str, Any]]:
    budget = budget_chars(sp.size_mb)
    split_col = table.column("split")
    parts = {s: table.filter(pc.equal(split_col, s)) for s in SPLITS}
    chars = {s: int(pc.sum(parts[s].column("n_chars")).as_py() or 0) for s in SPLITS}
    total = sum(chars.values())
    warning = None
    if total < budget:
        msg = (
            f"domain {domain!r} has {total:,} characters after fetch and split (train {chars['train']:,} + "
            f"eval {chars['eval']:,}) but sample.size_mb = {sp.size_mb} asks for {budget:,} "
            f"({total / 2**20:.3f} MB available)"
        )
        if sp.on_short == "error":
            raise DataError(f"{msg}; lower sample.size_mb, add documents, or set sample.on_short: warn")
        warning = msg + "; all of it is used"
        print(f"sample: warning: {warning}", file=sys.stderr)
    out_parts = []
    report: dict[str, Any] = {"budget_chars": budget, "available": {}, "sampled": {}}
    eval_budget = round(budget * chars["eval"] / total) if total else 0
    eval_budget = min(eval_budget, budget_chars(sp.eval_max_mb))
    budgets = {"train": budget - eval_budget, "eval": eval_budget}
    for s in SPLITS:
        part = parts[s]
        ids = part.column("doc_id").to_pylist()
        n = part.column("n_chars").to_pylist()
        rng = random.Random(f"{sp.seed}/{domain}/{s}")  # str seeds hash with SHA-512: stable
        if s == "eval":
            groups = part.column("group_id").to_pylist()
            idx = round_robin_prefix(ids, groups, n, budgets[s], sp.eval_min_groups, rng)
        else:
            idx = shuffled_prefix(ids, n, budgets[s], rng)
        out_parts.append(part.take(pa.array(idx, type=pa.int64())))
        report["available"][s] = {"docs": len(ids), "chars": chars[s]}
        report["sampled"][s] = {"docs": len(idx), "chars": sum(n[i] for i in idx), "budget_chars": budgets[s],
                                "groups": len(set(part.column("group_id").take(pa.array(idx, type=pa.int64())).to_pylist()))}
    if warning:
        report["warning"] = warning
    out = pa.concat_tables(out_parts).replace_schema_metadata(table.schema.metadata)
    return out, report


def run_sample(sp: SampleParams, split_dir: str | Path, out_dir: str | Path, report: str | Path) -> dict[str, Any]:
    files = domain_files(split_dir, "split")
    domains: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for domain, path in files.items():
            out, rep = sample_domain(read_docs(path, "split"), domain, sp)
            write_docs(tmp / f"{domain}.parquet", out)
            domains[domain] = rep
    summary = {"domains": domains, "params": {"seed": sp.seed, "size_mb": sp.size_mb}}
    write_json(report, summary)
    return summary
