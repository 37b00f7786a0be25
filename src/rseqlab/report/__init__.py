"""Rendering: the same results as rich tables for people and JSON for programs."""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text


def console(file=None) -> Console:
    """A console that stays plain off a terminal; its width is rich's choice (the terminal's,
    else ``COLUMNS``, else 80), and :func:`print_table` makes every table fit it."""
    c = Console(file=file, highlight=False, soft_wrap=False)
    if not c.is_terminal:
        c = Console(file=file, highlight=False, soft_wrap=False, color_system=None)
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


def print_table(con: Console, table: Table, *, keep: int = 1, groups: Sequence[Sequence[int]] | None = None) -> None:
    """Print ``table`` without cutting a name or a number: if it is wider than the console,
    its columns are stacked in several tables, each repeating the first ``keep`` columns.

    ``groups`` lists the column indexes (after ``keep``) that must stay side by side, e.g. a
    count and its percentage; by default every column is its own group. Right-aligned
    (numeric) columns never wrap.
    """
    for column in table.columns:
        if column.justify == "right":
            column.no_wrap = True
    if _min_width(con, table) <= con.width:
        con.print(table)
        return
    n = len(table.columns)
    groups = [list(g) for g in groups] if groups is not None else [[i] for i in range(keep, n)]
    parts: list[list[int]] = []
    for group in groups:
        if parts and _min_width(con, _subtable(table, [*range(keep), *parts[-1], *group])) <= con.width:
            parts[-1] += group
        else:
            parts.append(list(group))
    for i, part in enumerate(parts):
        sub = _subtable(table, [*range(keep), *part])
        if i:
            sub.title = f"{table.title} (continued)" if table.title else None
        if i < len(parts) - 1:
            sub.caption = None  # the caption once, under the last part
        con.print(sub)


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    try:
        return Text.from_markup(str(cell)).plain
    except MarkupError:
        return str(cell)


def _min_width(con: Console, table: Table) -> int:
    """The narrowest the table can be without cutting a cell: a column that may wrap is as
    wide as its longest word, one that may not (numbers) as its longest line. (rich's own
    measurement counts words even in no-wrap columns, and then truncates them.)"""
    pad = table.padding[1] + table.padding[3]
    total = 0
    for column in table.columns:
        texts = [_plain(column.header), *(_plain(c) for c in column.cells)]
        if column.no_wrap:
            widest = max((cell_len(line) for t in texts for line in t.splitlines()), default=0)
        else:
            widest = max((cell_len(word) for t in texts for word in t.split()), default=0)
        total += max(widest, column.min_width or 0) + pad
    if table.box is not None:
        total += len(table.columns) + 1 if table.show_edge else len(table.columns) - 1
    return total


def _subtable(table: Table, columns: list[int]) -> Table:
    sub = Table(title=table.title, caption=table.caption, title_justify=table.title_justify,
                caption_justify=table.caption_justify, box=table.box, safe_box=table.safe_box,
                show_header=table.show_header, show_lines=table.show_lines, padding=table.padding,
                show_edge=table.show_edge, expand=table.expand)
    for i in columns:
        sub.columns.append(table.columns[i].copy())
    rows = [list(table.columns[i].cells) for i in columns]
    for cells in zip(*rows):
        sub.add_row(*cells)
    return sub


#: How an ASCII-only terminal spells the few non-ASCII characters rseqlab prints.
ASCII_SPELLING = {"→": "->", "←": "<-", "§": "section ", "…": "...", "–": "-", "—": "-", "≥": ">=",
                  "≤": "<=", "×": "x", "µ": "u", "±": "+/-", "≈": "~", "·": "-", "’": "'", "“": '"', "”": '"'}


def _ascii_spelling(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start:exc.end]
    return "".join(ASCII_SPELLING.get(ch, "?") for ch in text), exc.end


codecs.register_error("rseqlab-ascii", _ascii_spelling)


def ascii_fallback() -> None:
    """Let stdout and stderr print on a terminal whose encoding lacks a character
    (``PYTHONIOENCODING=ascii``, ``LANG=C``): spelled in ASCII instead of a traceback."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if reconfigure is not None and encoding not in ("utf8", "utf16", "utf32"):
            reconfigure(errors="rseqlab-ascii")
