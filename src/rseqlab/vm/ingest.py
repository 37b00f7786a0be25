"""A guest recording (the OUTDIR ``guestrec`` wrote) -> an ordinary rseqlab trace.

Everything is decoded on the host with the project's own parser: the format files and
``header_page`` the guest kernel published (:func:`rseqlab.trace.parse.parse_format`), its binary
pages (:func:`rseqlab.trace.parse.walk_pages`), and the same columnar builder ``rseqlab record``
uses (:func:`rseqlab.trace.record.build_trace`), so ``rseqlab replay`` reads the result like any
recording. There is no text round trip.

What the trace's ``meta`` adds for a guest (``meta["guest"]``): the guest kernel's release, the
debugfs statistics before and after the command and their deltas per counter (or ``None`` when
the kernel has no ``CONFIG_RSEQ_STATS``), the lost-event counts of all three instances, the
statistics window on the trace's clock, and ``recorder_window``: the recorder's own recorded
events up to the end of the window, which ``rseqlab validate`` replays to account for the
recorder's returns to user mode inside the window (the statistics count every task's).

Corrupt or truncated contents give one :class:`~rseqlab.errors.BadInput` naming the file and the
problem. OUTDIR layout: docs/guest-recording.md.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..trace import parse
from ..trace.build import IRQ_EVENTS, build_trace
from ..trace.events import EVENTS, MIGRATION_EVENT
from ..trace.format import EVENT_COLUMNS, SYSARG_COLUMNS, IrqKind, Kind, Trace, save
from ..trace.sections import read_sections
from .stats import deltas, has_slice_counters, parse_stats

#: read(2) on x86_64: how guestrec reads the statistics at each end of the window.
NR_READ = 0


def statistics_read(events: dict[str, np.ndarray], at_ns: int, pid: int | None = None) -> int | None:
    """The row of the first ``read`` entry (of ``pid``, if given) at or after ``at_ns``: where
    guestrec's statistics read entered the kernel after it took the time; None if there is none."""
    sel = (events["ts"] >= at_ns) & (events["kind"] == Kind.SYS_ENTER) & (events["a"] == NR_READ)
    if pid is not None:
        sel &= events["pid"] == pid
    rows = np.flatnonzero(sel)
    return int(rows[0]) if len(rows) else None

MANIFEST_FORMAT = "rseqlab-guestrec"
MANIFEST_VERSION = 1
INSTANCES = ("main", "mig", "self")
_COMMIT_MASK = (1 << 30) - 1
_REQUIRED = ("command", "uname", "start_utc", "start_mono_ns", "end_mono_ns", "window_mono_ns", "exit_status",
             "root_pid", "recorder_pid", "cpus", "page_size", "buffer_kb_per_cpu", "events", "raw_bytes",
             "node_of_cpu", "glibc", "rseq_stats", "recorder")


#: Exit windows for a guest under QEMU's TCG (``exit_windows_ns=UNTIMED_EXIT_WINDOWS``): a switch-out
#: after a return with nothing recorded in between is taken to be in that return's exit loop
#: whatever the delay. Emulated exit paths are several times slower than native and host load
#: stretches them arbitrarily (a 6.19.10 TCG guest: median 3.4 us from sys_exit to the switch-out
#: in the exit loop, 10% beyond the native 5 us window, 1% beyond 36 us).
UNTIMED_EXIT_WINDOWS = (1 << 50, 1 << 50)


def ingest_dir(outdir: str | Path, trace_path: str | Path | None = None, *,
               command: list[str] | None = None, hz: int | None = None,
               exit_windows_ns: tuple[int, int] | None = None,
               host_file_of=None) -> Trace:
    """Parse ``outdir`` into a trace, save it to ``trace_path`` (if given) and return it.

    ``command`` replaces the manifest's command line in the trace (e.g. the host's name for a
    workload that ran in the guest under another path). ``hz`` is the guest kernel's CONFIG_HZ when
    the caller knows it (e.g. from the kernel package's config); otherwise it comes from the config
    the guest exposed (``/proc/config.gz`` or ``/boot/config-RELEASE``, copied by guestrec), and
    failing that from the spacing of the recorded timer interrupts. ``exit_windows_ns`` (syscall,
    interrupt) replaces the replay's native windows for this trace (``meta["replay"]``; see
    :data:`UNTIMED_EXIT_WINDOWS` for a guest under TCG). ``host_file_of(guest_path)`` names the
    host file behind a program the guest exec'd (default: the same path), whose ``__rseq_cs``
    descriptors go into ``meta["rseq_cs"]`` (trace/sections.py)."""
    d = Path(outdir)
    if not d.is_dir():
        raise BadInput(f"{d}: no such guest recording directory")
    man = _manifest(d)
    page_size = _page_size(d, man)
    formats = _formats(d, man)
    cpus = int(man["cpus"])
    raw = {inst: {c: _raw(d, man, inst, c, page_size) for c in range(cpus)} for inst in INSTANCES}
    lost = {inst: {c: _lost(d, inst, c) for c in range(cpus)} for inst in INSTANCES}
    stats = _rseq_stats(d, man)
    t0 = int(man["start_mono_ns"])
    release = man["uname"]["release"]
    hz, hz_source = (int(hz), "given") if hz else _config_hz(d)
    glibc = man["glibc"]
    registered = bool(glibc.get("registered"))
    root = {"pid": int(man["root_pid"]), "rseq_registered": registered,
            "rseq_addr": int(glibc.get("rseq_addr") or 0), "rseq_len": 32 if registered else 0}
    meta = {
        "format": "rseqlab-trace",
        "command": list(command) if command else list(man["command"]),
        "cwd": man.get("cwd", ""),
        "start": {"utc": man["start_utc"], "mono_ns": t0},
        "duration_ns": int(man["end_mono_ns"]) - t0,
        "exit_status": man["exit_status"],
        "kernel": {"release": release, "version": man["uname"].get("version", ""),
                   "machine": man["uname"].get("machine", ""), "hz": hz, "hz_source": hz_source},
        "cpus": cpus,
        "topology": {"node_of_cpu": [int(n) for n in man["node_of_cpu"]]},
        "glibc": {"version": glibc.get("version"), "rseq_size": int(glibc.get("rseq_size", 0)),
                  "rseq_offset": int(glibc.get("rseq_offset", 0)),
                  "rseq_tunable_off": bool(glibc.get("rseq_tunable_off")),
                  "registered_size": 32 if registered else 0},
        "root": root,
        "buffer_kb_per_cpu": int(man["buffer_kb_per_cpu"]["main"]),
        "page_size": page_size,
        "recorder": {"reader_cpu_s": float(man["recorder"].get("reader_cpu_s", 0.0)),
                     "pages": int(man["recorder"].get("pages", 0)),
                     "workload_cpu_s": float(man["recorder"].get("workload_cpu_s", 0.0))},
    }
    if exit_windows_ns is not None:
        sw, iw = (int(x) for x in exit_windows_ns)
        if sw < 0 or iw < 0:
            raise BadInput(f"exit windows must not be negative (got {sw}, {iw})")
        meta["replay"] = {"syscall_exit_window_ns": sw, "irq_exit_window_ns": iw}
    tb, ta = (int(x) - t0 for x in man["window_mono_ns"])
    try:
        trace = build_trace(raw["main"], raw["mig"], formats, page_size, meta, lost["main"], lost["mig"], t0)
        own = _recorder_window(raw, formats, page_size, meta, lost, t0, int(man["recorder_pid"]), ta)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise BadInput(f"{d}: corrupt trace pages ({type(exc).__name__}: {exc})") from None
    if meta["kernel"]["hz"] is None:  # the estimate build_trace made from the timer interrupts
        hz = trace.meta["kernel"]["hz"]
        own["meta"]["kernel"]["hz"] = hz
    user_ip = _attach_user_ips(trace, d, man, formats, page_size, cpus)
    if user_ip is not None:
        trace.meta["user_ip"] = user_ip
    trace.meta["rseq_cs"] = _sections_of(trace.meta.get("exec_files", {}), host_file_of)
    trace.meta["guest"] = {
        "recorder": "guestrec",
        "release": release,
        "rseq_stats": stats,
        "lost": {inst: {str(c): n for c, n in sorted(lost[inst].items())} for inst in INSTANCES},
        "window_ns": [tb, ta],
        "recorder_pid": int(man["recorder_pid"]),
        "recorder_window": own,
    }
    if trace_path is not None:
        save(trace, trace_path)
    return trace


# ----------------------------------------------------------------------
# OUTDIR pieces, each checked
# ----------------------------------------------------------------------
def _read(d: Path, rel: str, *, binary: bool = False):
    p = d / rel
    try:
        return p.read_bytes() if binary else p.read_text()
    except FileNotFoundError:
        raise BadInput(f"{d}: truncated guest recording (missing {rel})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{d}: cannot read {rel}: {exc}") from None


def _manifest(d: Path) -> dict:
    if not (d / "manifest.json").exists():
        raise BadInput(f"{d}: incomplete guest recording (no manifest.json: the recorder did not finish)")
    try:
        man = json.loads(_read(d, "manifest.json"))
    except ValueError:
        raise BadInput(f"{d}: corrupt manifest.json (not JSON)") from None
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise BadInput(f"{d}: manifest.json is not a guestrec manifest")
    if man.get("version") != MANIFEST_VERSION:
        raise BadInput(f"{d}: unsupported guestrec manifest version {man.get('version')!r} "
                       f"(this rseqlab reads {MANIFEST_VERSION})")
    missing = [k for k in _REQUIRED if k not in man]
    if missing:
        raise BadInput(f"{d}: corrupt manifest.json (missing {', '.join(missing)})")
    try:
        cpus = int(man["cpus"])
        window = [int(x) for x in man["window_mono_ns"]]
        ok = (cpus >= 1 and len(man["node_of_cpu"]) == cpus and len(window) == 2
              and int(man["start_mono_ns"]) <= window[0] <= window[1] <= int(man["end_mono_ns"])
              and isinstance(man["uname"].get("release"), str) and isinstance(man["command"], list))
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise BadInput(f"{d}: corrupt manifest.json (inconsistent cpus, window or times)")
    return man


def _page_size(d: Path, man: dict) -> int:
    text = _read(d, "events/header_page")
    m = re.search(r"field: char data;\s*offset:(\d+);\s*size:(\d+);", text)
    if m is None:
        raise BadInput(f"{d}: corrupt events/header_page (no data field)")
    size = int(m.group(1)) + int(m.group(2))
    if size != int(man["page_size"]) or size < 32:
        raise BadInput(f"{d}: events/header_page gives a {size}-byte page, the manifest {man['page_size']}")
    return size


def _formats(d: Path, man: dict) -> dict[tuple[str, str], parse.EventFormat]:
    listed = set()
    for name in man["events"]:
        system, _, event = str(name).partition(":")
        listed.add((system, event))
    out = {}
    for key, required in [*EVENTS.items(), (MIGRATION_EVENT, True)]:
        if key not in listed:
            if required:
                raise BadInput(f"{d}: the recording lacks the required event {key[0]}:{key[1]}")
            continue
        rel = f"events/{key[0]}/{key[1]}/format"
        try:
            out[key] = parse.parse_format(key[0], _read(d, rel))
        except ValueError:
            raise BadInput(f"{d}: corrupt {rel}") from None
        if out[key].name != key[1]:
            raise BadInput(f"{d}: {rel} describes {out[key].name}, not {key[1]}")
    return out


def _raw(d: Path, man: dict, inst: str, cpu: int, page_size: int) -> bytes:
    rel = f"raw/{inst}-cpu{cpu}.raw"
    data = _read(d, rel, binary=True)
    expect = man["raw_bytes"].get(f"{inst}-cpu{cpu}")
    if expect is None:
        raise BadInput(f"{d}: corrupt manifest.json (no size for {rel})")
    if len(data) != int(expect):
        raise BadInput(f"{d}: truncated {rel} ({len(data)} of {int(expect)} bytes)")
    if len(data) % page_size:
        raise BadInput(f"{d}: truncated {rel} (not a whole number of {page_size}-byte pages)")
    if data:
        pages = np.frombuffer(data, np.uint8).reshape(-1, page_size)
        commit = pages[:, 8:16].copy().view("<u8").ravel() & _COMMIT_MASK
        bad = np.nonzero(commit > page_size - 16)[0]
        if len(bad):
            raise BadInput(f"{d}: corrupt {rel} (page {int(bad[0])} claims {int(commit[bad[0]])} data bytes)")
    return data


def _lost(d: Path, inst: str, cpu: int) -> int:
    text = _read(d, f"stats/{inst}-cpu{cpu}")
    if not re.search(r"^entries: \d+", text, re.M):
        raise BadInput(f"{d}: corrupt stats/{inst}-cpu{cpu} (not a per_cpu stats file)")
    total = 0
    for key in ("overrun", "commit overrun", "dropped events"):
        m = re.search(rf"^{key}: (\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def _rseq_stats(d: Path, man: dict) -> dict | None:
    if not man["rseq_stats"]:
        return None
    before = parse_stats(_read(d, "rseq_stats.before"), source=f"{d}/rseq_stats.before")
    after = parse_stats(_read(d, "rseq_stats.after"), source=f"{d}/rseq_stats.after")
    delta = deltas(before, after, source=f"{d}/rseq_stats")
    return {"before": before, "after": after, "delta": delta, "slice": has_slice_counters(delta)}


def _config_hz(d: Path) -> tuple[int | None, str]:
    for rel in ("config.gz", "config"):
        p = d / rel
        if not p.exists():
            continue
        try:
            text = gzip.decompress(p.read_bytes()).decode() if rel.endswith(".gz") else p.read_text()
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
            raise BadInput(f"{d}: corrupt {rel}") from None
        m = re.search(r"^CONFIG_HZ=(\d+)", text, re.M)
        if m:
            return int(m.group(1)), f"guest {rel}"
    return None, "unknown"


def _attach_user_ips(trace: Trace, d: Path, man: dict, formats, page_size: int, cpus: int) -> dict | None:
    """Fill each interrupt row's ``c`` with the user IP the interrupt saved, from the ``ip``
    instance: the same interrupt entries, each followed by a ``user_stack`` entry whose first word
    is ``task_pt_regs(current)->ip`` (``stack_trace_save_user()``, kernel/stacktrace.c). The k-th
    entry of a (CPU, task, vector) there is the k-th interrupt row of that key in the trace (both
    instances see the same events in the same order); a key whose counts differ (lost events) gets
    no IPs. Meaningful for interrupts from user mode (a tracked recording knows which); for one in
    the kernel it is the IP of the pending syscall's return. None: no ``ip`` instance."""
    rel = "events/ftrace/user_stack/format"
    if not man.get("user_stacks") or not (d / rel).is_file():
        return None
    try:
        us = parse.parse_format("ftrace", _read(d, rel))
    except ValueError:
        raise BadInput(f"{d}: corrupt {rel}") from None
    raw = {c: _raw(d, man, "ip", c, page_size) for c in range(cpus)}
    lost = sum(_lost(d, "ip", c) for c in range(cpus))
    rec = parse.walk_pages(raw, page_size)
    ctype = parse.common_types(rec)
    stack_rows, _, _, stack_idx = parse.records_of(rec, us, ctype)
    first = stack_rows["caller"].copy().view("<u8").reshape(len(stack_rows), -1)[:, 0] if len(stack_rows) else []
    ip_at = dict(zip(stack_idx.tolist(), np.asarray(first, np.uint64).tolist()))
    seen: dict[tuple[int, int, int], list[int]] = {}
    for key, kind in IRQ_EVENTS:
        if key not in formats:
            continue
        rows, _, cpu, idx = parse.records_of(rec, formats[key], ctype)
        for pid, c, i in zip(rows["common_pid"].tolist(), cpu.tolist(), idx.tolist()):
            nxt = i + 1
            ok = nxt in ip_at and int(rec.cpu[nxt]) == c  # its user stack follows it on that CPU
            seen.setdefault((c, pid, int(kind)), []).append(ip_at[nxt] if ok else 0)
    ev = trace.events
    irq = np.nonzero((ev["kind"] == Kind.IRQ) & (ev["a"] != IrqKind.PAGE_FAULT))[0]
    rows_by_key: dict[tuple[int, int, int], list[int]] = {}
    for j, c, pid, a in zip(irq.tolist(), ev["cpu"][irq].tolist(), ev["pid"][irq].tolist(), ev["a"][irq].tolist()):
        rows_by_key.setdefault((c, pid, a), []).append(j)
    with_ip = unmatched = 0
    for key, rows in rows_by_key.items():
        ips = seen.get(key, [])
        if len(ips) != len(rows):
            unmatched += len(rows)
            continue
        ev["c"][rows] = np.array(ips, np.uint64).view(np.int64)
        with_ip += sum(1 for x in ips if x)
    return {"source": "ftrace options/userstacktrace (guestrec instance ip)", "interrupts": int(len(irq)),
            "with_ip": with_ip, "unmatched": unmatched, "lost": lost}


def _sections_of(exec_files: dict, host_file_of) -> dict:
    """``{guest path: [[desc, start_ip, post_commit_offset, abort_ip], ...]}`` for every exec'd
    program with an ``__rseq_cs`` section (trace/sections.py)."""
    out = {}
    for path in sorted(set(exec_files.values())):
        host = host_file_of(path) if host_file_of else Path(path)
        found = read_sections(host) if host is not None else []
        if found:
            out[path] = [s.as_list() for s in found]
    return out


def _recorder_window(raw, formats, page_size, meta, lost, t0, recorder_pid, ta) -> dict:
    """The recorder's own events (its private instance) up to the end of the statistics window,
    as columns: what validate replays to predict the recorder's share of the statistics. The
    window closes where the second statistics read enters the kernel, just after ``ta``: an
    interrupt's return in between is counted before that read."""
    own_meta = {"format": "rseqlab-trace", "command": ["guestrec"], "cwd": "", "start": meta["start"],
                "duration_ns": meta["duration_ns"], "exit_status": 0,
                "kernel": dict(meta["kernel"]), "cpus": meta["cpus"], "topology": meta["topology"],
                "glibc": dict(meta["glibc"]), "root": dict(meta["root"], pid=recorder_pid),
                "buffer_kb_per_cpu": 0, "page_size": page_size,
                "recorder": {"reader_cpu_s": 0.0, "pages": 0, "workload_cpu_s": 0.0}}
    if "replay" in meta:
        own_meta["replay"] = dict(meta["replay"])
    own = build_trace(raw["self"], raw["mig"], formats, page_size, own_meta, lost["self"], {}, t0)
    read = statistics_read(own.events, ta, recorder_pid)
    n = read + 1 if read is not None else int(np.searchsorted(own.events["ts"], ta, side="left"))
    keep_args = own.sysargs["event"] < n
    keep = [k for k in ("cpus", "topology", "kernel", "root", "tasks", "replay") if k in own.meta]
    return {"meta": {k: own.meta[k] for k in keep},
            "events": {k: own.events[k][:n].tolist() for k in EVENT_COLUMNS},
            "sysargs": {k: own.sysargs[k][keep_args].tolist() for k in SYSARG_COLUMNS},
            "lost": int(sum(lost["self"].values()))}


def recorder_trace(trace: Trace, *, upto_ns: int | None = None) -> Trace | None:
    """The recorder's window events of an ingested trace as a :class:`Trace` (events with
    ``ts <= upto_ns`` if given); None when the trace has none."""
    rw = (trace.meta.get("guest") or {}).get("recorder_window")
    if not rw or not rw.get("events"):
        return None
    ev = {k: np.asarray(rw["events"][k], dtype=dt) for k, dt in EVENT_COLUMNS.items()}
    sa = {k: np.asarray(rw["sysargs"][k], dtype=dt) for k, dt in SYSARG_COLUMNS.items()}
    if upto_ns is not None:
        n = int(np.searchsorted(ev["ts"], upto_ns, side="right"))
        ev = {k: v[:n] for k, v in ev.items()}
        keep = sa["event"] < n
        sa = {k: v[keep] for k, v in sa.items()}
    if not len(ev["ts"]):
        return None
    meta = dict(rw["meta"])
    if isinstance(trace.meta.get("replay"), dict):  # the guest's windows, even if set after the ingest
        meta["replay"] = dict(trace.meta["replay"])
    return Trace(meta, ev, sa)
