"""dvc.yaml's `deps` must name every project module a stage's command imports.

A module missing from a stage's deps means that editing it does not re-run the
stage, so `dvc repro` would report stale outputs as up to date. The closure is
read from the source (every `import` and `from ... import`, also those inside
functions), so it errs on the side of listing too much, never too little.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import ROOT

PKG = "moe_emergence"


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PKG:
        return None
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg_parts = path.relative_to(ROOT).with_suffix("").parts[:-1]  # the package holding `path`
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def closure(script: Path) -> set[Path]:
    """Every project file `script` may import, transitively (packages bring their __init__)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in imported_modules(f):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                m = module_file(".".join(parts[:i]))
                if m is not None and m not in seen:
                    todo.append(m)
    return {p for p in seen if p != script}


def stages() -> dict[str, tuple[str, list[str]]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in spec.items():
        body = st.get("do", st)
        words = body["cmd"].split()
        # `python -m stages.x`: the package is imported from the tree the stage runs in (an
        # experiment's temporary copy too), never from wherever it was installed
        assert words[:2] == ["python", "-m"], f"{name}: {body['cmd']}"
        script = words[2].replace(".", "/") + ".py"
        deps = [d.replace("${item}", "x") for d in body["deps"]]
        out[name] = (script, deps)
    return out


def only_docstring(path: Path) -> bool:
    """A package `__init__` that holds nothing but its docstring does nothing when imported."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(stages()))
def test_every_imported_project_module_is_a_declared_dep(stage):
    script, deps = stages()[stage]
    assert script in deps, f"{stage}: its own script {script} is not in deps"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure(ROOT / script)
                     if not covered(p, deps) and not (p.name == "__init__.py" and only_docstring(p)))
    assert not missing, f"dvc.yaml stage {stage!r} imports these modules but does not list them in deps: {missing}"


def test_the_closure_follows_imports_inside_functions():
    # the trainer imports the MoE losses inside a method: it must still be found
    found = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages/train.py")}
    assert "moe_emergence/model/losses.py" in found
    assert "moe_emergence/core/cli.py" in found
