"""Read a ``perf.data`` of tracepoints (``perf record -a -e sys:event ...``) natively, into a :class:`Trace`.

Why native rather than ``perf script``: a tracepoint sample carries the event's binary record
(``PERF_SAMPLE_RAW``: the same bytes, starting with ``common_type``, that a ring-buffer page
holds), and the file carries the event ``format`` files (the ``HEADER_TRACING_DATA`` feature, in
trace-cmd's version 6 layout). So the samples become :class:`~rseqlab.trace.parse.RawRecords` and
go through :func:`~rseqlab.trace.build.build_trace` like a native recording; no text is parsed.

The layout is perf's (``tools/perf/util/header.c``, ``include/uapi/linux/perf_event.h``): a
``perf_file_header`` (magic ``PERFILE2``, the attrs, data and feature sections, the feature
bitmap), one ``perf_event_attr`` + ids per event, then records ``{u32 type, u16 misc, u16 size}``.
A sample's fields follow ``sample_type`` bit order (IDENTIFIER, IP, TID, TIME, ADDR, ID,
STREAM_ID, CPU, PERIOD, READ, CALLCHAIN, RAW); with several events, ``PERF_SAMPLE_IDENTIFIER``
(first) says which attr a sample belongs to. ``PERF_RECORD_LOST`` and ``PERF_RECORD_LOST_SAMPLES``
count what the kernel dropped; their ``sample_id`` trailer (``sample_id_all``) gives CPU and time.
The walk over the records is compiled with numba (two passes: count, then fill).
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..files import map_regular
from . import parse, tracedat
from .format import Trace

MAGIC = b"PERFILE2"
_HEADER = struct.Struct("<8sQQ QQ QQ QQ 4Q")
_ATTR_HEAD = struct.Struct("<IIQQQQQ")  # type, size, config, sample_period, sample_type, read_format, flags

# sample_type bits (include/uapi/linux/perf_event.h)
S_IP, S_TID, S_TIME, S_ADDR, S_READ, S_CALLCHAIN, S_ID, S_CPU, S_PERIOD, S_STREAM_ID, S_RAW = \
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10
S_IDENTIFIER = 1 << 16
_SAMPLE_ID_ALL = 1 << 18  # perf_event_attr.flags bit
REC_LOST, REC_SAMPLE, REC_LOST_SAMPLES, REC_COMPRESSED = 2, 9, 13, 81
FEAT_TRACING_DATA, FEAT_OSRELEASE, FEAT_VERSION, FEAT_ARCH, FEAT_NRCPUS = 1, 4, 5, 6, 7

try:
    from numba import njit
except ImportError:  # without the `fast` extra (numba): same result, slower
    def njit(*a, **k):
        return (lambda f: f) if not (a and callable(a[0])) else a[0]


@njit(cache=True)
def _u64(buf, p):
    v = np.uint64(0)
    for i in range(8):
        v |= np.uint64(buf[p + i]) << np.uint64(8 * i)
    return v


@njit(cache=True)
def _walk(buf, start, end, ids, id_kind, single_kind, time_off, cpu_off, raw_off, fill,
          out_off, out_len, out_ts, out_cpu, lost_at):
    """Walk the records of ``buf[start:end]``; count (``fill`` False) or store the tracepoint
    samples (payload offset and length, time, CPU) and the positions of lost-event records.
    Returns (samples, lost records, position where the walk stopped)."""
    n = 0
    nl = 0
    p = start
    while p + 8 <= end:
        rtype = np.uint32(buf[p]) | (np.uint32(buf[p + 1]) << 8) | (np.uint32(buf[p + 2]) << 16) | \
            (np.uint32(buf[p + 3]) << 24)
        size = np.int64(buf[p + 6]) | (np.int64(buf[p + 7]) << 8)
        if size < 8 or p + size > end:
            break
        if rtype == 9:
            k = single_kind
            if k < 0:
                ident = _u64(buf, p + 8)
                j = np.searchsorted(ids, ident)
                k = id_kind[j] if j < len(ids) and ids[j] == ident else -1
            if k >= 0 and raw_off[k] >= 0:
                q = p + 8 + raw_off[k]
                if q + 4 <= p + size:
                    rsize = np.int64(buf[q]) | (np.int64(buf[q + 1]) << 8) | (np.int64(buf[q + 2]) << 16) | \
                        (np.int64(buf[q + 3]) << 24)
                    if q + 4 + rsize <= p + size:
                        if fill:
                            out_off[n] = q + 4
                            out_len[n] = rsize
                            out_ts[n] = _u64(buf, p + 8 + time_off[k]) if time_off[k] >= 0 else 0
                            out_cpu[n] = np.int16(buf[p + 8 + cpu_off[k]]) | \
                                (np.int16(buf[p + 9 + cpu_off[k]]) << 8) if cpu_off[k] >= 0 else 0
                        n += 1
        elif rtype == 2 or rtype == 13:
            if fill:
                lost_at[nl] = p
            nl += 1
        p += size
    return n, nl, p


def _layout(stype: int) -> tuple[int, int, int]:
    """Byte offsets of TIME, CPU and RAW in a sample of ``stype`` (-1: absent)."""
    off, t, c = 0, -1, -1
    for bit in (S_IDENTIFIER, S_IP, S_TID, S_TIME, S_ADDR, S_ID, S_STREAM_ID, S_CPU, S_PERIOD):
        if stype & bit:
            if bit == S_TIME:
                t = off
            elif bit == S_CPU:
                c = off
            off += 8
    if stype & (S_READ | S_CALLCHAIN):
        return t, c, -2  # variable-sized fields before RAW
    return t, c, off if stype & S_RAW else -1


def _trailer(stype: int) -> tuple[int, int]:
    """Offsets from a record's end of the ``sample_id`` TIME and CPU (-1: absent)."""
    fields = [b for b in (S_TID, S_TIME, S_ID, S_STREAM_ID, S_CPU, S_IDENTIFIER) if stype & b]
    size = 8 * len(fields)
    pos = {b: size - 8 * i for i, b in enumerate(fields)}
    return pos.get(S_TIME, -1), pos.get(S_CPU, -1)


class PerfData:
    def __init__(self) -> None:
        self.formats: dict[tuple[str, str], parse.EventFormat] = {}
        self.cmdlines: dict[int, str] = {}
        self.page_size = 4096
        self.release = ""
        self.perf_version = ""
        self.arch = ""
        self.cpus = 0
        self.records: parse.RawRecords | None = None
        self.lost_per_cpu: dict[int, int] = {}
        self.samples_dropped = 0


def _string_feature(data, off: int, size: int) -> str:
    if size < 4:
        return ""
    n = struct.unpack_from("<I", data, off)[0]
    return bytes(data[off + 4 : off + 4 + min(n, size - 4)]).split(b"\0", 1)[0].decode("utf-8", "replace")


def read(path: str | Path) -> PerfData:
    path = Path(path)
    name = str(path)
    data = map_regular(path, "trace file")
    try:
        return _parse(data, name)
    except (struct.error, IndexError, ValueError, tracedat._Truncated):
        raise BadInput(f"{name}: truncated or corrupt perf.data") from None


def _parse(data, name: str) -> PerfData:
    if len(data) < _HEADER.size:
        raise BadInput(f"{name}: truncated or corrupt perf.data")
    (magic, hsize, attr_size, a_off, a_size, d_off, d_size, _e_off, _e_size, *feat) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadInput(f"{name}: not a perf.data (bad magic)")
    if d_size == 0:
        raise BadInput(f"{name}: perf.data without data (a pipe-mode or unfinished recording)")
    if d_off + d_size > len(data) or a_off + a_size > len(data) or attr_size < _ATTR_HEAD.size + 16:
        raise BadInput(f"{name}: truncated or corrupt perf.data")
    pd = PerfData()
    # Features: one (offset, size) per set bit, in bit order, right after the data.
    bits = [b for b in range(256) if feat[b // 64] >> (b % 64) & 1]
    sections = {}
    for k, b in enumerate(bits):
        off, sz = struct.unpack_from("<QQ", data, d_off + d_size + 16 * k)
        if off + sz > len(data):
            raise BadInput(f"{name}: truncated or corrupt perf.data (feature section {b})")
        sections[b] = (off, sz)
    if FEAT_TRACING_DATA not in sections:
        raise BadInput(f"{name}: the perf.data holds no tracepoint formats (record tracepoints: "
                       "perf record -e sys:event ...)")
    _tracing_data(data, *sections[FEAT_TRACING_DATA], pd, name)
    for feature, attr in ((FEAT_OSRELEASE, "release"), (FEAT_VERSION, "perf_version"), (FEAT_ARCH, "arch")):
        if feature in sections:
            setattr(pd, attr, _string_feature(data, *sections[feature]))
    if FEAT_NRCPUS in sections and sections[FEAT_NRCPUS][1] >= 8:
        pd.cpus = struct.unpack_from("<I", data, sections[FEAT_NRCPUS][0])[0]
    # Attrs: each event's sample layout, and the ids its samples carry.
    kinds: list[int] = []
    id_list, id_kind = [], []
    flags_all = True
    for i in range(a_size // attr_size):
        at = a_off + i * attr_size
        _t, _s, _cfg, _per, stype, _rf, flags = _ATTR_HEAD.unpack_from(data, at)
        ids_off, ids_size = struct.unpack_from("<QQ", data, at + attr_size - 16)
        if stype not in kinds:
            kinds.append(stype)
        k = kinds.index(stype)
        flags_all &= bool(flags & _SAMPLE_ID_ALL)
        for j in range(ids_size // 8):
            id_list.append(struct.unpack_from("<Q", data, ids_off + 8 * j)[0])
            id_kind.append(k)
    if not kinds:
        raise BadInput(f"{name}: the perf.data declares no events")
    if len(kinds) > 1 and not all(st & S_IDENTIFIER for st in kinds):
        raise BadInput(f"{name}: perf.data events with different sample layouts and no sample identifier")
    layouts = [_layout(st) for st in kinds]
    if any(lay[2] == -2 for lay in layouts):
        raise BadInput(f"{name}: perf.data samples with call chains or read values are not supported "
                       "(record without -g and without read formats)")
    order = np.argsort(np.array(id_list, dtype=np.uint64), kind="stable")
    ids = np.array(id_list, dtype=np.uint64)[order]
    idk = np.array(id_kind, dtype=np.int64)[order]
    t_off = np.array([lay[0] for lay in layouts], dtype=np.int64)
    c_off = np.array([lay[1] for lay in layouts], dtype=np.int64)
    r_off = np.array([lay[2] for lay in layouts], dtype=np.int64)
    single = 0 if len(kinds) == 1 else -1
    buf = np.frombuffer(data, dtype=np.uint8)
    e64 = np.zeros(0, np.int64)
    n, nl, stop = _walk(buf, d_off, d_off + d_size, ids, idk, single, t_off, c_off, r_off, False,
                        e64, e64, np.zeros(0, np.uint64), np.zeros(0, np.int16), e64)
    if stop < d_off + d_size and d_off + d_size - stop >= 8:
        raise BadInput(f"{name}: truncated or corrupt perf.data (a record runs past the data at byte {stop})")
    out_off, out_len = np.zeros(n, np.int64), np.zeros(n, np.int64)
    out_ts, out_cpu, lost_at = np.zeros(n, np.uint64), np.zeros(n, np.int16), np.zeros(nl, np.int64)
    _walk(buf, d_off, d_off + d_size, ids, idk, single, t_off, c_off, r_off, True,
          out_off, out_len, out_ts, out_cpu, lost_at)
    # Records come in rounds of per-CPU buffers: order each CPU's samples by time (stable).
    order = np.lexsort((out_ts, out_cpu))
    lost_pages = []
    lost_records: dict[int, int] = {}
    lost_samples: dict[int, int] = {}
    for p in lost_at.tolist():
        rtype, _misc, size = struct.unpack_from("<IHH", data, p)
        count = struct.unpack_from("<Q", data, p + (16 if rtype == REC_LOST else 8))[0]
        if rtype == REC_COMPRESSED:
            continue
        stype = kinds[0]
        if flags_all and len(kinds) > 1:  # the trailer's last u64 is the identifier
            ident = struct.unpack_from("<Q", data, p + size - 8)[0]
            j = int(np.searchsorted(ids, ident))
            stype = kinds[int(idk[j])] if j < len(ids) and ids[j] == ident else kinds[0]
        t_at, c_at = _trailer(stype) if flags_all else (-1, -1)
        ts = struct.unpack_from("<Q", data, p + size - t_at)[0] if t_at > 0 else 0
        cpu = struct.unpack_from("<I", data, p + size - c_at)[0] if c_at > 0 else 0
        if rtype == REC_LOST:  # the kernel's count of records its ring buffer dropped, where it happened
            lost_records[cpu] = lost_records.get(cpu, 0) + int(count)
            lost_pages.append((int(cpu), int(count), int(ts)))
        else:  # perf's end-of-run count of the same drops (read format LOST): no double count
            pd.samples_dropped += int(count)
            lost_samples[cpu] = lost_samples.get(cpu, 0) + int(count)
    pd.lost_per_cpu = {c: max(lost_records.get(c, 0), lost_samples.get(c, 0))
                       for c in sorted({*lost_records, *lost_samples})}
    pd.records = parse.RawRecords(buf, out_off[order], out_len[order], out_ts[order], out_cpu[order], lost_pages)
    if _has_compressed(data, d_off, d_size, n):
        raise BadInput(f"{name}: compressed perf.data (perf record -z) is not supported; record without -z")
    return pd


def _has_compressed(data, d_off: int, d_size: int, samples: int) -> bool:
    """A file of ``PERF_RECORD_COMPRESSED`` records yields no samples: say so instead of 'no events'."""
    if samples:
        return False
    p = d_off
    while p + 8 <= d_off + d_size:
        rtype, _m, size = struct.unpack_from("<IHH", data, p)
        if rtype == REC_COMPRESSED:
            return True
        if size < 8:
            return False
        p += size
    return False


def _tracing_data(data, off: int, size: int, pd: PerfData, name: str) -> None:
    """``HEADER_TRACING_DATA``: trace-cmd's version 6 header (perf writes version "0.6")."""
    r = tracedat._Reader(bytes(data[off : off + size]), name)
    if r.bytes(0, len(tracedat.MAGIC)) != tracedat.MAGIC:
        raise BadInput(f"{name}: corrupt perf.data (tracing data)")
    _ver, at = r.cstr(len(tracedat.MAGIC))
    big_endian = r.bytes(at, 1)[0]
    if big_endian:
        raise BadInput(f"{name}: big-endian perf.data files are not supported")
    pd.page_size = r.u32(at + 2)
    td = tracedat.TraceDat()
    at = tracedat._header_info(r, td, at + 6)
    count = r.u32(at)
    at += 4
    for _ in range(count):
        at += 8 + r.u64(at)
    at = tracedat._event_formats(r, td, at)
    pd.formats = td.formats
    at += 4 + r.u32(at)  # kallsyms
    at += 4 + r.u32(at)  # printk formats
    if at + 8 <= size:
        n = r.u64(at)
        pd.cmdlines = tracedat._cmdlines(r.bytes(at + 8, n))


def load(path: str | Path) -> Trace:
    """A perf.data as a replayable :class:`Trace`; any damage is one :class:`BadInput`."""
    return tracedat.damage_is_bad_input(_load, path, "perf.data")


def _load(path: str | Path) -> Trace:
    """A perf.data as a replayable :class:`Trace` (the workload's process tree, as for a trace.dat)."""
    from .build import build_trace, config_hz, prefetch
    from .events import missing_events_message, recorded_events

    name = str(path)
    pd = read(path)
    problem = missing_events_message(name, pd.formats, "perf")
    if problem:
        raise BadInput(problem)
    rec = pd.records
    index = parse.EventIndex(rec)
    formats = {k: pd.formats[k] for k in recorded_events() if k in pd.formats}
    prefetch(index, formats)  # every field build_trace reads, find_root's among them
    root = tracedat.find_root(rec, formats, index)
    if root is None:
        raise BadInput(f"{name}: the recording has no exec (sched:sched_process_exec), so the recorded "
                       "command cannot be told from the rest of the system")
    cpus = max(pd.cpus, int(rec.cpu.max()) + 1 if len(rec.cpu) else 1)
    t0 = int(rec.ts.min()) if len(rec.ts) else 0
    t1 = int(rec.ts.max()) if len(rec.ts) else 0
    meta = {
        "format": "rseqlab-trace",
        "source": {"kind": "perf.data", "file": name, "tracer": f"perf {pd.perf_version}".strip(),
                   "samples_dropped": pd.samples_dropped},
        "command": [pd.cmdlines.get(root, "?")],
        "cwd": "",
        "start": {"utc": "", "mono_ns": t0},
        "duration_ns": t1 - t0,
        "exit_status": None,
        "kernel": {"release": pd.release, "version": "", "machine": pd.arch, "hz": None, "hz_source": "unknown"},
        "cpus": cpus,
        "topology": {"node_of_cpu": [0] * cpus},
        "glibc": {"version": "", "rseq_size": 32, "rseq_offset": 0, "rseq_tunable_off": False,
                  "registered_size": 32},
        "root": {"pid": root, "rseq_registered": True, "rseq_addr": 0, "rseq_len": 32},
        "buffer_kb_per_cpu": 0,
        "page_size": pd.page_size,
        "recorder": {"reader_cpu_s": 0.0, "pages": 0, "workload_cpu_s": 0.0},
    }
    if pd.release and pd.release == platform.release():
        meta["kernel"]["hz"], meta["kernel"]["hz_source"] = config_hz(pd.release)
    return build_trace(rec, None, formats, pd.page_size, meta, pd.lost_per_cpu, {}, t0, ctype=index, release=True)
