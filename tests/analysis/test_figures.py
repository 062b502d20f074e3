"""Every figure renders from the results to a PNG, or is skipped when its data is absent."""

from __future__ import annotations

import dataclasses

import pandas as pd

from moe_emergence.analysis import figures as F

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_renders_to_png(results, tmp_path):
    drawn = F.draw_all(results, None, tmp_path)
    names = [n for n, _ in drawn]
    assert names == [n for n, _ in F.FIGURES if n != "token_types.png"]  # no token types in the synthetic run
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name


def test_figures_without_data_are_skipped(results, tmp_path):
    empty = dataclasses.replace(results, routing=pd.DataFrame(), knockout=pd.DataFrame(), saturation=pd.DataFrame(),
                                router_curves=pd.DataFrame(), loads=pd.DataFrame())
    names = [n for n, _ in F.draw_all(empty, None, tmp_path)]
    assert "domain_heatmaps.png" not in names and "knockout.png" not in names and "training_curves.png" in names
