"""Split: train/eval per domain, by group, with a proof that nothing leaks.

Assignment. Each group gets a number u in [0, 1) from SHA-256 of
(seed, group id). Groups with u < eval_fraction go to eval: a group's side
depends only on its own id, so adding documents or groups never moves them.
Eval is then brought to a size rule in documents,
min(max(eval_min, floor(eval_fraction * n)), floor(eval_max_fraction * n)),
in u order: while eval holds more than the cap, the groups with the largest u
leave; while it holds fewer than the rule's count, the train groups with the
smallest u join (a group that would break the cap is skipped). Only these
top-up groups can change sides when the corpus grows. With `eval_count`, eval
is filled in u order to that many documents instead. Last, eval gets at least
`eval_min_groups` groups (in u order, whatever the document cap says, while
train keeps at least as many): the group is the unit of resampling in the
analysis, and a handful of groups cannot carry an interval.

Leakage proof. (1) No content hash is on both sides: an eval document whose
normalised text equals a train document's is dropped (fetch's dedupe makes
this zero unless the input skipped it). (2) Near-duplicates: MinHash/LSH
over token shingles; an eval document with an estimated Jaccard similarity of
at least `near_dup_threshold` to any train document is dropped. Both counts go
to the report, with the pairs found.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from moe_emergence.core.atomic import atomic_dir, write_json
from moe_emergence.core.config import SplitParams
from moe_emergence.data.documents import domain_files, read_docs, read_provenance, write_docs
from moe_emergence.core.errors import DataError
from moe_emergence.data.neardup import find_near_duplicates, signatures


def group_key(group_id: str, seed: int) -> float:
    """A stable number in [0, 1) for a group: the same on every machine and Python version."""
    h = hashlib.sha256(f"{seed}\x00{group_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def eval_bounds(n_docs: int, sp: SplitParams) -> tuple[int, int]:
    """(floor, cap) on the number of eval documents for a domain of `n_docs` documents."""
    if sp.eval_count is not None:
        k = min(sp.eval_count, n_docs)
        return k, k
    cap = math.floor(sp.eval_max_fraction * n_docs)
    return min(max(sp.eval_min, math.floor(sp.eval_fraction * n_docs)), cap), cap


@dataclass(frozen=True)
class Assignment:
    eval_groups: frozenset[str]
    by_hash: int  # eval groups chosen by the hash threshold alone
    removed_for_cap: int
    added_for_floor: int
    added_for_groups: int = 0  # groups added to reach split.eval_min_groups


def assign_groups(group_sizes: dict[str, int], sp: SplitParams) -> Assignment:
    """Which groups go to eval; `group_sizes` maps group id to its number of documents."""
    n = sum(group_sizes.values())
    lo, hi = eval_bounds(n, sp)
    order = sorted(group_sizes, key=lambda g: (group_key(g, sp.seed), g))
    threshold = 0.0 if sp.eval_count is not None else sp.eval_fraction
    chosen = [g for g in order if group_key(g, sp.seed) < threshold]
    by_hash = len(chosen)
    size = sum(group_sizes[g] for g in chosen)
    removed = 0
    while size > hi and chosen:
        size -= group_sizes[chosen.pop()]
        removed += 1
    added = 0
    in_eval = set(chosen)
    for g in order:
        if size >= lo:
            break
        if g not in in_eval and size + group_sizes[g] <= hi:
            in_eval.add(g)
            size += group_sizes[g]
            added += 1
    # At least eval_min_groups groups, never more than half of them: train keeps the majority.
    want_groups = min(sp.eval_min_groups, len(order) // 2)
    added_groups = 0
    for g in order:
        if len(in_eval) >= want_groups:
            break
        if g not in in_eval:
            in_eval.add(g)
            added_groups += 1
    return Assignment(frozenset(in_eval), by_hash, removed, added, added_groups)


def split_domain(table: pa.Table, sp: SplitParams) -> tuple[pa.Table, dict[str, Any]]:
    """The domain's documents with a `split` column (near-twins of train dropped from eval), and counts."""
    domain = table.column("domain")[0].as_py() if table.num_rows else "?"
    groups = table.column("group_id").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    n_chars = table.column("n_chars").to_pylist()
    sizes: dict[str, int] = defaultdict(int)
    for g in groups:
        sizes[g] += 1
    a = assign_groups(dict(sizes), sp)
    side = ["eval" if g in a.eval_groups else "train" for g in groups]
    train_idx = [i for i, s in enumerate(side) if s == "train"]
    eval_idx = [i for i, s in enumerate(side) if s == "eval"]

    # (1) exact: no normalised text on both sides
    train_hashes = {hashes[i] for i in train_idx}
    exact = [i for i in eval_idx if hashes[i] in train_hashes]
    exact_set = set(exact)
    eval_idx = [i for i in eval_idx if i not in exact_set]

    # (2) near-duplicates: MinHash over shingles, eval queried against a train index
    texts = table.column("text")
    train_sig = signatures([texts[i].as_py() for i in train_idx], sp.shingle_size, sp.num_perm)
    eval_sig = signatures([texts[i].as_py() for i in eval_idx], sp.shingle_size, sp.num_perm)
    near = find_near_duplicates(train_sig, eval_sig, sp.near_dup_threshold, sp.num_perm)
    doc_ids = table.column("doc_id").to_pylist()
    pairs = [
        {"eval": doc_ids[eval_idx[d.query]], "train": doc_ids[train_idx[d.match]], "jaccard": round(d.jaccard, 4)}
        for d in near
    ]
    near_set = {eval_idx[d.query] for d in near}
    eval_keep = [i for i in eval_idx if i not in near_set]
    dropped = exact_set | near_set
    keep = [i for i in range(table.num_rows) if i not in dropped]

    out = table.take(pa.array(keep, type=pa.int64()))
    out = out.append_column("split", pa.array([side[i] for i in keep], type=pa.string()))
    out = out.replace_schema_metadata(table.schema.metadata)

    # the proof, re-checked on what is written
    final_train = {hashes[i] for i in train_idx}
    final_eval = {hashes[i] for i in eval_keep}
    shared = len(final_train & final_eval)
    straddling = len({groups[i] for i in train_idx} & {groups[i] for i in eval_keep})
    assert shared == 0 and straddling == 0, (domain, shared, straddling)

    lo, hi = eval_bounds(len(groups), sp)

    def count(idx: Sequence[int]) -> dict[str, int]:
        return {"docs": len(idx), "chars": sum(n_chars[i] for i in idx), "groups": len({groups[i] for i in idx})}

    report = {
        "input": count(range(len(groups))),
        "train": count(train_idx),
        "eval_assigned": count([i for i, s in enumerate(side) if s == "eval"]),
        "eval": count(eval_keep),
        "eval_rule": {
            "min_docs": lo, "max_docs": hi, "groups_by_hash": a.by_hash,
            "groups_removed_for_cap": a.removed_for_cap, "groups_added_for_floor": a.added_for_floor,
            "groups_added_for_min_groups": a.added_for_groups, "min_groups": sp.eval_min_groups,
        },
        "leakage": {
            "exact_dropped": len(exact),
            "near_dup_dropped": len(near),
            "near_dup_rate": len(near) / max(1, len(eval_idx)),
            "shared_content_hashes": shared,
            "groups_on_both_sides": straddling,
        },
        "near_dup_pairs": pairs,
    }
    return out, report


def run_split(sp: SplitParams, raw_dir: str | Path, out_dir: str | Path, report: str | Path) -> dict[str, Any]:
    files = domain_files(raw_dir, "fetch")
    domains: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        for domain, path in files.items():
            table = read_docs(path, "fetch")
            if table.num_rows == 0:
                raise DataError(f"{path}: no documents (re-run `dvc repro -s -f fetch`)")
            out, rep = split_domain(table, sp)
            if rep["eval"]["docs"] == 0:
                rep["warning"] = "no eval documents: raise split.eval_min or add documents"
            if rep["train"]["docs"] == 0:
                raise DataError(
                    f"split: domain {domain!r} has no train documents ({table.num_rows} documents in "
                    f"{rep['input']['groups']} groups); add documents or lower split.eval_count"
                )
            write_docs(tmp / f"{domain}.parquet", out)
            domains[domain] = rep
            assert read_provenance(out) == read_provenance(table)
    summary = {
        "domains": domains,
        "leakage": {
            "shared_content_hashes": sum(d["leakage"]["shared_content_hashes"] for d in domains.values()),
            "groups_on_both_sides": sum(d["leakage"]["groups_on_both_sides"] for d in domains.values()),
            "near_dup_dropped": sum(d["leakage"]["near_dup_dropped"] for d in domains.values()),
        },
        "params": {"seed": sp.seed, "near_dup_threshold": sp.near_dup_threshold,
                   "shingle_size": sp.shingle_size, "num_perm": sp.num_perm},
    }
    write_json(report, summary)
    return summary
