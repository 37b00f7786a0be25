"""Rendering: the same results as rich tables for people and JSON for programs."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console


def console(file=None) -> Console:
    """A console that stays plain and wide enough when the output is not a terminal."""
    c = Console(file=file, highlight=False, soft_wrap=False)
    if not c.is_terminal:
        c = Console(file=file, highlight=False, soft_wrap=False, width=132, color_system=None)
    return c


def dump_json(data: Any) -> str:
    """Stable, diff-friendly JSON: sorted keys, two-space indent."""
    return json.dumps(data, indent=2, sort_keys=True)
