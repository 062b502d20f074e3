"""The committed dvc.lock, and so the committed reports, come from the committed code and
params: a reader of reports/report.md is reading what this checkout's pipeline produces.

After an edit of a stage's code or params, `dvc repro` and a commit of dvc.lock and
reports/ bring this back. Data and model outputs are not checked (a fresh clone has
none until `dvc repro` or `dvc pull`), only what git holds.
"""

from __future__ import annotations

import json

from tests.pipeline_repo import DVC, ROOT, run


def stale_inputs(status: dict) -> list[str]:
    out = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "changed command":
                out.append(f"{stage}: its command")
                continue
            if not isinstance(entry, dict):
                continue
            for path, change in entry.get("changed deps", {}).items():
                if isinstance(change, dict):  # params.yaml: {section: "modified"}
                    out += [f"{stage}: {path} {k}" for k, v in change.items() if v != "deleted"]
                elif change == "modified" and not path.startswith(("data/", "models/", "reports/")):
                    out.append(f"{stage}: {path}")
    return out


def test_the_lock_matches_the_code_and_params():
    r = run([DVC, "status", "--json"], ROOT, check=False)
    assert r.returncode == 0, r.stderr
    stale = stale_inputs(json.loads(r.stdout or "{}"))
    assert not stale, ("dvc.lock was produced by other code or params than this checkout's; run `dvc repro` "
                       f"and commit dvc.lock and reports/: {stale}")


def test_a_modified_module_or_param_is_reported():
    status = {
        "base": [{"changed deps": {"moe_emergence/hub.py": "modified", "data/packed": "deleted"}}],
        "analyze": [{"changed deps": {"params.yaml": {"analyze": "modified"}, "models": "deleted"}},
                    {"changed outs": {"reports/report.md": "not in cache"}}],
        "pack": [{"changed outs": {"data/packed": "not in cache"}}],
        "split": ["changed command"],
    }
    assert stale_inputs(status) == ["base: moe_emergence/hub.py", "analyze: params.yaml analyze",
                                    "split: its command"]
