"""Session-wide fixtures: one tiny finished pipeline, copied by the tests that change it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline_repo import DVC, make_repo, run, tiny_model


@pytest.fixture(scope="session")
def finished_repo(tmp_path_factory) -> tuple[Path, str]:
    """A throwaway git+DVC repo on the tiny profile after a full `dvc repro`, committed.

    Returns the path and the stdout of that first `dvc repro`. Tests must not change
    it: they work on `copy_repo(...)`.
    """
    repo = make_repo(tmp_path_factory.mktemp("finished") / "repo", tiny_model)
    first = run([DVC, "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "finished run"], repo)
    return repo, first.stdout
