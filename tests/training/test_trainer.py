"""The training loop on a tiny model: resume equals uninterrupted, DDP equals one process, NaN stops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_emergence.core.config import ArchParams, ModelParams, TrainParams
from moe_emergence.model.checkpoint import load_model
from moe_emergence.model.gpt2 import make_dense, to_moe
from moe_emergence.model.spec import MoESpec
from moe_emergence.training.trainer import PackedSplit, RunSpec, Trainer, TrainingError

ARCH = ArchParams(n_layer=2, n_embd=32, n_head=2, n_positions=16)
MODEL = ModelParams(arch=ARCH, moe_layers=[1], n_experts=4, top_k=1, upcycle_noise=0.01)


def tiny_data(seed: int = 0, n_train: int = 24, n_eval: int = 6) -> tuple[PackedSplit, PackedSplit]:
    rng = np.random.default_rng(seed)
    # Three "domains" drawing from different id ranges, so routing has something to see.
    def make(n):
        codes = np.arange(n) % 3
        ids = np.stack([rng.integers(1000 * c, 1000 * c + 300, size=16) for c in codes]).astype(np.uint16)
        return PackedSplit(ids=ids, domain_codes=codes, domain_names=["code", "math", "prose"])

    return make(n_train), make(n_eval)


def train_params(**kw) -> TrainParams:
    base = TrainParams(max_steps=6, batch_size=4, grad_accum=2, log_every=2, eval_every=3,
                       snapshot_every=3, resume_every=2, eval_batch_size=4, device="cpu",
                       collapse_min_live=2)
    base = base.model_copy(update={"optim": base.optim.model_copy(update={"lr": 3e-3, "warmup_frac": 0.2})})
    return base.model_copy(update=kw)


def make_model(moe: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    dense = make_dense(ARCH)
    return to_moe(dense, MoESpec.from_params(MODEL), seed=0) if moe else dense


def spec_for(tmp: Path, name: str, tp: TrainParams, moe: bool = True) -> RunSpec:
    return RunSpec(name=name, train=tp, model=MODEL if moe else None, model_out=tmp / "models" / name,
                   report_out=tmp / "reports" / name, work_dir=tmp / "work" / name)


def final_state(tmp: Path, name: str) -> dict[str, torch.Tensor]:
    model, _ = load_model(tmp / "models" / name)
    return model.state_dict()


def test_run_publishes_model_metrics_and_plots(tmp_path):
    train, evals = tiny_data()
    summary = Trainer(spec_for(tmp_path, "moe", train_params()), make_model(), train, evals).run()
    metrics = json.loads((tmp_path / "reports/moe/metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    assert metrics["steps"] == 6
    for key in ("lm_loss", "lm_loss_macro", "lm_loss_code", "lm_loss_math", "lm_loss_prose", "ppl"):
        assert np.isfinite(metrics["eval"][key])
    assert metrics["eval"]["ppl"] == pytest.approx(np.exp(metrics["eval"]["lm_loss"]))
    assert 0 < metrics["router"]["max_share"] <= 1
    assert metrics["collapse"]["detected"] in (0, 1)
    snaps = sorted(p.name for p in (tmp_path / "models/moe/snapshots").iterdir())
    assert snaps == ["step_000003"]  # the final model is not saved twice
    assert (tmp_path / "reports/moe/plots/metrics/train/lm_loss.tsv").exists()
    assert not (tmp_path / "work/moe").exists()  # work in progress is gone once published


def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    train, evals = tiny_data()
    # state saved at step 3, in the middle of the logging window of steps 3-4
    tp = train_params(resume_every=3)
    Trainer(spec_for(tmp_path / "a", "moe", tp), make_model(), train, evals).run()

    killed = Trainer(spec_for(tmp_path / "b", "moe", tp), make_model(), train, evals)
    real_step = killed.train_step

    def dying_step():
        if killed.step == 4:  # resumable state exists at step 3
            raise KeyboardInterrupt
        real_step()

    monkeypatch.setattr(killed, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert not (tmp_path / "b/models/moe").exists()  # nothing published by the killed run
    assert (tmp_path / "b/work/moe/state.pt").exists()

    resumed = Trainer(spec_for(tmp_path / "b", "moe", tp), make_model(), train, evals)
    resumed.run()
    a, b = final_state(tmp_path / "a", "moe"), final_state(tmp_path / "b", "moe")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ma = json.loads((tmp_path / "a/reports/moe/metrics.json").read_text())
    mb = json.loads((tmp_path / "b/reports/moe/metrics.json").read_text())
    assert ma["eval"] == pytest.approx(mb["eval"]) and ma["collapse"] == mb["collapse"]
    assert ma["router"]["layer1"] == pytest.approx(mb["router"]["layer1"])
    rows = (tmp_path / "b/reports/moe/plots/metrics/train/lm_loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["2", "4", "6"]  # no duplicated steps
    # every curve, the window that straddles the resume included, as if never interrupted
    curves = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a/reports/moe/plots").rglob("*.tsv"))
    assert curves == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b/reports/moe/plots").rglob("*.tsv"))
    for rel in curves:
        ta, tb = ((tmp_path / x / rel).read_text().splitlines() for x in ("a", "b"))
        assert [r.split("\t")[0] for r in ta] == [r.split("\t")[0] for r in tb], rel
        va = [float(r.split("\t")[1]) for r in ta[1:]]
        assert va == pytest.approx([float(r.split("\t")[1]) for r in tb[1:]], rel=1e-6), rel


def test_resume_with_a_different_config_starts_fresh(tmp_path, monkeypatch, capsys):
    train, evals = tiny_data()
    t = Trainer(spec_for(tmp_path, "moe", train_params()), make_model(), train, evals)
    real = t.train_step
    monkeypatch.setattr(t, "train_step", lambda: (_ for _ in ()).throw(KeyboardInterrupt) if t.step == 3 else real())
    with pytest.raises(KeyboardInterrupt):
        t.run()
    other = Trainer(spec_for(tmp_path, "moe", train_params(max_steps=4)), make_model(), train, evals)
    assert other.try_resume() is False
    assert "config differs" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    train, evals = tiny_data()
    model = make_model(moe=False)
    with torch.no_grad():
        model.transformer.wte.weight.fill_(float("nan"))
    t = Trainer(spec_for(tmp_path, "dense", train_params(), moe=False), model, train, evals)
    with pytest.raises(TrainingError, match="non-finite loss at step 1"):
        t.run()
    assert not (tmp_path / "models/dense").exists()


