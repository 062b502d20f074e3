"""Sample: shuffle before truncate with a local seeded RNG, the per-domain character budget,
eval keeping its share, and a budget larger than the source."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from moe_emergence.core.config import SampleParams
from moe_emergence.data.documents import make_table
from moe_emergence.core.errors import DataError
from moe_emergence.data.sample import budget_chars, sample_domain


def _split_table(n_train=200, n_eval=20, size=1000):
    from moe_emergence.data.documents import content_hash

    rows = []
    for i in range(n_train + n_eval):
        text = f"doc {i:04d} " + "x" * (size - 9)
        rows.append({"doc_id": f"d{i:04d}", "group_id": f"g{i}", "domain": "prose", "source": "t", "text": text,
                     "n_chars": len(text), "content_hash": content_hash(text), "origin": "{}",
                     "split": "train" if i < n_train else "eval"})
    return make_table(rows, {"kind": "test"}, extra={"split": pa.string()})


def test_budget_and_shares():
    table = _split_table()  # 220,000 characters: 200k train, 20k eval
    sp = SampleParams(size_mb=0.05, eval_min_groups=0)  # 52,428 characters
    out, rep = sample_domain(table, "prose", sp)
    budget = budget_chars(0.05)
    assert rep["budget_chars"] == budget == 52428
    tr, ev = rep["sampled"]["train"], rep["sampled"]["eval"]
    assert tr["budget_chars"] + ev["budget_chars"] == budget
    assert ev["budget_chars"] == round(budget * 20000 / 220000)
    # the check comes before adding: each split overshoots by less than one document
    assert tr["budget_chars"] <= tr["chars"] < tr["budget_chars"] + 1000
    assert ev["budget_chars"] <= ev["chars"] < ev["budget_chars"] + 1000
    assert out.column("split").to_pylist() == ["train"] * tr["docs"] + ["eval"] * ev["docs"]


def test_shuffle_before_truncate_is_seeded_and_order_free():
    table = _split_table()
    a, _ = sample_domain(table, "prose", SampleParams(size_mb=0.05))
    ids = a.column("doc_id").to_pylist()
    assert ids[:5] != sorted(ids)[:5]  # shuffled, not the head
    b, _ = sample_domain(table.take(pa.array(list(reversed(range(table.num_rows))))), "prose", SampleParams(size_mb=0.05))
    assert b.column("doc_id").to_pylist() == ids  # input order does not matter
    c, _ = sample_domain(table, "prose", SampleParams(size_mb=0.05, seed=1))
    assert c.column("doc_id").to_pylist() != ids
    state = random.getstate()
    sample_domain(table, "prose", SampleParams(size_mb=0.05))
    assert random.getstate() == state  # the global RNG is never used


def test_budget_larger_than_source_says_how_much_there_is(capsys):
    table = _split_table()
    with pytest.raises(DataError, match=r"has 220,000 characters.*\(train 200,000 \+ eval 20,000\).*asks for 1,048,576"):
        sample_domain(table, "prose", SampleParams(size_mb=1.0))
    out, rep = sample_domain(table, "prose", SampleParams(size_mb=1.0, on_short="warn"))
    assert out.num_rows == table.num_rows and "warning" in rep
    assert "220,000 characters" in capsys.readouterr().err


def _grouped_eval(n_groups=20, per_group=10, size=1000):
    from moe_emergence.data.documents import content_hash

    rows = []
    for g in range(n_groups):
        for j in range(per_group):
            text = f"doc {g:02d}-{j:02d} " + "y" * (size - 11)
            rows.append({"doc_id": f"d{g:02d}{j:02d}", "group_id": f"g{g}", "domain": "math", "source": "t",
                         "text": text, "n_chars": len(text), "content_hash": content_hash(text), "origin": "{}",
                         "split": "eval"})
    for i in range(400):
        text = f"train {i:04d} " + "z" * (size - 11)
        rows.append({"doc_id": f"t{i:04d}", "group_id": f"t{i}", "domain": "math", "source": "t", "text": text,
                     "n_chars": len(text), "content_hash": content_hash(text), "origin": "{}", "split": "train"})
    return make_table(rows, {"kind": "test"}, extra={"split": pa.string()})


def test_eval_is_drawn_across_groups_not_from_a_few():
    """A prefix of shuffled documents would keep few groups; one document per group in turn keeps many."""
    table = _grouped_eval()  # 200 eval documents in 20 groups of 10
    out, rep = sample_domain(table, "math", SampleParams(size_mb=0.05, eval_min_groups=12))
    ev = out.filter(pa.compute.equal(out.column("split"), "eval"))
    groups = ev.column("group_id").to_pylist()
    # budget ~ 52,428 * 200k / 600k = 17.5k chars: 18 documents, from 18 different groups
    assert rep["sampled"]["eval"]["groups"] == len(set(groups)) == len(groups) == 18


def test_eval_keeps_the_minimum_number_of_groups_over_the_budget():
    table = _grouped_eval()
    out, rep = sample_domain(table, "math", SampleParams(size_mb=0.005, eval_min_groups=12))  # ~1.7k chars of eval
    assert rep["sampled"]["eval"]["groups"] == 12 and rep["sampled"]["eval"]["docs"] == 12
