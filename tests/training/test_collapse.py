import torch

from moe_emergence.training.collapse import CollapseDetector


def frac(*v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.sum()


BALANCED = frac(1, 1, 1, 1, 1, 1, 1, 1)
SKEWED = frac(70, 5, 5, 5, 5, 4, 3, 3)


def test_three_consecutive_hits_detect_collapse_and_a_clean_check_resets():
    d = CollapseDetector(threshold=0.6, patience=3, min_live=2)
    assert not d.observe(10, {2: SKEWED, 3: BALANCED})
    assert not d.observe(20, {2: SKEWED, 3: BALANCED})
    assert not d.observe(30, {2: BALANCED, 3: BALANCED})  # resets the streak
    assert not d.observe(40, {2: SKEWED, 3: BALANCED})
    assert not d.observe(50, {2: SKEWED, 3: BALANCED})
    assert d.observe(60, {2: SKEWED, 3: BALANCED})
    r = d.record
    assert r.detected and r.step == 60 and r.layer == 2 and r.expert == 0
    assert r.share > 0.6


def test_record_is_never_overwritten():
    d = CollapseDetector(threshold=0.6, patience=1, min_live=2)
    assert d.observe(5, {3: SKEWED})
    first = d.record
    assert not d.observe(6, {2: frac(0, 0, 0, 0, 0, 0, 0, 1)})
    assert d.record == first


def test_too_few_live_experts_is_a_collapse_even_below_the_share_threshold():
    d = CollapseDetector(threshold=0.9, patience=2, min_live=3)
    two_alive = frac(50, 50, 0, 0, 0, 0, 0, 0)
    d.observe(1, {0: two_alive})
    assert d.observe(2, {0: two_alive})
    assert "live experts" in d.record.reason


def test_checks_before_warmup_do_not_count():
    d = CollapseDetector(threshold=0.6, patience=2, min_live=1, warmup=100)
    for step in (10, 20, 30):
        assert not d.observe(step, {0: SKEWED})
    assert d.streak == 0
    d.observe(100, {0: SKEWED})
    assert d.observe(110, {0: SKEWED})


def test_state_round_trip():
    d = CollapseDetector(patience=2)
    d.observe(1, {0: SKEWED})
    e = CollapseDetector(patience=2)
    e.load_state_dict(d.state_dict())
    assert e.observe(2, {0: SKEWED}) and e.record.step == 2
