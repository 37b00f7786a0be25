"""``--format table|json|csv|parquet|markdown`` on every reporting command (issue 14).

``--format json`` is ``--json`` (the same document); ``table`` is the default rendering; ``csv``,
``markdown`` and ``parquet`` are the command's JSON document as rows (:func:`.tables.rows_of`).
Parquet is binary: it goes to stdout only when stdout is not a terminal.
"""

from __future__ import annotations

import functools
import io
import json
import sys
from contextlib import redirect_stdout

import click

from ..errors import BadInput
from . import tables


def emit(doc, fmt: str) -> None:
    """Write ``doc`` (a command's JSON document) to stdout as ``fmt`` rows."""
    rows = tables.rows_of(doc)
    if fmt == "csv":
        click.echo(tables.to_csv(rows), nl=False)
    elif fmt == "markdown":
        click.echo(tables.to_markdown(rows), nl=False)
    elif fmt == "parquet":
        write_binary(tables.parquet_bytes(tables.to_arrow(rows)))
    else:
        raise ValueError(fmt)


def write_binary(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is None or sys.stdout.isatty():
        raise BadInput("--format parquet writes binary data: redirect stdout to a file (> out.parquet)")
    sys.stdout.flush()
    out.write(data)
    out.flush()


def format_option(fn):
    """Adds ``--format`` to a command that has ``--json`` (its ``as_json`` parameter)."""

    @functools.wraps(fn)
    def wrapper(*args, fmt: str | None = None, **kwargs):
        if fmt not in (None, "json") and kwargs.get("as_json"):
            raise BadInput(f"--json and --format {fmt} cannot be combined (--json is --format json)")
        if fmt in (None, "table"):
            return fn(*args, **kwargs)
        kwargs["as_json"] = True
        if fmt == "json":
            return fn(*args, **kwargs)
        buf = io.StringIO()
        with redirect_stdout(buf):
            status = fn(*args, **kwargs)
        text = buf.getvalue()
        try:
            doc = json.loads(text)
        except ValueError:  # a command that printed no JSON document (e.g. a --list text)
            click.echo(text, nl=False)
            return status
        emit(doc, fmt)
        return status

    return click.option("--format", "fmt", type=click.Choice(tables.FORMATS),
                        help="Output as a table (default), json (= --json), csv, parquet or markdown.")(wrapper)
