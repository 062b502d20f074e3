"""Exceptions for bad input that stage commands print as one line and exit 2 (`core.cli`)."""

from __future__ import annotations


class DataError(ValueError):
    """Data input is missing, malformed or insufficient; the message says what and where."""


class StageError(RuntimeError):
    """A stage cannot go on for a reason outside its inputs (a failed worker process)."""
