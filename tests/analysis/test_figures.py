import numpy as np
import pandas as pd

from moe_emergence.analysis import figures as F

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 10_000


def test_every_figure_renders_to_png(results, tmp_path):
    moe = results["variants"]["moe"]["layers"]
    steps = np.arange(0, 101, 25)
    out = []
    out.append(
        F.plot_domain_heatmaps(
            {f"layer {k}": v["domain"]["p_expert_given_domain"] for k, v in moe.items()},
            results["domains"],
            tmp_path / "heat.png",
        )
    )
    out.append(
        F.plot_lb_comparison(
            {
                v: {
                    k: lay["load"]["fractions"]
                    for k, lay in results["variants"][v]["layers"].items()
                }
                for v in ("moe", "no_lb")
            },
            tmp_path / "lb.png",
        )
    )
    traj = pd.DataFrame(
        [
            {"step": s, "layer": lay, "top_share": 0.2 + s / 200, "live_experts": 8 - s // 25}
            for s in steps
            for lay in (2, 3)
        ]
    )
    out.append(
        F.plot_collapse_trajectory(
            traj, tmp_path / "collapse.png", n_experts=8, threshold=0.6, collapse_step=75
        )
    )
    curves = pd.DataFrame(
        [
            {
                "variant": v,
                "step": s,
                "layer": lay,
                "entropy": 1 - s / 400,
                "top_share": 0.15 + s / 300,
            }
            for v in ("moe", "no_lb")
            for s in steps
            for lay in (2, 3)
        ]
    )
    out.append(
        F.plot_router_over_training(curves, tmp_path / "router.png", threshold=0.6, n_experts=8)
    )
    tt = moe["2"]["token_types"]
    out.append(
        F.plot_token_type_routing(
            {"layer 2": tt["fractions"]},
            tt["types"],
            tmp_path / "types.png",
            n_tokens=tt["n_tokens"],
        )
    )
    lc = pd.DataFrame(
        [
            {"variant": v, "step": s, "split": sp, "loss": 8 - s / 50}
            for v in ("dense", "moe")
            for s in steps
            for sp in ("train", "eval")
        ]
    )
    out.append(
        F.plot_training_curves(
            lc,
            {v: results["variants"][v]["eval"]["per_domain"] for v in ("dense", "moe")},
            tmp_path / "curves.png",
        )
    )
    out.append(
        F.plot_specialization_baselines(F.specialization_rows(results), tmp_path / "spec.png")
    )
    out.append(F.plot_token_identity(F.token_identity_rows(results), tmp_path / "tid.png"))
    sat = pd.DataFrame(
        [{"variant": "moe", "layer": k, **s} for k, lay in moe.items() for s in lay["saturation"]]
    )
    out.append(F.plot_saturation(sat, tmp_path / "sat.png"))
    out.append(F.plot_format_agreement(F.format_rows(results, "moe"), tmp_path / "fmt.png"))
    assert all(_is_png(p) for p in out)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers
