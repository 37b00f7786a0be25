"""Read a trace-cmd ``trace.dat`` (file format versions 6 and 7) natively, into a :class:`Trace`.

A trace.dat holds what ``trace/parse.py`` already decodes for the live recorder: the event
``format`` files and the raw per-CPU ring-buffer pages. This module reads the container around
them (the layouts are those of the ``trace-cmd.dat.v6(5)`` and ``trace-cmd.dat.v7(5)`` manual
pages) and hands the pages to :func:`~rseqlab.trace.parse.walk_pages` and
:func:`~rseqlab.trace.build.build_trace`, so a trace.dat replays through exactly the code a
native recording does; there is no text round trip.

* Version 6: a fixed sequence (header page and event formats, ftrace and event format files,
  kallsyms, printk formats, saved command lines, the CPU count, options, then ``flyrecord`` and
  one (offset, size) per CPU). An instance (``trace-cmd record -B NAME``) is a ``BUFFER`` option
  pointing at another ``flyrecord`` block.
* Version 7: a compression header (``none``, ``zlib`` or ``zstd``), then sections located by the
  options sections (a chain); any section may be compressed; trace data is compressed in chunks.

The recording is system-wide (``trace-cmd record COMMAND`` traces every CPU while COMMAND runs):
the workload is the process trace-cmd started, found as the first task that ``exec``\\s out of a
``trace-cmd`` (or ``perf``) process, else the first ``exec`` of the file; its descendants follow
from the fork events, as in a native recording.
"""

from __future__ import annotations

import platform
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..files import map_regular
from . import parse
from .format import Trace

#: The first 10 bytes of every trace.dat: 0x17 0x08 0x44 and "tracing".
MAGIC = b"\x17\x08\x44tracing"
SUPPORTED_VERSIONS = (6, 7)

# Option IDs (trace-cmd.dat.v7(5), "OPTIONS SECTION").
_OPT_DONE, _OPT_DATE, _OPT_CPUSTAT, _OPT_BUFFER, _OPT_TRACECLOCK, _OPT_UNAME = 0, 1, 2, 3, 4, 5
_OPT_CPUCOUNT, _OPT_VERSION = 8, 9
_OPT_HEADER_INFO, _OPT_FTRACE_EVENTS, _OPT_EVENT_FORMATS, _OPT_KALLSYMS, _OPT_PRINTK, _OPT_CMDLINES = \
    16, 17, 18, 19, 20, 21
_SECTION_COMPRESSED = 1
#: Processes whose child's exec is the recorded command (trace-cmd record, perf record).
RECORDER_COMMS = ("trace-cmd", "perf", "perf-exec")


class _Truncated(Exception):
    pass


class _Reader:
    """Little-endian reads from the file's bytes with bounds checks (one BadInput on damage)."""

    def __init__(self, data, name: str) -> None:
        self.data = data
        self.name = name

    def need(self, at: int, n: int) -> None:
        if at < 0 or n < 0 or at + n > len(self.data):
            raise _Truncated

    def u16(self, at: int) -> int:
        self.need(at, 2)
        return struct.unpack_from("<H", self.data, at)[0]

    def u32(self, at: int) -> int:
        self.need(at, 4)
        return struct.unpack_from("<I", self.data, at)[0]

    def u64(self, at: int) -> int:
        self.need(at, 8)
        return struct.unpack_from("<Q", self.data, at)[0]

    def bytes(self, at: int, n: int) -> bytes:
        self.need(at, n)
        return bytes(self.data[at : at + n])

    def cstr(self, at: int) -> tuple[str, int]:
        """A NUL-terminated string at ``at`` and the position after it."""
        end = self.data.find(b"\0", at, min(len(self.data), at + 4096))
        if end < 0:
            raise _Truncated
        return bytes(self.data[at:end]).decode("utf-8", "replace"), end + 1


class _Decompressor:
    def __init__(self, algo: str, name: str) -> None:
        self.algo = algo
        if algo == "zstd":
            import zstandard

            self._z = zstandard.ZstdDecompressor()
        elif algo not in ("zlib", "none"):
            raise BadInput(f"{name}: trace.dat compressed with {algo!r}, which rseqlab cannot read "
                           "(it reads none, zlib and zstd)")

    def __call__(self, blob, size: int) -> bytes:
        if self.algo == "zstd":
            return self._z.decompress(blob, max_output_size=size)
        return zlib.decompress(blob, 15, size)


class TraceDat:
    """The parts of a trace.dat the replay uses (see :func:`read`)."""

    def __init__(self) -> None:
        self.version = 0
        self.page_size = 4096
        self.compression = "none"
        self.header_page = ""
        self.formats: dict[tuple[str, str], parse.EventFormat] = {}
        self.cmdlines: dict[int, str] = {}
        self.uname = ""
        self.tracer_version = ""
        self.cpus = 0
        self.clock = ""
        self.cpustat: list[str] = []
        #: instance name -> {cpu: raw page bytes (a view into ``flat``)}
        self.buffers: dict[str, dict[int, memoryview]] = {}
        #: every buffer's pages back to back, by CPU and then in ``buffers`` order (None: laid
        #: out otherwise, see :func:`_inflate`); ``flat_cpus``: (cpu, bytes) of each part
        self.flat: np.ndarray | None = None
        self.flat_cpus: list[tuple[int, int]] = []


def is_tracedat(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read(path: str | Path) -> TraceDat:
    """Parse a trace.dat: formats, command lines, system facts and every instance's pages."""
    path = Path(path)
    name = str(path)
    data = map_regular(path, "trace file")
    try:
        return _parse(_Reader(data, name))
    except _Truncated:
        raise BadInput(f"{name}: truncated or corrupt trace.dat") from None
    except (zlib.error, ValueError, KeyError, IndexError, struct.error) as exc:
        if isinstance(exc, BadInput):
            raise
        raise BadInput(f"{name}: corrupt trace.dat ({type(exc).__name__})") from None
    except Exception as exc:  # zstandard raises its own error type
        if type(exc).__name__ == "ZstdError":
            raise BadInput(f"{name}: corrupt trace.dat (compressed data damaged)") from None
        raise


def _parse(r: _Reader) -> TraceDat:
    td = TraceDat()
    if r.bytes(0, len(MAGIC)) != MAGIC:
        raise BadInput(f"{r.name}: not a trace.dat (bad magic)")
    ver, at = r.cstr(len(MAGIC))
    if not ver.isdigit() or int(ver) not in SUPPORTED_VERSIONS:
        raise BadInput(f"{r.name}: trace.dat file version {ver!r} is not supported (rseqlab reads 6 and 7)")
    td.version = int(ver)
    big_endian, long_size = r.bytes(at, 2)
    if big_endian:
        raise BadInput(f"{r.name}: big-endian trace.dat files are not supported")
    td.page_size = r.u32(at + 2)
    at += 6
    if td.version == 6:
        _parse_v6(r, td, at)
    else:
        _parse_v7(r, td, at)
    m = re.search(r"field: local_t commit;\s*offset:(\d+);\s*size:(\d+);", td.header_page)
    if m and (int(m.group(1)), int(m.group(2))) != (8, 8):
        raise BadInput(f"{r.name}: the recording's kernel is not 64-bit (ring-buffer page header "
                       f"commit at {m.group(1)}, size {m.group(2)}); rseqlab reads 64-bit recordings only")
    return td


# ----------------------------------------------------------------------
# Version 6
# ----------------------------------------------------------------------
def _parse_v6(r: _Reader, td: TraceDat, at: int) -> None:
    at = _header_info(r, td, at)
    count = r.u32(at)
    at += 4
    for _ in range(count):  # ftrace's own events: not replayed
        at += 8 + r.u64(at)
    at = _event_formats(r, td, at)
    at += 4 + r.u32(at)  # kallsyms
    at += 4 + r.u32(at)  # printk formats
    n = r.u64(at)
    td.cmdlines = _cmdlines(r.bytes(at + 8, n))
    at += 8 + n
    td.cpus = r.u32(at)
    at += 4
    kind = r.bytes(at, 10)
    at += 10
    buffers: list[tuple[str, int]] = []
    if kind == b"options  \0":
        while True:
            oid = r.u16(at)
            if oid == _OPT_DONE:
                at += 2
                break
            size = r.u32(at + 2)
            _option(r, td, oid, r.bytes(at + 6, size), buffers)
            at += 6 + size
        kind = r.bytes(at, 10)
        at += 10
    if kind == b"latency  \0":
        raise BadInput(f"{r.name}: a latency-tracer trace.dat holds text, not events; record events "
                       "(trace-cmd record -e ...)")
    if kind != b"flyrecord\0":
        raise BadInput(f"{r.name}: corrupt trace.dat (no flyrecord data)")
    pending = {"": _v6_cpus(r, td, at)}
    for name, off in buffers:
        if r.bytes(off, 10) != b"flyrecord\0":
            raise BadInput(f"{r.name}: corrupt trace.dat (buffer {name!r} has no flyrecord data)")
        pending[name] = _v6_cpus(r, td, off + 10)
    _inflate(r, None, td, pending)


def _v6_cpus(r: _Reader, td: TraceDat, at: int) -> dict[int, list[tuple[int, int, int | None]]]:
    out = {}
    for cpu in range(td.cpus):
        off, size = r.u64(at + 16 * cpu), r.u64(at + 16 * cpu + 8)
        if size:
            r.need(off, size)
            out[cpu] = [(off, size, None)]
    return out


# ----------------------------------------------------------------------
# Version 7
# ----------------------------------------------------------------------
def _parse_v7(r: _Reader, td: TraceDat, at: int) -> None:
    algo, at = r.cstr(at)
    _, at = r.cstr(at)  # the compressor's version
    td.compression = algo
    unpack = _Decompressor(algo, r.name)
    offset = r.u64(at)
    sections: dict[int, int] = {}
    buffers: list[tuple[str, int, int, list[tuple[int, int, int]]]] = []
    seen = set()
    while offset:
        if offset in seen:
            raise BadInput(f"{r.name}: corrupt trace.dat (the options sections loop)")
        seen.add(offset)
        body = _section(r, unpack, offset, expect=0)
        offset = 0
        q = 0
        while q + 6 <= len(body):
            oid, size = struct.unpack_from("<HI", body, q)
            data = body[q + 6 : q + 6 + size]
            if len(data) != size:
                raise _Truncated
            q += 6 + size
            if oid == _OPT_DONE:
                offset = struct.unpack_from("<Q", data)[0]
                break
            if oid in (_OPT_HEADER_INFO, _OPT_EVENT_FORMATS, _OPT_CMDLINES):
                sections[oid] = struct.unpack_from("<Q", data)[0]
            elif oid in (_OPT_FTRACE_EVENTS, _OPT_KALLSYMS, _OPT_PRINTK):  # not read; must be whole
                at = struct.unpack_from("<Q", data)[0]
                r.need(at + 16, r.u64(at + 8))
            elif oid == _OPT_BUFFER:
                buffers.append(_v7_buffer(data))
            else:
                _option(r, td, oid, data, None)
    for oid in (_OPT_HEADER_INFO, _OPT_EVENT_FORMATS):
        if oid not in sections:
            raise BadInput(f"{r.name}: corrupt trace.dat (no {'header' if oid == 16 else 'event formats'} section)")
    _header_info(_Reader(_section(r, unpack, sections[_OPT_HEADER_INFO], _OPT_HEADER_INFO), r.name), td, 0)
    _event_formats(_Reader(_section(r, unpack, sections[_OPT_EVENT_FORMATS], _OPT_EVENT_FORMATS), r.name), td, 0)
    if _OPT_CMDLINES in sections:
        body = _section(r, unpack, sections[_OPT_CMDLINES], _OPT_CMDLINES)
        n = struct.unpack_from("<Q", body)[0]
        td.cmdlines = _cmdlines(body[8 : 8 + n])
    pending = {}
    for name, section_at, page_size, cpus in buffers:
        _, flags, _, _ = struct.unpack_from("<HHIQ", r.bytes(section_at, 16))
        compressed = bool(flags & _SECTION_COMPRESSED) and algo != "none"
        per_cpu = {}
        for cpu, off, size in cpus:
            if not size:
                continue
            if compressed:
                per_cpu[cpu] = _chunks(r, off, size)
            else:
                r.need(off, size)
                per_cpu[cpu] = [(off, size, None)]
        pending[name] = per_cpu
        td.page_size = page_size or td.page_size
        td.cpus = max(td.cpus, max((c for c, _, _ in cpus), default=-1) + 1)
    _inflate(r, unpack, td, pending)


def _section(r: _Reader, unpack, at: int, expect: int | None) -> bytes:
    """A section's (inflated) body; ``expect`` is the section ID it must carry."""
    sid, flags, _, size = struct.unpack_from("<HHIQ", r.bytes(at, 16))
    if expect is not None and sid != expect:
        raise BadInput(f"{r.name}: corrupt trace.dat (section {sid} where {expect} was expected)")
    if flags & _SECTION_COMPRESSED:
        csize, usize = r.u32(at + 16), r.u32(at + 20)
        return unpack(r.bytes(at + 24, csize), usize)
    return r.bytes(at + 16, size)


def _chunks(r: _Reader, at: int, size: int) -> list[tuple[int, int, int]]:
    """Compressed trace data: a count, then (compressed size, size, data) chunks, as (data
    offset, compressed size, size). trace-cmd 3.1 records ``size`` without the count's own 4 bytes."""
    end = at + 4 + size
    count = r.u32(at)
    at += 4
    out = []
    for _ in range(count):
        csize, usize = r.u32(at), r.u32(at + 4)
        if at + 8 + csize > end:
            raise _Truncated
        r.need(at + 8, csize)
        out.append((at + 8, csize, usize))
        at += 8 + csize
    return out


def _inflate(r: _Reader, unpack, td: TraceDat, pending: dict[str, dict[int, list[tuple[int, int, int | None]]]]) -> None:
    """Fill ``td.buffers`` from ``pending`` (per instance and CPU: its pieces, (offset, size,
    None) stored or (offset, compressed size, size) compressed): every piece inflated straight
    into one array, ordered as :func:`~rseqlab.trace.parse.walk_pages` would lay the CPUs' pages
    out, so the reader needs no per-CPU joins nor that copy. A piece that inflates to another size
    than its header says (a damaged file) gets its CPU data of its own and ``td.flat`` None."""
    parts = sorted(((cpu, i, name) for i, (name, per_cpu) in enumerate(pending.items()) for cpu in per_cpu))
    sizes = [sum(p[1] if p[2] is None else p[2] for p in pending[name][cpu]) for cpu, _, name in parts]
    flat = np.empty(sum(sizes), np.uint8)
    views: dict[tuple[str, int], memoryview] = {}
    contiguous = True
    pos = 0
    for (cpu, _, name), size in zip(parts, sizes):
        at, odd = pos, []
        for off, n, usize in pending[name][cpu]:
            if usize is None:  # stored: copied from the mapped file once
                flat[at : at + n] = np.frombuffer(r.data, np.uint8, n, off)
                at += n
                continue
            blob = unpack(r.data[off : off + n], usize)
            if odd or len(blob) != usize:
                odd.append(bytes(blob))
                continue
            flat[at : at + len(blob)] = np.frombuffer(blob, np.uint8)
            at += len(blob)
        if odd:  # the pieces before the odd one, then the rest as they came
            contiguous = False
            views[(name, cpu)] = memoryview(bytes(flat[pos:at]) + b"".join(odd))
        else:
            views[(name, cpu)] = memoryview(flat[pos : pos + size])
        pos += size
    td.buffers = {name: {cpu: views[(name, cpu)] for cpu in per_cpu} for name, per_cpu in pending.items()}
    td.flat = flat if contiguous else None
    td.flat_cpus = [(cpu, size) for (cpu, _, _), size in zip(parts, sizes)]


def _v7_buffer(data: bytes) -> tuple[str, int, int, list[tuple[int, int, int]]]:
    off = struct.unpack_from("<Q", data)[0]
    rd = _Reader(data, "")
    name, at = rd.cstr(8)
    _clock, at = rd.cstr(at)
    page_size, count = struct.unpack_from("<II", data, at)
    at += 8
    cpus = [struct.unpack_from("<IQQ", data, at + 20 * k) for k in range(count)]
    return name, off, page_size, cpus


# ----------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------
def _option(r: _Reader, td: TraceDat, oid: int, data: bytes, buffers: list | None) -> None:
    text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
    if oid == _OPT_CPUSTAT:
        td.cpustat.append(text)
    elif oid == _OPT_UNAME:
        td.uname = text
    elif oid == _OPT_VERSION:
        td.tracer_version = text
    elif oid == _OPT_TRACECLOCK:
        m = re.search(r"\[(\S+)\]", text)
        td.clock = m.group(1) if m else td.clock
    elif oid == _OPT_CPUCOUNT and len(data) >= 4:
        td.cpus = max(td.cpus, struct.unpack_from("<I", data)[0])
    elif oid == _OPT_BUFFER and buffers is not None:  # version 6: offset, name
        name, _ = _Reader(data, r.name).cstr(8)
        buffers.append((name, struct.unpack_from("<Q", data)[0]))


def _header_info(r: _Reader, td: TraceDat, at: int) -> int:
    if r.bytes(at, 12) != b"header_page\0":
        raise BadInput(f"{r.name}: corrupt trace.dat (no header_page)")
    n = r.u64(at + 12)
    td.header_page = r.bytes(at + 20, n).decode("utf-8", "replace")
    at += 20 + n
    if r.bytes(at, 13) != b"header_event\0":
        raise BadInput(f"{r.name}: corrupt trace.dat (no header_event)")
    return at + 21 + r.u64(at + 13)


def _event_formats(r: _Reader, td: TraceDat, at: int) -> int:
    systems = r.u32(at)
    at += 4
    for _ in range(systems):
        system, at = r.cstr(at)
        count = r.u32(at)
        at += 4
        for _ in range(count):
            n = r.u64(at)
            text = r.bytes(at + 8, n).decode("utf-8", "replace")
            at += 8 + n
            try:
                fmt = parse.parse_format(system, text)
            except ValueError:
                continue  # a format this reader cannot lay out is one the replay does not use
            td.formats[(system, fmt.name)] = fmt
    return at


def _cmdlines(blob: bytes) -> dict[int, str]:
    out = {}
    for line in blob.decode("utf-8", "replace").splitlines():
        pid, _, comm = line.partition(" ")
        if pid.isdigit():
            out[int(pid)] = comm
    return out


def lost_from_cpustat(texts: list[str]) -> dict[int, int]:
    """Per CPU, the events the ring buffer lost (``overrun`` + ``dropped events``), summed over
    the instances whose statistics the file keeps."""
    out: dict[int, int] = {}
    for text in texts:
        m = re.search(r"^CPU: (\d+)", text, re.M)
        if not m:
            continue
        lost = sum(int(x) for x in re.findall(r"^(?:overrun|dropped events): (\d+)", text, re.M))
        out[int(m.group(1))] = out.get(int(m.group(1)), 0) + lost
    return out


def find_root(rec: parse.RawRecords, formats, ctype: np.ndarray | parse.EventIndex) -> int | None:
    """The recorded command's first pid: the first task to exec out of a recorder process
    (``RECORDER_COMMS``: its comm at its last switch-out before the exec), else the first task
    that execs at all (None: no exec in the file). ``ctype``: the records' event IDs or their
    :class:`~rseqlab.trace.parse.EventIndex`."""
    index = ctype if isinstance(ctype, parse.EventIndex) else parse.EventIndex(rec, ctype)
    exe = formats.get(("sched", "sched_process_exec"))
    if exe is None:
        return None
    ex, ex_ts, _, _ = parse.fields_of(index, exe, ("pid",))
    if len(ex_ts) == 0:
        return None
    order = np.argsort(ex_ts, kind="stable")
    pids = ex["pid"][order].astype(np.int64)
    ts = ex_ts[order]
    before: dict[int, str] = {}
    sw = formats.get(("sched", "sched_switch"))
    if sw is not None:
        s, s_ts, _, s_seq = parse.fields_of(index, sw, ("prev_pid",))
        cand = np.isin(s["prev_pid"], pids[:64])
        prev_pid, s_ts, s_seq = s["prev_pid"][cand], s_ts[cand], s_seq[cand]
        for pid, t in zip(pids.tolist()[:64], ts.tolist()[:64]):
            sel = np.nonzero((prev_pid == pid) & (s_ts < t))[0]
            if len(sel):
                comm = parse.field_at(rec, rec.offset[s_seq[sel[-1:]]], sw, "prev_comm")
                before[pid] = parse.cstr(comm)[0]
    for pid in pids.tolist()[:64]:
        if before.get(pid) in RECORDER_COMMS:
            return pid
    return int(pids[0])


def load(path: str | Path) -> Trace:
    """A trace.dat as a replayable :class:`Trace`; any damage is one :class:`BadInput`."""
    return damage_is_bad_input(_load, path, "trace.dat")


def damage_is_bad_input(loader, path: str | Path, kind: str) -> Trace:
    """``loader(path)``, with a decoding error from a damaged file (an offset past the end, an
    unknown id) turned into one :class:`BadInput` line naming the file and its ``kind``."""
    try:
        return loader(path)
    except (ValueError, IndexError, KeyError, OverflowError) as exc:
        if isinstance(exc, BadInput):
            raise
        raise BadInput(f"{path}: corrupt {kind} ({exc})") from None


def _pages_by_cpu(td: TraceDat) -> dict[int, list[memoryview]]:
    pages: dict[int, list[memoryview]] = {}
    for per_cpu in td.buffers.values():
        for cpu, blob in per_cpu.items():
            pages.setdefault(cpu, []).append(blob)
    return pages


def _load(path: str | Path) -> Trace:
    """A trace.dat as a replayable :class:`Trace` (the workload's process tree, see the module)."""
    from .build import build_trace, config_hz, prefetch
    from .events import missing_events_message, recorded_events

    name = str(path)
    td = read(path)
    problem = missing_events_message(name, td.formats, "trace-cmd")
    if problem:
        raise BadInput(problem)
    pages = _pages_by_cpu(td)  # (no loop variable left holding a page buffer: see below)
    npages = sum(sum(len(b) for b in blobs) // td.page_size for blobs in pages.values())
    if td.flat is not None and all(size % td.page_size == 0 for _, size in td.flat_cpus):
        # The pages are already laid out as walk_pages would join them: no copy.
        page_cpu = np.repeat(np.array([c for c, _ in td.flat_cpus], np.int16),
                             [size // td.page_size for _, size in td.flat_cpus])
        rec = parse.walk_flat(td.flat, page_cpu, td.page_size)
    else:
        rec = parse.walk_pages({cpu: b"".join(blobs) for cpu, blobs in pages.items()}, td.page_size)
    index = parse.EventIndex(rec)
    formats = {k: td.formats[k] for k in recorded_events() if k in td.formats}
    prefetch(index, formats)  # every field build_trace reads, find_root's among them
    root = find_root(rec, formats, index)
    if root is None:
        raise BadInput(f"{name}: the recording has no exec (sched:sched_process_exec), so the recorded "
                       "command cannot be told from the rest of the system")
    cpus = max(td.cpus, int(rec.cpu.max()) + 1 if len(rec.cpu) else 1)
    t0 = int(rec.ts.min()) if len(rec.ts) else 0
    t1 = int(rec.ts.max()) if len(rec.ts) else 0
    uname = td.uname.split()
    meta = {
        "format": "rseqlab-trace",
        "source": {"kind": "trace.dat", "file": name, "version": td.version, "compression": td.compression,
                   "tracer": f"trace-cmd {td.tracer_version}".strip(), "clock": td.clock,
                   "instances": sorted(n or "(top)" for n, cpus_ in td.buffers.items() if cpus_)},
        "command": [td.cmdlines.get(root, "?")],
        "cwd": "",
        "start": {"utc": "", "mono_ns": t0},
        "duration_ns": t1 - t0,
        "exit_status": None,
        "kernel": {"release": uname[2] if len(uname) > 2 else "", "version": "",
                   "machine": uname[-1] if len(uname) > 3 else "", "hz": None, "hz_source": "unknown"},
        "cpus": cpus,
        "topology": {"node_of_cpu": [0] * cpus},
        # The command was started by trace-cmd, a glibc program: registered with glibc's 32 bytes.
        "glibc": {"version": "", "rseq_size": 32, "rseq_offset": 0, "rseq_tunable_off": False,
                  "registered_size": 32},
        "root": {"pid": root, "rseq_registered": True, "rseq_addr": 0, "rseq_len": 32},
        "buffer_kb_per_cpu": 0,
        "page_size": td.page_size,
        "recorder": {"reader_cpu_s": 0.0, "pages": npages,
                     "workload_cpu_s": 0.0},
    }
    if meta["kernel"]["release"] == platform.release():  # recorded here: this kernel's own CONFIG_HZ
        meta["kernel"]["hz"], meta["kernel"]["hz_source"] = config_hz(platform.release())
    lost = lost_from_cpustat(td.cpustat)
    page_size = td.page_size
    del td, pages  # the pages are now held by rec alone, which build_trace empties once decoded
    return build_trace(rec, None, formats, page_size, meta, lost, {}, t0, ctype=index, release=True)
