import numpy as np
import pytest

from moe_emergence.analysis.agreement import (
    distribution_agreement,
    router_saturation,
    routing_agreement,
)


def test_identical_routings_agree_fully_and_independent_ones_at_chance():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0])
    a = rng.choice(8, size=50_000, p=p)
    same = routing_agreement(a, a, 8)
    assert same["agreement"] == 1.0 and same["chance"] == pytest.approx((p**2).sum(), abs=0.01)
    b = rng.choice(8, size=50_000, p=p)
    ind = routing_agreement(a, b, 8)
    assert ind["agreement"] == pytest.approx(ind["chance"], abs=0.01)


def test_top2_sets_count_their_overlap():
    a = np.array([[0, 1], [2, 3], [4, 5]])
    b = np.array([[1, 0], [3, 6], [6, 7]])
    assert routing_agreement(a, b, 8)["agreement"] == pytest.approx((1 + 0.5 + 0) / 3)
    with pytest.raises(ValueError, match="same shape"):
        routing_agreement(a, b[:2], 8)


def test_agreement_per_group():
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 0, 0, 0])
    out = routing_agreement(
        a, b, 2, groups=np.array(["math", "math", "code", "code"]), group_names=["code", "math"]
    )
    assert out["per_group"]["math"]["agreement"] == 1.0
    assert out["per_group"]["code"]["agreement"] == 0.0
    assert out["agreement"] == 0.5


def test_saturation_is_ordered_by_step():
    final = np.array([0, 1, 2, 3])
    snaps = {20: np.array([0, 1, 2, 0]), 10: np.array([3, 3, 3, 3])}
    sat = router_saturation(snaps, final, 4)
    assert [s["step"] for s in sat] == [10, 20]
    assert [s["agreement"] for s in sat] == [0.25, 0.75]


def test_distribution_agreement_against_other_domains():
    train = np.array([[8, 2, 0], [0, 2, 8]])
    ev = np.array([[80, 20, 0], [0, 30, 70]])
    out = distribution_agreement(train, ev, ["code", "math"])
    assert out["code"]["same"] == pytest.approx(1.0)
    assert out["code"]["other_domains"] == pytest.approx(0.2)
    assert out["math"]["same"] == pytest.approx(0.2 + 0.7)
