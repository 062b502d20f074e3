import math

import numpy as np
import pytest

from moe_emergence.training.batches import BatchPlan
from moe_emergence.training.evaluation import group_by_domain
from moe_emergence.training.schedule import lr_factor, noise_scale, warmup_steps


def test_warmup_is_linear_and_cosine_ends_at_max_steps():
    max_steps, warm = 100, warmup_steps(100, 0.1)
    assert warm == 10
    assert lr_factor(0, max_steps, warm, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, max_steps, warm, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, max_steps, warm, 0.0) == pytest.approx(1.0)
    # halfway through the cosine part the factor is halfway to the floor
    assert lr_factor(55, max_steps, warm, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, max_steps, warm, 0.1) == pytest.approx(0.1)
    values = [lr_factor(s, max_steps, warm, 0.0) for s in range(warm, max_steps + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_horizon_is_max_steps_not_data_size():
    # The same step gives the same factor whatever else changes: only max_steps sets the horizon.
    assert lr_factor(50, 200, 20, 0.0) != lr_factor(50, 100, 20, 0.0)
    assert lr_factor(199, 200, 20, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 179 / 180)))


def test_router_noise_anneals_linearly_to_zero():
    assert noise_scale(0, 100, 0.25) == 1.0
    assert noise_scale(10, 100, 0.25) == pytest.approx(0.6)
    assert noise_scale(25, 100, 0.25) == 0.0
    assert noise_scale(80, 100, 0.25) == 0.0
    assert noise_scale(80, 100, 0.0) == 1.0


def test_batches_are_a_function_of_step_and_cover_every_block_once_per_epoch():
    plan = BatchPlan(n_blocks=12, batch_size=4, grad_accum=1, seed=3)
    epoch = np.concatenate([plan.indices(s, 0) for s in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))
    again = BatchPlan(n_blocks=12, batch_size=4, grad_accum=1, seed=3)
    assert (again.indices(7, 0) == plan.indices(7, 0)).all()
    assert not (BatchPlan(12, 4, 1, seed=4).indices(0, 0) == plan.indices(0, 0)).all()


def test_data_parallel_ranks_split_the_same_global_batch():
    one = BatchPlan(n_blocks=50, batch_size=8, grad_accum=2, seed=0)
    r0 = BatchPlan(50, 8, 2, seed=0, rank=0, world=2)
    r1 = BatchPlan(50, 8, 2, seed=0, rank=1, world=2)
    for step in range(5):
        for m in range(2):
            both = np.concatenate([r0.indices(step, m), r1.indices(step, m)])
            assert (both == one.indices(step, m)).all()
    with pytest.raises(ValueError, match="batch_size"):
        BatchPlan(50, 7, 1, seed=0, rank=0, world=2)


def test_per_domain_loss_is_grouped_per_sequence():
    per_seq = np.array([1.0, 3.0, 10.0, 2.0])
    codes = np.array([0, 0, 1, 2])
    out = group_by_domain(per_seq, codes, ["code", "math", "prose"])
    assert out == {"code": 2.0, "math": 10.0, "prose": 2.0}
