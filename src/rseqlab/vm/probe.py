"""``rseqlab vm probe``: how a real kernel treats a 32-byte rseq registration (``probes/rseq32.c``).

Two properties separate 6.19 / 7.0 before the fix series "rseq: Cure refactoring regressions"
from the legacy behaviour that 7.1 restores for registrations of 32 bytes
(``rseq_sched_switch_event`` in ``include/linux/rseq.h``, 7.1): whether ``cpu_id_start`` is
rewritten after a sleep on the same CPU when user space overwrote it (TCMalloc's use), and
whether registration writes bytes 28..31 (7.0's ``slice_ctrl``) of a 32-byte area.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..report import print_table
from . import guest_run, guestcc
from .kernels import KernelStore
from ..tmpdirs import owned_tempdir

TAIL = 0xA5A5A5A5


def parse(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.strip().split("=", 1)
            out[k] = v
    return out


def verdict(raw: dict) -> dict:
    """The probe's lines -> booleans (None when the probe did not get that far)."""
    def frac(key):
        v = raw.get(key)
        if v is None or "/" not in v:
            return None
        n, d = (int(x) for x in v.split("/"))
        return n, d

    same = frac("rewrite_same_cpu")
    mig = frac("rewrite_migrate")
    tails = [int(raw[k], 16) for k in ("tail_after_register", "tail_after_runs") if k in raw]
    return {
        "registered": raw.get("register") == "0",
        "rewrites_cpu_id_start_same_cpu": None if same is None else same[0] == same[1],
        "rewrites_cpu_id_start_migration": None if mig is None else mig[0] == mig[1],
        "writes_bytes_28_31": None if not tails else any(t != TAIL for t in tails),
        "raw": raw,
    }


def rseq32(version: str, *, store: KernelStore | None = None) -> dict:
    store = store or KernelStore()
    k = store.get(version)
    src = resources.files("rseqlab.vm").joinpath("probes", "rseq32.c").read_text()
    exe = guestcc.static_program("rseq32", src)
    with owned_tempdir("rseqlab-probe-") as tmp:
        r = guest_run.run(k, "/work/rseq32 > /tmp/out/rseq32.txt 2>&1\n", Path(tmp) / "out",
                          programs={"work/rseq32": exe}, timeout=300)
        raw = parse(r.read("rseq32.txt"))
        release = r.release
    out = verdict(raw)
    fixed = out["rewrites_cpu_id_start_same_cpu"] and out["writes_bytes_28_31"] is False
    return {"version": k.version, "release": release, "kind": k.kind, **out, "legacy_behaviour": bool(fixed)}


def render(con: Console, rows: list[dict]) -> None:
    t = Table(title="32-byte registration on real kernels (probes/rseq32.c)")
    for col in ("kernel", "release", "cpu_id_start rewritten (same CPU)", "(after migration)",
                "bytes 28..31 written", "legacy behaviour"):
        t.add_column(col)

    def yn(v):
        return "?" if v is None else ("yes" if v else "no")

    for r in rows:
        t.add_row(r["version"], r["release"], yn(r["rewrites_cpu_id_start_same_cpu"]),
                  yn(r["rewrites_cpu_id_start_migration"]), yn(r["writes_bytes_28_31"]), yn(r["legacy_behaviour"]))
    print_table(con, t)
