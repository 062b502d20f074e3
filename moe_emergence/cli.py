"""What every stage command shares: one-line errors instead of bare tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from moe_emergence.atomic import OutputError
from moe_emergence.config import ParamsError


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or environment: reported in one line, exit code 2."""
    # OSError: a full disk, a missing permission, a file in the way; its message names the path
    errors: list[type[BaseException]] = [ParamsError, OutputError, OSError]
    try:
        from moe_emergence.data.errors import DataError

        errors.append(DataError)
    except ImportError:
        pass
    try:
        from moe_emergence.training.trainer import TrainingError

        errors.append(TrainingError)
    except ImportError:
        pass
    try:
        from moe_emergence.model.checkpoint import CheckpointError

        errors.append(CheckpointError)
    except ImportError:
        pass
    return tuple(errors)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main; expected errors print `<stage>: error: <cause>` and exit 2.

    Set MOE_DEBUG=1 to see the full traceback as well.
    """
    try:
        main()
    except expected_errors() as e:
        if os.environ.get("MOE_DEBUG"):
            raise
        cause = " ".join(str(e).split())  # one line, whatever the underlying library wrote
        print(f"{name}: error: {cause}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing partial was published (re-run to resume)", file=sys.stderr)
        sys.exit(130)
