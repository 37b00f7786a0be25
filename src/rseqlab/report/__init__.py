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


#: The shape version of every ``--json`` document; raised when a key changes meaning or goes away
#: (adding a key does not raise it).
DOCUMENT_VERSION = 1


def json_document(kind: str, data: Any, *, key: str | None = None) -> str:
    """What ``rseqlab ... --json`` prints: ``data`` with ``format`` (``rseqlab-KIND``) and ``version`` keys.

    A record (dict) gets the two keys beside its own, unless it already names its own format (a cost
    model is ``rseqlab-cost``, version 1). A list, a mapping of names, or a record whose own
    ``version`` means something else (a kernel's version) goes under ``key``.
    """
    if key is not None:
        doc = {key: data}
    elif isinstance(data, dict):
        if "version" in data and "format" not in data:
            raise ValueError(f"{kind}: the record has a 'version' of its own; give it a key")
        doc = dict(data)
    else:
        raise ValueError(f"{kind}: a {type(data).__name__} needs a key")
    doc.setdefault("format", f"rseqlab-{kind}")
    doc.setdefault("version", DOCUMENT_VERSION)
    return dump_json(doc)
