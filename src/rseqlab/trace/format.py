"""The rseqlab trace file: a versioned, columnar recording of one workload.

Layout (all integers little-endian)::

    magic     8 bytes   b"RSEQTRC\\0"
    version   u32       FORMAT_VERSION (2; version 1 files are still read)
    hdr_len   u32       length of the header
    header    hdr_len   UTF-8 JSON: {"meta": {...}, "columns": [...], "payload_size": N}
    payload             the column blobs, each zlib-compressed, back to back

Each entry of ``columns`` is ``{"table", "name", "dtype", "rows", "offset", "size", "crc32"}``:
the blob at ``payload[offset:offset+size]`` inflates to ``rows`` values of numpy
``dtype``; ``crc32`` is over the inflated bytes. Version 2 adds ``encoding`` (``raw``, as in
version 1; ``const``: no blob, every value is ``base``; ``offset``: the blob holds value - ``base``
as the unsigned ``stored`` dtype; ``delta``: the first value is ``base`` and the blob holds the
non-negative differences to the previous value as ``stored``): narrower bytes to inflate, so
loading is faster; every value round-trips exactly. Two tables:

* ``events``: one row per event, sorted by (ts, cpu, per-CPU sequence). Columns
  ``ts`` (i8, ns since the start of the recording, ``trace_clock=mono``),
  ``cpu`` (i2), ``kind`` (u1, :class:`Kind`), ``pid`` (i4, the task the event
  is about) and ``a b c d`` (i8, meaning per kind, see :class:`Kind`).
* ``sysargs``: the six arguments of selected syscalls (``SYSARGS_FOR``):
  ``event`` (u4, row in ``events``) and ``arg0`` .. ``arg5`` (u8).

``meta`` is documented in docs/live-kernel.md ("Trace file format"); readers reject unknown
versions, and any truncation or corruption fails with one line.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..files import loads_finite, open_regular

MAGIC = b"RSEQTRC\0"
FORMAT_VERSION = 2
#: Versions this reader accepts (1: raw zlib columns; 2: adds the per-column encodings).
SUPPORTED_VERSIONS = (1, 2)
_ENCODINGS = ("raw", "const", "offset", "delta")
_STORED = {"u1", "<u2", "<u4", "<i2", "<i4", "<i8", "<u8"}
_PREFIX = struct.Struct("<8sII")


class Kind(IntEnum):
    """Event kinds in the ``events`` table, and what ``a b c d`` hold."""

    SWITCH_OUT = 0  # a=prev_state (0: preempted, runnable), b=next_pid
    SWITCH_IN = 1  # cpu is where it runs now; a=prev_pid
    MIGRATE = 2  # a=orig_cpu, b=dest_cpu (recorded system-wide, filtered to the tree)
    FORK = 3  # pid=parent, a=child pid, b=clone_flags (-1 unknown)
    EXEC = 4  # a=old_pid
    EXIT = 5  # a=group_dead
    SYS_ENTER = 6  # a=syscall nr, b=row in sysargs or -1
    SYS_EXIT = 7  # a=syscall nr, b=return value
    SIGNAL = 8  # signal_deliver: a=sig, b=sa_handler (0 SIG_DFL, 1 SIG_IGN), c=si_code
    RSEQ_UPDATE = 9  # a=cpu_id, b=node_id, c=mm_cid
    RSEQ_IP_FIXUP = 10  # a=regs_ip, b=start_ip, c=post_commit_offset, d=abort_ip
    IRQ = 11  # an interrupt taken while the task ran, or a user page fault; a=IrqKind, c=user IP (0: unknown)
    LOST = 12  # pid=-1; a=events lost on this CPU before this point (-1: unknown count)
    #: ``context_tracking:user_enter`` / ``user_exit`` (kernels with user context tracking on:
    #: ``CONTEXT_TRACKING_USER_FORCE`` or ``nohz_full``): the task returns to user mode, the last
    #: step of ``exit_to_user_mode()``; it enters the kernel from user mode, the first step of
    #: ``enter_from_user_mode()``. With them the replay reads every return instead of inferring it.
    USER_ENTER = 13
    USER_EXIT = 14
    #: ``exceptions:page_fault_kernel`` (x86): a fault taken in kernel mode, e.g. a store into the
    #: rseq area of a copy-on-write page; a=fault address, b=kernel IP, c=error_code. Not an entry:
    #: the replay uses it only to place a preemption inside an exit's rseq work.
    KERNEL_FAULT = 15


class IrqKind(IntEnum):
    TIMER = 0
    RESCHEDULE = 1
    CALL_FUNCTION = 2
    CALL_FUNCTION_SINGLE = 3
    IRQ_WORK = 4
    DEVICE = 5
    #: ``exceptions:page_fault_user`` (x86): a page fault from user mode, an exception entry
    #: (``irqentry_enter()``) and return like an interrupt's; b=fault address, c=user IP.
    PAGE_FAULT = 6


#: x86_64 syscall numbers whose arguments the trace keeps (the replay needs them).
SYSARGS_FOR = {3: "close", 9: "mmap", 11: "munmap", 56: "clone", 334: "rseq"}

EVENT_COLUMNS = {"ts": "<i8", "cpu": "<i2", "kind": "u1", "pid": "<i4",
                 "a": "<i8", "b": "<i8", "c": "<i8", "d": "<i8"}
SYSARG_COLUMNS = {"event": "<u4", **{f"arg{i}": "<u8" for i in range(6)}}
_TABLES = {"events": EVENT_COLUMNS, "sysargs": SYSARG_COLUMNS}


@dataclass
class Trace:
    """A recording: metadata plus the ``events`` and ``sysargs`` tables (numpy columns)."""

    meta: dict
    events: dict[str, np.ndarray]
    sysargs: dict[str, np.ndarray] = field(default_factory=lambda: empty_table(SYSARG_COLUMNS))

    def __len__(self) -> int:
        return len(self.events["ts"])

    def kind_counts(self) -> dict[str, int]:
        counts = np.bincount(self.events["kind"], minlength=len(Kind))
        return {k.name.lower(): int(counts[k]) for k in Kind}


def empty_table(columns: dict[str, str], rows: int = 0) -> dict[str, np.ndarray]:
    return {name: np.zeros(rows, dtype=dt) for name, dt in columns.items()}


def _encode(arr: np.ndarray, dtype: str) -> tuple[dict, bytes]:
    """Version 2's encoding of one integer column: the smallest exact form of its values.

    ``const`` (every value ``base``; no blob), ``offset`` (values - ``base`` as the narrowest
    unsigned ``stored`` dtype), ``delta`` (the first value is ``base``, then the differences to the
    previous value, non-negative, as ``stored``: sorted timestamps), or ``raw``."""
    raw = {"encoding": "raw"}
    n = len(arr)
    if n == 0 or np.dtype(dtype).kind not in "iu":
        return raw, arr.tobytes()
    lo, hi = int(arr.min()), int(arr.max())
    if hi >= 1 << 63 or lo < -(1 << 63):  # beyond int64 arithmetic
        return raw, arr.tobytes()
    if lo == hi:
        return {"encoding": "const", "base": lo, "stored": dtype}, b""
    itemsize = np.dtype(dtype).itemsize
    best = (itemsize, raw, None)

    def narrow(span: int, tie: bool = False) -> str | None:
        for cand in ("u1", "<u2", "<u4"):
            size = np.dtype(cand).itemsize
            if span <= np.iinfo(cand).max and (size < best[0] or (tie and size == best[0] and best[2])):
                return cand
        return None

    if hi - lo < 1 << 32:
        cand = narrow(hi - lo)
        if cand is not None:
            best = (np.dtype(cand).itemsize, {"encoding": "offset", "base": lo, "stored": cand},
                    lambda c=cand: (arr.astype(np.int64) - lo).astype(c))
    if n > 1 and hi - lo < 1 << 62:
        d = np.diff(arr.astype(np.int64))
        if d.min() >= 0:
            cand = narrow(int(d.max()), tie=True)  # as narrow as the offsets: deltas compress better
            if cand is not None:
                first = int(arr[0])
                best = (np.dtype(cand).itemsize, {"encoding": "delta", "base": first, "stored": cand},
                        lambda c=cand, d=d: np.concatenate([[0], d]).astype(c))
    _, enc, make = best
    return (enc, make().tobytes()) if make is not None else (raw, arr.tobytes())


def _decode(enc: dict, raw: bytes, dtype: str, rows: int) -> np.ndarray:
    kind = enc.get("encoding", "raw")
    if kind == "raw":
        # bytes -> a writable array
        return np.frombuffer(bytearray(raw), dtype=dtype) if len(raw) < 1 << 16 else \
            np.frombuffer(raw, dtype=dtype).copy()
    base = int(enc["base"])
    if kind == "const":
        return np.full(rows, base, dtype=dtype)
    stored = np.frombuffer(raw, dtype=enc["stored"])
    if kind == "offset":
        out = stored.astype(np.int64)
        out += base
    elif kind == "delta":
        out = np.cumsum(stored, dtype=np.int64)
        out += base
    else:
        raise ValueError(kind)
    return out.astype(dtype, copy=False)


def save(trace: Trace, path: str | Path, *, version: int = FORMAT_VERSION) -> int:
    """Write ``trace`` to ``path`` (format ``version``, 2 by default; 1 for old readers); returns the file size."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"cannot write trace format version {version}")
    blobs, columns, offset = [], [], 0
    for table, spec in _TABLES.items():
        data = getattr(trace, table)
        rows = len(data[next(iter(spec))])
        for name, dtype in spec.items():
            arr = np.ascontiguousarray(data[name], dtype=dtype)
            if len(arr) != rows:
                raise ValueError(f"column {table}.{name} has the wrong length")
            enc, raw = _encode(arr, dtype) if version >= 2 else ({}, arr.tobytes())
            blob = zlib.compress(raw, 6) if raw or version < 2 else b""
            columns.append({"table": table, "name": name, "dtype": dtype, "rows": rows,
                            "offset": offset, "size": len(blob), "crc32": zlib.crc32(raw), **enc})
            blobs.append(blob)
            offset += len(blob)
    header = json.dumps({"meta": trace.meta, "columns": columns, "payload_size": offset},
                        sort_keys=True).encode()
    path = Path(path)
    with open(path, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, version, len(header)))
        f.write(header)
        for blob in blobs:
            f.write(blob)
    return path.stat().st_size


def file_version(path: str | Path) -> int | None:
    """The format version a trace file declares (None: not a trace file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_PREFIX.size)
    except OSError:
        return None
    if len(head) < _PREFIX.size:
        return None
    magic, version, _ = _PREFIX.unpack(head)
    return version if magic == MAGIC else None


def _read_regular_file(path: Path) -> tuple[str | None, bytes]:
    """(None, the whole file) if it is a regular file whose first bytes are the trace magic;
    (``"trace.dat"`` or ``"perf.data"``, b"") for another recorder's file (:data:`FOREIGN_MAGIC`).

    The magic is checked before the rest is read (a large file of another kind costs one small
    read); :func:`~rseqlab.files.open_regular` refuses devices, directories and FIFOs."""
    with open_regular(path, "trace file") as f:
        try:
            head = f.read(_PREFIX.size)
            kind = next((k for magic, k in FOREIGN_MAGIC.items() if head.startswith(magic)), None)
            if kind is not None:
                return kind, b""
            if len(head) >= len(MAGIC) and head[: len(MAGIC)] != MAGIC:
                raise BadInput(f"{path}: not an rseqlab trace, trace.dat or perf.data (bad magic)")
            return None, head + f.read()
        except OSError as exc:
            raise BadInput(f"cannot read trace file {path}: {exc.strerror or exc}") from None


#: Other recorders' files, told apart by their first bytes: trace-cmd's trace.dat, perf's perf.data.
FOREIGN_MAGIC = {b"\x17\x08\x44tracing": "trace.dat", b"PERFILE2": "perf.data"}


def foreign_kind(path: str | Path) -> str | None:
    """``"trace.dat"`` or ``"perf.data"`` when the file starts with that format's magic, else None."""
    with open_regular(Path(path), "trace file") as f:
        try:
            head = f.read(16)
        except OSError as exc:
            raise BadInput(f"cannot read trace file {path}: {exc.strerror or exc}") from None
    return next((kind for magic, kind in FOREIGN_MAGIC.items() if head.startswith(magic)), None)


def load(path: str | Path) -> Trace:
    """Read a recording: an rseqlab trace file, a trace-cmd ``trace.dat`` or a ``perf.data``
    (told apart by their magic, never by the name); any defect raises :class:`BadInput` naming
    the file and the problem."""
    path = Path(path)
    kind, data = _read_regular_file(path)
    if kind == "trace.dat":
        from .tracedat import load as load_tracedat

        return load_tracedat(path)
    if kind == "perf.data":
        from .perfdata import load as load_perfdata

        return load_perfdata(path)
    name = str(path)
    if len(data) < _PREFIX.size:
        raise BadInput(f"{name}: not an rseqlab trace (file too short)")
    magic, version, hdr_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BadInput(f"{name}: not an rseqlab trace (bad magic)")
    if version not in SUPPORTED_VERSIONS:
        raise BadInput(f"{name}: unsupported trace format version {version} "
                       f"(this rseqlab reads versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    start = _PREFIX.size + hdr_len
    if start > len(data):
        raise BadInput(f"{name}: truncated trace (header cut short)")
    try:
        header = loads_finite(data[_PREFIX.size:start])
        meta, columns, payload_size = header["meta"], header["columns"], int(header["payload_size"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BadInput(f"{name}: corrupt trace header") from None
    payload = memoryview(data)[start:]
    if len(payload) < payload_size:
        raise BadInput(f"{name}: truncated trace ({len(payload)} of {payload_size} payload bytes)")
    if len(payload) > payload_size:
        raise BadInput(f"{name}: corrupt trace ({len(payload) - payload_size} trailing bytes)")
    tables: dict[str, dict[str, np.ndarray]] = {t: {} for t in _TABLES}

    def inflate(col) -> tuple[str, str, np.ndarray]:
        table, cname, dtype = col["table"], col["name"], col["dtype"]
        if table not in _TABLES or _TABLES[table].get(cname) != dtype:
            raise BadInput(f"{name}: corrupt trace (unexpected column {table}.{cname})")
        lo, size, rows = int(col["offset"]), int(col["size"]), int(col["rows"])
        if lo < 0 or size < 0 or lo + size > payload_size or rows < 0:
            raise BadInput(f"{name}: corrupt trace (column {table}.{cname} out of bounds)")
        enc = {"encoding": "raw"} if version == 1 else col
        kind = enc.get("encoding", "raw")
        if kind not in _ENCODINGS:
            raise BadInput(f"{name}: corrupt trace (unknown encoding of column {table}.{cname})")
        stored = dtype if kind == "raw" else enc["stored"]
        if stored not in _STORED:
            raise BadInput(f"{name}: corrupt trace (unknown encoding of column {table}.{cname})")
        expect = 0 if kind == "const" else rows * np.dtype(stored).itemsize
        raw = zlib.decompress(payload[lo : lo + size], 15, max(expect, 1)) if size else b""
        if zlib.crc32(raw) != col["crc32"] or len(raw) != expect:
            raise BadInput(f"{name}: corrupt trace (checksum of column {table}.{cname})")
        return table, cname, _decode(enc, raw, dtype, rows)

    try:
        if not isinstance(columns, list):
            raise TypeError
        # zlib, crc32 and numpy's casts release the GIL: the columns decode in parallel threads.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 1) or 1) as pool:
            for table, cname, arr in pool.map(inflate, columns):
                tables[table][cname] = arr
    except zlib.error:
        raise BadInput(f"{name}: corrupt trace (compressed data damaged)") from None
    except (KeyError, TypeError, ValueError, OverflowError):
        raise BadInput(f"{name}: corrupt trace (column table)") from None
    for table, spec in _TABLES.items():
        missing = [c for c in spec if c not in tables[table]]
        if missing:
            raise BadInput(f"{name}: corrupt trace (missing column {table}.{missing[0]})")
        lengths = {len(v) for v in tables[table].values()}
        if len(lengths) > 1:
            raise BadInput(f"{name}: corrupt trace (columns of {table} differ in length)")
    problem = check_meta(meta)
    if problem:
        raise BadInput(f"{name}: corrupt trace metadata ({problem})")
    trace = Trace(meta, tables["events"], tables["sysargs"])
    problem = check_rows(trace)
    if problem:
        raise BadInput(f"{name}: corrupt trace ({problem})")
    return trace


#: Upper bounds that keep a damaged header from asking for absurd work (a machine's CPUs).
MAX_CPUS = 8192


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_meta(meta) -> str | None:
    """What is wrong with the metadata keys the replay and the reports read (None: nothing).

    Unknown keys are allowed (recorders add their own); a known key of the wrong type or out of
    range would otherwise surface later as a traceback or a silently wrong replay."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    cpus = meta.get("cpus", 1)
    if not _is_int(cpus, 1, MAX_CPUS):
        return f"cpus must be an integer in 1..{MAX_CPUS}"
    topo = meta.get("topology", {})
    if not isinstance(topo, dict):
        return "topology must be an object"
    nodes = topo.get("node_of_cpu")
    if nodes is not None and not (isinstance(nodes, list) and 1 <= len(nodes) <= MAX_CPUS
                                  and all(_is_int(n, 0, MAX_CPUS) for n in nodes)):
        return "topology.node_of_cpu must be a list of node numbers, one per CPU"
    kernel = meta.get("kernel", {})
    if not isinstance(kernel, dict):
        return "kernel must be an object"
    hz = kernel.get("hz")
    if hz is not None and not _is_int(hz, 1, 100_000):
        return "kernel.hz must be a positive integer"
    if not isinstance(kernel.get("release", ""), str):
        return "kernel.release must be a string"
    root = meta.get("root", {})
    if not isinstance(root, dict):
        return "root must be an object"
    for key, hi in (("pid", 1 << 31), ("rseq_addr", (1 << 64) - 1), ("rseq_len", 1 << 31)):
        if root.get(key) is not None and not _is_int(root[key], 0, hi):
            return f"root.{key} must be a non-negative integer"
    for key in ("tasks", "lost", "recorder", "events", "glibc"):
        if not isinstance(meta.get(key, {}), dict):
            return f"{key} must be an object"
    if not all(isinstance(v, str) for v in meta.get("tasks", {}).values()):
        return "tasks must map pids to command names"
    lost = meta.get("lost", {}).get("total", 0)
    if not _is_int(lost, 0, 1 << 62):
        return "lost.total must be a non-negative integer"
    dur = meta.get("duration_ns", 0)
    if not (isinstance(dur, (int, float)) and not isinstance(dur, bool) and 0 <= dur < 1 << 62):
        return "duration_ns must be a non-negative number"
    command = meta.get("command", [])
    if not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        return "command must be a list of strings"
    return None


def check_rows(trace: Trace) -> str | None:
    """What is wrong with the rows' references (None: nothing): kinds, CPUs, sysargs rows."""
    ev = trace.events
    kinds = ev["kind"]
    if len(kinds) and int(kinds.max()) >= len(Kind):
        return f"unknown event kind {int(kinds.max())}"
    nodes = trace.meta.get("topology", {}).get("node_of_cpu")
    ncpus = len(nodes) if nodes else int(trace.meta.get("cpus", 1))
    if len(kinds) and (int(ev["cpu"].min()) < 0 or int(ev["cpu"].max()) >= ncpus):
        return f"an event on a CPU the metadata does not declare ({ncpus} CPUs)"
    nargs = len(trace.sysargs["event"])
    if nargs and int(trace.sysargs["event"].max()) >= len(trace):
        return "sysargs point past the events"
    refs = ev["b"][kinds == Kind.SYS_ENTER]
    if len(refs) and (int(refs.min()) < -1 or int(refs.max()) >= nargs):
        return "a syscall entry points past the sysargs table"
    return None
