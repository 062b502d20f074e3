"""The package's layers import downward only: config under everything; data and model side by
side; training and analysis each on model and data, never on each other; stages on top."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.pipeline_repo import ROOT

PKG = ROOT / "moe_emergence"
# layer -> the layers it may import (besides itself); `core` (config, atomic, cli, allocator,
# hub, errors) is the base.
ALLOWED = {
    "base": set(),
    "data": {"base"},
    "model": {"base"},
    "training": {"base", "data", "model"},
    "analysis": {"base", "data", "model"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return "base"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("").parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join([*rel[: len(rel) - node.level], *([mod] if mod else [])])
            out.add(mod)
    return {m for m in out if m == "moe_emergence" or m.startswith("moe_emergence.")}


def test_every_import_goes_down_a_layer():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        here = layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for mod in imports(path):
            there = layer_of(mod)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(ROOT)} ({here}) imports {mod} ({there})")
    assert not wrong, "\n".join(wrong)


def test_config_imports_nothing_of_the_project():
    assert imports(PKG / "core" / "config.py") == set()
    for path in (PKG / "core").glob("*.py"):
        assert all(m.startswith("moe_emergence.core") for m in imports(path)), path


def test_model_owns_its_spec():
    """The model code reads specs (model/spec.py), never the pipeline's params."""
    for path in (PKG / "model").rglob("*.py"):
        assert "moe_emergence.core.config" not in imports(path), path
