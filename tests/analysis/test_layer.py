import time

import numpy as np
import pytest

from moe_emergence.analysis.layer import LayerRouting, analyze_layer, load_summary
from moe_emergence.config import AnalyzeParams, ParamsError, parse_params

DOMAINS = ["code", "math", "prose"]


def test_one_layer_of_the_cpu_default_size_is_fast(make_routing):
    # ~300k eval tokens, the top of the CPU default's range; the whole analysis runs
    # this per MoE layer and variant (2 x 3), inside a 2-minute budget.
    r = make_routing(
        docs_per_domain=(700, 700, 700), doc_len=(60, 220), vocab=30000, p_token=0.5, p_domain=0.1
    )
    assert len(r["expert"]) > 250_000
    t = time.perf_counter()
    out = analyze_layer(LayerRouting(**r), 8, DOMAINS, AnalyzeParams())
    assert time.perf_counter() - t < 10.0
    assert set(out) == {"load", "domain", "heldout", "information", "consecutive"}
    assert out["domain"]["mi_ratio"]["value"] > out["domain"]["mi_ratio"]["null_p95"]


def test_load_summary():
    s = load_summary(np.array([0, 0, 0, 1]), 4)
    assert s["fractions"] == [0.75, 0.25, 0.0, 0.0] and s["top_share"] == 0.75 and s["dead"] == 2


def test_bad_routing_arrays_are_named():
    with pytest.raises(ValueError, match="doc has 2"):
        LayerRouting(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3))
    empty = LayerRouting(*(np.zeros(0, dtype=np.int64) for _ in range(5)))
    with pytest.raises(ValueError, match="no routed tokens"):
        analyze_layer(empty, 8, DOMAINS, AnalyzeParams())


def test_unknown_format_perturbation_is_a_params_error():
    with pytest.raises(ParamsError, match=r"analyze.format_perturbations\[1\].*known: prefix"):
        parse_params({"analyze": {"format_perturbations": ["prefix", "italics"]}})
