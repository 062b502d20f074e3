"""Field templates: which record fields make a document, and how they are joined.

`"{question}\\n\\n{answer}"` keeps `question` and `answer` and drops every other
field (an `explanation`, a `source` tag). Only plain `{name}` fields are
allowed: no attribute access, indexing, conversions or format specs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from moe_emergence.core.config import template_fields
from moe_emergence.core.errors import DataError


def render(template: str, record: Mapping[str, Any], where: str) -> str:
    """Fill `template` from `record`; a missing or null field is a DataError naming `where`."""
    values = {}
    for name in template_fields(template):
        value = record.get(name)
        if value is None:
            present = ", ".join(sorted(map(str, record))) or "none"
            what = "has a null" if name in record else "has no"
            raise DataError(f"{where} {what} field {name!r}, which the template {template!r} needs (fields: {present})")
        values[name] = value if isinstance(value, str) else str(value)
    return template.format_map(values)


def strip_patterns(text: str, patterns: list[str]) -> str:
    """Remove every match of each regular expression (e.g. GSM8K's `<<48/2=24>>` annotations)."""
    for pat in patterns:
        text = re.sub(pat, "", text, flags=re.M)
    return text
