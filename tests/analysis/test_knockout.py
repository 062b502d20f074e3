import numpy as np
import pytest

from moe_emergence.analysis.knockout import knockout_table


def test_delta_table():
    base = {"code": 2.0, "math": 3.0}
    knocked = {
        (2, 0): {"code": 2.5, "math": 3.1},  # hurts code most
        (2, 1): {"code": 2.0, "math": 3.6},  # hurts math most
    }
    shares = {2: np.array([[0.7, 0.3], [0.2, 0.8]])}
    t = knockout_table(base, knocked, shares, domains=["code", "math"])
    assert len(t) == 4
    row = t[(t.expert == 0) & (t.domain == "code")].iloc[0]
    assert (
        row.delta == pytest.approx(0.5)
        and row.rel_delta == pytest.approx(0.25)
        and row.share == 0.7
    )
    worst = t.loc[t["delta"].idxmax()]
    assert worst["delta"] == pytest.approx(0.6) and worst["domain"] == "math" and worst["expert"] == 1


def test_missing_domain_loss_is_named():
    with pytest.raises(ValueError, match="layer 3 expert 1: no loss for domain 'math'"):
        knockout_table({"code": 1.0, "math": 1.0}, {(3, 1): {"code": 1.2}})
