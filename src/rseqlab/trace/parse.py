"""Decode binary ``trace_pipe_raw`` pages with numpy (the "lockstep walk").

A ring-buffer page is ``u64 timestamp, local_t commit`` followed by
variable-length records. Records cannot be located without walking the page,
but pages are independent: the walk keeps one read position per page and
advances all pages together, one record per numpy step, so the number of
Python iterations is the number of records on the fullest page (about 150
for 4 KiB pages), not the number of records.

Layouts come from tracefs at run time (``events/header_page``,
``events/<sys>/<event>/format``); nothing here hard-codes an event ID or a
field offset. The page and record format: ``kernel/trace/ring_buffer.c`` (``struct buffer_data_page``,
``struct ring_buffer_event``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Record header: type_len in the low 5 bits, time_delta in the upper 27.
_PADDING, _TIME_EXTEND, _TIME_STAMP = 29, 30, 31
_MISSED_EVENTS = 1 << 31  # events were lost before this page
_MISSED_STORED = 1 << 30  # the lost count follows the data as a u64
_COMMIT_MASK = (1 << 30) - 1
_TS_MSB = ~((1 << 59) - 1) & ((1 << 64) - 1)


@dataclass(frozen=True, slots=True)
class EventFormat:
    """One event's ``format`` file: its ID and the numpy dtype of its record."""

    system: str
    name: str
    id: int
    dtype: np.dtype
    size: int


_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<sgn>\d)")


def parse_format(system: str, text: str) -> EventFormat:
    """Build a structured dtype from an event's ``format`` file text."""
    name = re.search(r"^name: (\S+)", text, re.M)
    ident = re.search(r"^ID: (\d+)", text, re.M)
    if name is None or ident is None:
        raise ValueError(f"not an event format file: {text[:60]!r}")
    names, formats, offsets = [], [], []
    end = 0
    for m in _FIELD.finditer(text):
        decl, off, size, signed = m["decl"].strip(), int(m["off"]), int(m["size"]), m["sgn"] == "1"
        fname = decl.split()[-1]
        array = re.match(r"(\w+)\[(\d*)\]", fname)
        if array:
            fname = array.group(1)
        if "__data_loc" in decl:
            fmt = "<u4"
        elif array or size not in (1, 2, 4, 8):
            fmt = f"V{size}" if size else "V1"
        else:
            fmt = f"<{'i' if signed else 'u'}{size}"
        names.append(fname)
        formats.append(fmt)
        offsets.append(off)
        end = max(end, off + size)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": end})
    return EventFormat(system, name.group(1), int(ident.group(1)), dtype, end)


@dataclass(slots=True)
class RawRecords:
    """Every data record of a set of pages, in per-CPU order."""

    flat: np.ndarray  # uint8: all pages back to back
    offset: np.ndarray  # int64: payload offset in ``flat``
    length: np.ndarray  # int64: payload length
    ts: np.ndarray  # uint64: trace clock (ns)
    cpu: np.ndarray  # int16
    lost_pages: list[tuple[int, int, int]]  # (cpu, lost count or -1, page ts) for pages flagged "missed events"

    def drop(self) -> None:
        """Empty the arrays (their memory freed once nothing else holds them); the lost pages stay."""
        e = np.zeros(0, np.int64)
        self.flat, self.offset, self.length = np.zeros(0, np.uint8), e, e
        self.ts, self.cpu = e.astype(np.uint64), e.astype(np.int16)


try:  # compiled page walk and row gathers; without numba, the numpy lockstep walk (same result)
    from numba import njit as _njit
except ImportError:  # without the `fast` extra (numba)
    _njit = None


def _walk_one_page_by_page(flat, page_size, data_len, page_ts, fill, out_off, out_len, out_ts, out_page):
    """The record walk, one page after the other (compiled): the same decisions, in the same
    order, as the numpy lockstep walk below; counts (``fill`` False) or stores the data records."""
    n = 0
    msb = np.uint64(0xF800000000000000)
    for i in range(len(data_len)):
        base = i * page_size
        pos = 16
        end = 16 + min(data_len[i], page_size - 16)
        ts = page_ts[i]
        while pos + 4 <= end:
            at = base + pos
            word = np.uint32(flat[at]) | (np.uint32(flat[at + 1]) << 8) | (np.uint32(flat[at + 2]) << 16) | \
                (np.uint32(flat[at + 3]) << 24)
            type_len = word & 31
            delta = np.uint64(word >> 5)
            a = min(at + 4, base + page_size - 4)
            arr0 = np.int64(flat[a]) | (np.int64(flat[a + 1]) << 8) | (np.int64(flat[a + 2]) << 16) | \
                (np.int64(flat[a + 3]) << 24)
            size = 4 + arr0 if type_len == 0 else 4 + np.int64(type_len) * 4
            is_data = type_len <= 28
            new_ts = ts + delta if is_data else ts
            if type_len == 30:
                new_ts = ts + ((np.uint64(arr0) << np.uint64(27)) | delta)
            elif type_len == 31:
                new_ts = ((np.uint64(arr0) << np.uint64(27)) | delta) | (ts & msb)
            if type_len == 30 or type_len == 31:
                size = 8
            done = False
            if type_len == 29:
                size = 4 + arr0
                done = delta == 0
            ts = new_ts
            if is_data:
                if fill:
                    out_off[n] = at + 8 if type_len == 0 else at + 4
                    out_len[n] = arr0 - 4 if type_len == 0 else np.int64(type_len) * 4
                    out_ts[n] = new_ts
                    out_page[n] = i
                n += 1
            if done or size <= 0:
                pos = end
            else:
                pos += size
    return n


def _gather_rows(flat, offsets, start, size):
    out = np.empty((len(offsets), size), np.uint8)
    for i in range(len(offsets)):
        o = offsets[i] + start
        for j in range(size):
            out[i, j] = flat[o + j]
    return out


if _njit is not None:
    _walk_one_page_by_page = _njit(cache=True)(_walk_one_page_by_page)
    _gather_rows = _njit(cache=True)(_gather_rows)
    _COMPILED = True
else:  # pragma: no cover
    _COMPILED = False


def gather_rows(flat: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """``flat[offsets[i] : offsets[i] + size]`` for every i, as an (n, size) uint8 array.

    A row past the end of ``flat`` (a damaged file) is a ValueError, checked before the compiled
    copy (which does not check bounds) runs."""
    _check_rows(flat, offsets, size)
    return _gather_unchecked(flat, offsets, 0, size)


def _check_rows(flat: np.ndarray, offsets: np.ndarray, size: int) -> None:
    if len(offsets) and (int(offsets.max()) + size > len(flat) or int(offsets.min()) < 0):
        raise ValueError("a record runs past the end of the pages")


def _gather_unchecked(flat: np.ndarray, offsets: np.ndarray, start: int, size: int) -> np.ndarray:
    if _COMPILED:
        return _gather_rows(flat, offsets.astype(np.int64, copy=False), int(start), int(size))
    return flat[offsets[:, None] + (start + np.arange(size))]


def walk_pages(pages_by_cpu: dict[int, bytes], page_size: int, *, lockstep: bool = False) -> RawRecords:
    """Decode the records of every page of every CPU at once (``lockstep``: the numpy walk even
    where the compiled one is available; both give the same records)."""
    chunks, cpus = [], []
    for cpu in sorted(pages_by_cpu):
        data = pages_by_cpu[cpu]
        n = len(data) // page_size
        if n:
            chunks.append(np.frombuffer(data[: n * page_size], dtype=np.uint8))
            cpus.append(np.full(n, cpu, dtype=np.int16))
    if not chunks:
        e = np.zeros(0, dtype=np.int64)
        return RawRecords(np.zeros(0, np.uint8), e, e, e.astype(np.uint64), e.astype(np.int16), [])
    return walk_flat(np.concatenate(chunks), np.concatenate(cpus), page_size, lockstep=lockstep)


def walk_flat(flat: np.ndarray, page_cpu: np.ndarray, page_size: int, *, lockstep: bool = False) -> RawRecords:
    """:func:`walk_pages` of pages already back to back in ``flat`` (uint8, whole pages, each
    CPU's in read order, the CPUs in ascending order), ``page_cpu`` the CPU of each page."""
    npages = len(page_cpu)
    if not npages:
        e = np.zeros(0, dtype=np.int64)
        return RawRecords(np.zeros(0, np.uint8), e, e, e.astype(np.uint64), e.astype(np.int16), [])
    base = np.arange(npages, dtype=np.int64) * page_size
    head = flat.reshape(npages, page_size)
    page_ts = head[:, 0:8].copy().view("<u8").ravel()
    commit = head[:, 8:16].copy().view("<u8").ravel()
    data_len = (commit & _COMMIT_MASK).astype(np.int64)
    lost_pages = []
    for i in np.nonzero(commit & _MISSED_EVENTS)[0]:
        count = -1
        if commit[i] & _MISSED_STORED and 16 + data_len[i] + 8 <= page_size:
            at = base[i] + 16 + data_len[i]
            count = int(flat[at : at + 8].view("<u8")[0])
        lost_pages.append((int(page_cpu[i]), count, int(page_ts[i])))

    if _COMPILED and not lockstep:
        args = (flat, page_size, data_len, page_ts.astype(np.uint64))
        n = _walk_one_page_by_page(*args, False, *(np.zeros(0, t) for t in (np.int64, np.int64, np.uint64, np.int64)))
        off, length = np.zeros(n, np.int64), np.zeros(n, np.int64)
        ts, page = np.zeros(n, np.uint64), np.zeros(n, np.int64)
        _walk_one_page_by_page(*args, True, off, length, ts, page)
        return RawRecords(flat, off, length, ts, page_cpu[page], lost_pages)
    pos = np.full(npages, 16, dtype=np.int64)
    end = 16 + np.minimum(data_len, page_size - 16)
    ts = page_ts.astype(np.uint64)
    active = np.nonzero(pos + 4 <= end)[0]
    out_off, out_len, out_ts, out_page = [], [], [], []
    while len(active):
        p = pos[active]
        at = base[active] + p
        word = _u32(flat, at)
        type_len = word & 31
        delta = (word >> 5).astype(np.uint64)
        arr0 = _u32(flat, np.minimum(at + 4, base[active] + page_size - 4)).astype(np.int64)
        size = np.where(type_len == 0, 4 + arr0, 4 + type_len.astype(np.int64) * 4)
        is_data = type_len <= 28
        # Data records advance the clock by their delta; the payload follows the header
        # (after the length word when type_len is 0).
        cur_ts = ts[active]
        new_ts = np.where(is_data, cur_ts + delta, cur_ts)
        ext = type_len == _TIME_EXTEND
        new_ts = np.where(ext, cur_ts + ((arr0.astype(np.uint64) << np.uint64(27)) | delta), new_ts)
        stamp = type_len == _TIME_STAMP
        if stamp.any():
            absolute = (arr0.astype(np.uint64) << np.uint64(27)) | delta
            new_ts = np.where(stamp, absolute | (cur_ts & np.uint64(_TS_MSB)), new_ts)
        size = np.where(ext | stamp, 8, size)
        pad = type_len == _PADDING
        size = np.where(pad, 4 + arr0, size)
        done = pad & (delta == 0)  # the rest of the page is empty
        ts[active] = new_ts
        if is_data.any():
            sel = is_data
            payload_at = np.where(type_len == 0, at + 8, at + 4)[sel]
            payload_len = np.where(type_len == 0, arr0 - 4, type_len.astype(np.int64) * 4)[sel]
            out_off.append(payload_at)
            out_len.append(payload_len)
            out_ts.append(new_ts[sel])
            out_page.append(active[sel])
        bad = size <= 0
        pos[active] = np.where(done | bad, end[active], p + size)
        active = active[pos[active] + 4 <= end[active]]
    if not out_off:
        e = np.zeros(0, dtype=np.int64)
        return RawRecords(flat, e, e, e.astype(np.uint64), e.astype(np.int16), lost_pages)
    off = np.concatenate(out_off)
    order = np.argsort(off, kind="stable")  # pages are in read order per CPU
    off = off[order]
    page = np.concatenate(out_page)[order]
    return RawRecords(flat, off, np.concatenate(out_len)[order], np.concatenate(out_ts)[order],
                      page_cpu[page], lost_pages)


def _u32(flat: np.ndarray, at: np.ndarray) -> np.ndarray:
    b = flat[at[:, None] + np.arange(4)].astype(np.uint32)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


def common_types(raw: RawRecords) -> np.ndarray:
    """``common_type`` (the event ID) of every record."""
    if len(raw.offset) == 0:
        return np.zeros(0, np.uint16)
    ctype = gather_rows(raw.flat, raw.offset, 2).astype(np.uint16)
    return ctype[:, 0] | (ctype[:, 1] << 8)


def records_of(raw: RawRecords, fmt: EventFormat, ctype: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The records of one event type: (structured array, ts, cpu, index), in per-CPU order.

    ``index`` is each record's position in ``raw`` (a global per-CPU sequence number).
    """
    ctype = common_types(raw) if ctype is None else ctype
    sel = np.nonzero((ctype == fmt.id) & (raw.length >= fmt.size))[0]
    if len(sel) == 0:
        return np.zeros(0, dtype=fmt.dtype), np.zeros(0, np.uint64), np.zeros(0, np.int16), sel
    rows = gather_rows(raw.flat, raw.offset[sel], fmt.size)
    return rows.view(fmt.dtype).ravel(), raw.ts[sel], raw.cpu[sel], sel


class EventIndex:
    """The records of each event ID of a :class:`RawRecords`, found once (a counting sort of the
    16-bit IDs) rather than by a pass over every record per event type; :meth:`prefetch` decodes
    the fields of several event types in one pass over the pages."""

    def __init__(self, raw: RawRecords, ctype: np.ndarray | None = None) -> None:
        self.raw = raw
        self.ctype = common_types(raw) if ctype is None else ctype
        self._rows: dict[int, tuple[EventFormat, frozenset, dict[str, np.ndarray], np.ndarray]] = {}
        if self.ctype.dtype == np.uint16:
            self._count = np.bincount(self.ctype, minlength=1 << 16)
            self._start = np.cumsum(self._count) - self._count
            self._order = _group_by_id(self.ctype, self._start) if _COMPILED else np.argsort(self.ctype, kind="stable")
        else:  # any other integer IDs: a stable sort, bounds by binary search
            self._order = np.argsort(self.ctype, kind="stable")
            ids = self.ctype[self._order]
            self._count = self._start = None
            self._ids = ids

    def _of_id(self, ident: int) -> np.ndarray:
        if self._start is not None:
            if not 0 <= ident < len(self._start):
                return self._order[:0]
            lo = int(self._start[ident])
            return self._order[lo : lo + int(self._count[ident])]
        lo, hi = np.searchsorted(self._ids, ident, "left"), np.searchsorted(self._ids, ident, "right")
        return self._order[lo:hi]

    def select(self, fmt: EventFormat) -> np.ndarray:
        """The records of ``fmt``'s event long enough for its layout, ascending: as
        ``np.nonzero((ctype == fmt.id) & (raw.length >= fmt.size))``."""
        sel = self._of_id(fmt.id)
        return sel[self.raw.length[sel] >= fmt.size]

    def prefetch(self, wanted: dict[EventFormat, tuple[str, ...]]) -> None:
        """Decode ``wanted`` (format: field names) in one pass over the records (compiled; each
        record's 4-byte words from the first to the last of its fields), for :func:`fields_of`
        to hand out: one stream through the pages instead of one per event type. An event type
        whose records are not word-aligned is left to fields_of's own gather."""
        raw = self.raw
        ids = [fmt.id for fmt in wanted]
        if not (_COMPILED and self._start is not None and raw.flat.ctypes.data % 4 == 0):
            return
        slot_of_id = np.full(len(self._start), -1, np.int32)
        lo, words, min_len, cur, layouts = [], [], [], [], []
        pos = 0
        for fmt, names in wanted.items():
            if not (0 <= fmt.id < len(self._start) and ids.count(fmt.id) == 1 and fmt.id not in self._rows and names):
                continue
            sel = self.select(fmt)
            offsets = raw.offset[sel]
            _check_rows(raw.flat, offsets, fmt.size)
            first, dtype = _span(fmt, names, align=4)
            if len(offsets) and (int(offsets.max()) + first + dtype.itemsize > len(raw.flat) or (offsets & 3).any()):
                continue
            slot_of_id[fmt.id] = len(lo)
            lo.append(first)
            words.append(dtype.itemsize // 4)
            min_len.append(fmt.size)
            cur.append(pos)
            layouts.append((fmt, names, dtype, sel, pos))
            pos += len(sel) * dtype.itemsize // 4
        if not layouts:
            return
        out = np.empty(pos, np.uint32)
        _gather_spans(raw.flat[: len(raw.flat) // 4 * 4].view(np.uint32), raw.offset, self.ctype, raw.length,
                      slot_of_id, np.array(lo, np.int64), np.array(words, np.int64), np.array(min_len, np.int64),
                      np.array(cur, np.int64), out)
        for fmt, names, dtype, sel, base in layouts:
            rows = out[base : base + len(sel) * dtype.itemsize // 4].view(dtype)
            self._rows[fmt.id] = (fmt, frozenset(names), {n: rows[n] for n in names}, sel)

    def drop(self) -> None:
        """Forget the grouping and the prefetched fields (arrays handed out stay valid)."""
        self.ctype = self._order = np.zeros(0, np.int64)
        self._rows = {}

    def prefetched(self, fmt: EventFormat, names) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        got = self._rows.get(fmt.id)
        if got is None or got[0] != fmt or not set(names) <= got[1]:
            return None
        return {n: got[2][n] for n in names}, got[3]


def _group_by_id(ctype, start):
    """Record indices grouped by ID, ascending within each (a counting sort; compiled)."""
    pos = start.copy()
    order = np.empty(len(ctype), np.int64)
    for i in range(len(ctype)):
        c = ctype[i]
        order[pos[c]] = i
        pos[c] += 1
    return order


def _gather_spans(flat32, offset, ctype, length, slot_of_id, lo, words, min_len, cur, out):
    """Each wanted record's span of 4-byte words, appended to its event type's part of ``out``
    (word copies: a byte loop of unknown length is three times slower)."""
    for i in range(len(offset)):
        s = slot_of_id[ctype[i]]
        if s < 0 or length[i] < min_len[s]:
            continue
        o = (offset[i] + lo[s]) >> 2
        p = cur[s]
        for j in range(words[s]):
            out[p + j] = flat32[o + j]
        cur[s] = p + words[s]


if _COMPILED:
    _group_by_id = _njit(cache=True)(_group_by_id)
    _gather_spans = _njit(cache=True)(_gather_spans)


def fields_of(index: EventIndex, fmt: EventFormat, names: tuple[str, ...] | list[str]
              ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """:func:`records_of` decoding only the fields ``names`` (each a 1-D array of its own type,
    as the structured array's field would be): (fields, ts, cpu, index). From
    :meth:`EventIndex.prefetch` when it decoded them, else one gather of the bytes from the first
    to the last of those fields per record."""
    raw = index.raw
    got = index.prefetched(fmt, names)
    if got is not None:
        fields, sel = got
        return fields, raw.ts[sel], raw.cpu[sel], sel
    sel = index.select(fmt)
    offsets = raw.offset[sel]
    _check_rows(raw.flat, offsets, fmt.size)  # whole records, as records_of checks them
    return _fields_at(raw, offsets, fmt, names), raw.ts[sel], raw.cpu[sel], sel


def _span(fmt: EventFormat, names, align: int = 1) -> tuple[int, np.dtype]:
    """The first byte of ``names`` in ``fmt``'s record and a dtype of them from there on (both
    ends rounded to ``align`` bytes)."""
    spec = [(n, *fmt.dtype.fields[n][:2]) for n in names]
    lo = min(start for _, _, start in spec) // align * align
    hi = -(-max(start + dt.itemsize for _, dt, start in spec) // align) * align
    return lo, np.dtype({"names": [n for n, _, _ in spec], "formats": [dt for _, dt, _ in spec],
                         "offsets": [start - lo for _, _, start in spec], "itemsize": hi - lo})


def _fields_at(raw: RawRecords, offsets: np.ndarray, fmt: EventFormat, names) -> dict[str, np.ndarray]:
    lo, span = _span(fmt, names)
    rows = _gather_unchecked(raw.flat, offsets, lo, span.itemsize).view(span).ravel()
    return {n: rows[n] for n in names}


def field_at(raw: RawRecords, offsets: np.ndarray, fmt: EventFormat, name: str) -> np.ndarray:
    """Field ``name`` of ``fmt``'s records at payload ``offsets`` (records known to be whole)."""
    return _fields_at(raw, offsets, fmt, (name,))[name]


def data_loc_string(raw: RawRecords, offsets: np.ndarray, loc: np.ndarray) -> list[str]:
    """Decode ``__data_loc`` strings (``offset | len << 16`` from the record start)."""
    out = []
    for base, word in zip(offsets.tolist(), loc.tolist()):
        start, length = base + (word & 0xFFFF), word >> 16
        out.append(bytes(raw.flat[start : start + length]).split(b"\0", 1)[0].decode("utf-8", "replace"))
    return out


def cstr(values: np.ndarray) -> list[str]:
    """Decode fixed ``char[N]`` fields (numpy void) to strings."""
    return [bytes(v).split(b"\0", 1)[0].decode("utf-8", "replace") for v in values]
