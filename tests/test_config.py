import pytest
import yaml

from moe_emergence.core.config import ParamsError, load_params, parse_params


def _raw():
    with open("params.yaml") as f:
        return yaml.safe_load(f)


def test_default_params_validate():
    p = load_params("params.yaml")
    assert p.model.n_experts == 8
    m, t = p.variant("no_lb")
    # no_lb runs as long as dense: its collapse is recorded, not a reason to stop (equal steps)
    assert m.lb_coef == 0.0 and t.collapse_stop is False and t.max_steps == p.train.max_steps
    assert p.model.router_init == "centered" and p.seeds == [0]
    assert not p.is_moe("dense") and p.is_moe("moe")


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda r: r["model"].update(bogus=1), "model.bogus"),
        (lambda r: r.update(modle={}), "modle"),
        (lambda r: r["model"].update(top_k=9), "model.top_k"),
        (lambda r: r["model"].update(n_experts="eight"), "model.n_experts"),
        (lambda r: r["model"].update(moe_layers=[7]), "model.moe_layers"),
        (lambda r: r["model"].update(lb_coef=-0.1), "model.lb_coef"),
        (lambda r: r["pack"].update(block_size=4), "pack.block_size"),
        (lambda r: r["sample"].update(size_mb=0), "sample.size_mb"),
        (lambda r: r["data"]["sources"]["code"].update(kind="ftp"), "data.sources.code.kind"),
        (lambda r: r["data"]["sources"].update(music={"kind": "embedded"}), "data.sources.music.kind"),
        (lambda r: r["train"].update(max_steps=0), "train.max_steps"),
        (lambda r: r["variants"]["no_lb"].update(lb_cof=0), "variants.no_lb.lb_cof"),
        (lambda r: r.update(run_variants=["moe", "nope"]), "run_variants"),
        (lambda r: r.update(seeds=[0, 0]), "seeds"),
        (lambda r: r["pack"].update(vocab_min_count=-1), "pack.vocab_min_count"),
        (lambda r: r["model"].update(router_init="zeros"), "model.router_init"),
        (lambda r: r["analyze"].update(untrained_seeds=1), "analyze.untrained_seeds"),
        # the dense baseline always runs; a repeated variant would be trained and analysed twice
        (lambda r: r.update(run_variants=["moe", "dense"]), "run_variants"),
        (lambda r: r.update(run_variants=["moe", "moe"]), "run_variants"),
        # one expert: the real conflict is the collapse floor, named with the MoE key
        (lambda r: r["model"].update(n_experts=1), "model.n_experts"),
        # checked before pack replaces data/packed, not after
        (lambda r: r["pack"].update(block_size=256), "pack.block_size"),
    ],
)
def test_bad_params_name_the_key(edit, key):
    raw = _raw()
    edit(raw)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_numbers_written_by_dvc_exp_are_cast():
    raw = _raw()
    raw["model"]["lb_coef"] = 0  # `dvc exp run -S model.lb_coef=0` writes an int
    raw["train"]["optim"]["lr"] = "1e-4"  # PyYAML reads 1e-4 without a dot as a string
    p = parse_params(raw)
    assert isinstance(p.model.lb_coef, float) and p.model.lb_coef == 0.0
    assert p.train.optim.lr == pytest.approx(1e-4)


def test_gpt2_profile_is_valid_and_mirrors_the_reference():
    p = load_params("profiles/gpt2.yaml")
    assert p.model.init == "gpt2" and p.model.moe_layers == [8, 9, 10, 11]
    assert p.pack.block_size == 512 and p.sample.size_mb == 10.0
    assert (p.train.batch_size, p.train.grad_accum, p.train.optim.lr) == (2, 4, 5e-5)
    assert p.base.max_steps == 0  # the pretrained checkpoint is the base
    # same top-level sections as the default profile, so one `cp` switches everything
    assert set(_raw()) == set(yaml.safe_load(open("profiles/gpt2.yaml")))
