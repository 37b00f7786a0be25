"""``rseqlab kernels``: the archive's releases, the cache, and the personality of each release."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..errors import RseqlabError
from ..report import print_table
from . import releases
from .archive import version_key
from .kernels import KernelStore, cached


def listing(*, offline: bool = False, store: KernelStore | None = None) -> dict:
    store = store or KernelStore(log=lambda msg: None)
    data: dict = {"cache": str(store.root), "cached": [c.as_json() for c in cached(store.root)],
                  "personalities": releases.release_map(), "archive": None, "archive_error": None}
    for row in data["cached"]:
        row["personality"] = releases.personality_for_release(row["version"])
    if not offline:
        try:
            rels = store.archive.releases()
        except RseqlabError as exc:
            data["archive_error"] = str(exc)
        else:
            data["archive"] = [{"version": v, "source": bool(r.sources), "binary": bool(r.binaries),
                                "debian": [s.debian for s in r.sources],
                                "packages": r.binaries,
                                "personality": releases.personality_for_release(v) if v[0].isdigit() else None}
                               for v, r in rels.items() if version_key(v) >= (6, 19)]
    return data


def render(con: Console, data: dict) -> None:
    t = Table(title=f"Cached kernels ({data['cache']})")
    for col in ("version", "kind", "RSEQ_STATS", "slice ext.", "config", "personality", "image"):
        t.add_column(col)
    for c in data["cached"]:
        t.add_row(c["version"], c["kind"], "yes" if c["stats"] else "no", "yes" if c["slice"] else "no",
                  c["config_hash"] or "-", c["personality"] or "-", c["image"])
    if not data["cached"]:
        t.add_row("(none)", "", "", "", "", "", "")
    print_table(con, t)
    if data["archive"] is not None:
        a = Table(title="Archive releases (6.19 and later): binary kernel / source tarball listed")
        for col in ("version", "binary", "source", "personality"):
            a.add_column(col)
        for r in data["archive"]:
            a.add_row(r["version"], "yes" if r["binary"] else "-", "yes" if r["source"] else "-",
                      r["personality"] or "-")
        print_table(con, a)
        con.print("  (a listed source tarball may still be gone from the pool: `kernels get V --stats` "
                  "tries each version in turn)")
    elif data["archive_error"]:
        con.print(f"[yellow]archive not reachable: {data['archive_error']}[/]")
    p = Table(title="Personalities and the releases they model")
    for col in ("personality", "releases", "in this rseqlab"):
        p.add_column(col)
    for r in data["personalities"]:
        p.add_row(r["personality"], r["releases"], "yes" if r["available"] else "no")
    print_table(con, p)
