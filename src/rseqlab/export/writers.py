"""Write a :class:`~.timeline.Timeline` as Perfetto protobuf or as Chrome's trace-event JSON.

* Perfetto: a ``perfetto.protos.perfetto.trace.Trace`` of ``TracePacket``\\s built with the
  protos the ``perfetto`` package ships (offline; its trace processor, which downloads a binary,
  is never used): a ``TrackDescriptor`` per track (process, thread, counter or child track),
  then ``TrackEvent``\\s (``TYPE_SLICE_BEGIN``/``END``, ``TYPE_INSTANT``, ``TYPE_COUNTER``) on one
  trusted packet sequence, in time order.
* Chrome (the "Trace Event Format"): ``{"traceEvents": [...]}`` with ``M`` (process and thread
  names), ``X`` (complete slices), ``i`` (thread-scoped instants) and ``C`` (counters) events;
  timestamps and durations in microseconds.

Output is deterministic: same timeline, same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from .timeline import Timeline

SEQUENCE_ID = 1


def _proto():
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    except ImportError:  # pragma: no cover - perfetto is a dependency
        from ..errors import Unavailable

        raise Unavailable("--perfetto needs the perfetto package (pip install perfetto)") from None
    return pb


def perfetto_bytes(tl: Timeline) -> bytes:
    pb = _proto()
    trace = pb.Trace()
    first = True
    for t in tl.tracks:
        p = trace.packet.add()
        p.trusted_packet_sequence_id = SEQUENCE_ID
        if first:
            p.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            first = False
        d = p.track_descriptor
        d.uuid = t.uuid
        if t.parent is not None and t.tid is None:
            d.parent_uuid = t.parent
        d.name = t.name
        if t.counter:
            d.counter.SetInParent()
        elif t.tid is not None:
            d.thread.pid = t.pid
            d.thread.tid = t.tid
            d.thread.thread_name = t.name
        elif t.pid is not None:
            d.process.pid = t.pid
            d.process.process_name = t.name
    events = []
    for s in tl.slices:
        events.append((s.ts, 1, s.track, "B", s))
        events.append((s.ts + s.dur, 0, s.track, "E", s))
    for i in tl.instants:
        events.append((i.ts, 2, i.track, "I", i))
    for c in tl.counters:
        events.append((c.ts, 3, c.track, "C", c))
    # Ends before begins at the same instant (a slice that ends where the next starts); a
    # longer slice begins before the slices it encloses.
    events.sort(key=lambda e: (e[0], e[1], e[2], -(e[4].dur if e[3] == "B" else 0)))
    for ts, _, track, kind, item in events:
        p = trace.packet.add()
        p.trusted_packet_sequence_id = SEQUENCE_ID
        p.timestamp = ts
        te = p.track_event
        te.track_uuid = track
        if kind == "B":
            te.type = pb.TrackEvent.TYPE_SLICE_BEGIN
            _describe(te, item)
        elif kind == "E":
            te.type = pb.TrackEvent.TYPE_SLICE_END
        elif kind == "I":
            te.type = pb.TrackEvent.TYPE_INSTANT
            _describe(te, item)
        else:
            te.type = pb.TrackEvent.TYPE_COUNTER
            te.double_counter_value = float(item.value)
    return trace.SerializeToString(deterministic=True)


def _describe(te, item) -> None:
    """A slice's begin or an instant: its name, category and arguments (sorted, so bytes repeat)."""
    te.name = item.name
    te.categories.append(item.cat)
    for key, value in sorted(item.args.items()):
        a = te.debug_annotations.add()
        a.name = key
        _annotate(a, value)


def _annotate(a, value) -> None:
    if isinstance(value, bool):
        a.bool_value = value
    elif isinstance(value, int):
        a.int_value = value
    elif isinstance(value, float):
        a.double_value = value
    else:
        a.string_value = str(value)


def write_perfetto(tl: Timeline, path: str | Path) -> int:
    data = perfetto_bytes(tl)
    Path(path).write_bytes(data)
    return len(data)


def chrome_document(tl: Timeline) -> dict:
    tracks = {t.uuid: t for t in tl.tracks}
    out = []
    for t in tl.tracks:
        if t.tid is None and not t.counter and t.pid is not None and t.parent is None:
            out.append({"ph": "M", "name": "process_name", "pid": t.pid, "tid": 0, "args": {"name": t.name}})
        elif t.tid is not None:
            out.append({"ph": "M", "name": "thread_name", "pid": t.pid, "tid": t.tid, "args": {"name": t.name}})
    body = []
    for s in tl.slices:
        t = tracks[s.track]
        body.append((s.ts, 0, {"ph": "X", "name": s.name, "cat": s.cat, "pid": t.pid, "tid": t.tid,
                               "ts": s.ts / 1000, "dur": s.dur / 1000, "args": s.args}))
    for i in tl.instants:
        t = tracks[i.track]
        body.append((i.ts, 1, {"ph": "i", "s": "t", "name": i.name, "cat": i.cat, "pid": t.pid, "tid": t.tid,
                               "ts": i.ts / 1000, "args": i.args}))
    for c in tl.counters:
        t = tracks[c.track]
        body.append((c.ts, 2, {"ph": "C", "name": t.name, "pid": t.pid, "tid": 0, "ts": c.ts / 1000,
                               "args": {"value": c.value}}))
    body.sort(key=lambda e: (e[0], e[1]))
    return {"traceEvents": out + [e for _, _, e in body], "displayTimeUnit": "ns",
            "otherData": {"title": tl.title, "producer": "rseqlab"}}


def write_chrome(tl: Timeline, path: str | Path) -> int:
    text = json.dumps(chrome_document(tl), sort_keys=True, separators=(",", ":"))
    Path(path).write_text(text)
    return len(text)
