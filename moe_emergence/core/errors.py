"""The one exception type for bad data input: a missing file, an empty corpus, a bad zip.

Stage commands print it as one line and exit 2 (see `moe_emergence.core.cli`).
"""

from __future__ import annotations


class DataError(ValueError):
    """Data input is missing, malformed or insufficient; the message says what and where."""
