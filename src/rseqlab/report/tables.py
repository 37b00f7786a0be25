"""Reports as tables (``--format csv|parquet|markdown``) and a recording's events as one typed table.

Every reporting command builds one JSON document (``--json``); :func:`rows_of` turns it into rows:

* a document with ``kernels`` mapping each kernel to its counters (compare, replay, validate's
  replay) becomes the table of the 6.19 commit message: one row per counter, one column per
  kernel;
* a list of objects (selftest, explain --all, ...) becomes one row per object;
* a distribution over seeds or recordings (``compare --seeds``, ``sweep``, ``replay A B ...``)
  becomes one row per sample (:func:`sample_rows`): every seed or recording x kernel x counter,
  with typed columns (the summaries are in ``--json``);
* any other object becomes ``key, value`` rows;

nested objects are flattened to dotted column names. :func:`event_table` is ``rseqlab trace FILE
--events``: one row per recorded event, with the tracepoint's own field names.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from ..trace.format import IrqKind, Kind, Trace

FORMATS = ("table", "json", "csv", "parquet", "markdown")


def _scalar(v):
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True) if v else ""
    if isinstance(v, list):
        if all(isinstance(x, (int, float, str, bool)) or x is None for x in v):
            return ", ".join(_text(x) for x in v)
        return json.dumps(v, sort_keys=True)
    return v


def _flatten(value, prefix: str = "") -> dict:
    """Nested objects as one level of dotted keys; lists as text."""
    if not isinstance(value, dict):
        return {prefix or "value": _scalar(value)}
    out = {}
    for k, v in value.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = _scalar(v)
    return out


#: Documents whose rows are their samples, and the name of the label column.
_SAMPLE_DOCS = {"rseqlab-compare-seeds": "seed", "rseqlab-sweep": "seed", "rseqlab-replay-recordings": "recording"}


def _block_samples(block: dict, label: str, workload) -> list[dict]:
    """One distribution document's samples: ``kernels.K.COUNTER.samples[i]`` belongs to
    ``block[label + "s"][i]`` (the seeds or recordings, same order for every counter)."""
    labels = block[label + "s"]
    kernels = dict(block["kernels"])
    if isinstance(block.get("observed"), dict):  # replay A B ...: the live tracepoints
        kernels["observed"] = block["observed"]
    rows = []
    for i, at in enumerate(labels):
        for kernel, counters in kernels.items():
            for counter, summary in counters.items():
                row = {} if workload is None else {"workload": workload}
                row.update({label: at, "kernel": kernel, "counter": counter, "value": summary["samples"][i]})
                rows.append(row)
    return rows


def sample_rows(doc: dict) -> list[dict]:
    """Every sample of a distribution document as a row (``workload``, when it has one, ``seed`` or
    ``recording``, ``kernel``, ``counter``, ``value``), in the order seeds x kernels x counters."""
    label = _SAMPLE_DOCS[doc["format"]]
    if doc["format"] == "rseqlab-sweep":
        return [row for name, block in doc["workloads"].items() for row in _block_samples(block, label, name)]
    return _block_samples(doc, label, doc.get("workload"))


def rows_of(doc) -> list[dict]:
    """The rows of a command's JSON document (see the module docstring)."""
    if isinstance(doc, dict) and doc.get("format") in _SAMPLE_DOCS:
        return sample_rows(doc)
    if isinstance(doc, dict) and "format" in doc and "version" in doc:
        # report.json_document's envelope: a list under its one key is the table itself
        rest = {k: v for k, v in doc.items() if k not in ("format", "version")}
        if len(rest) == 1 and isinstance(next(iter(rest.values())), list):
            doc = next(iter(rest.values()))
    if isinstance(doc, dict) and isinstance(doc.get("kernels"), dict) and doc["kernels"] and \
            all(isinstance(v, dict) for v in doc["kernels"].values()):
        kernels = doc["kernels"]
        metrics = list(dict.fromkeys(m for v in kernels.values() for m, x in _flatten(v).items()))
        flat = {k: _flatten(v) for k, v in kernels.items()}
        return [{"metric": m, **{k: flat[k].get(m) for k in kernels}} for m in metrics]
    if isinstance(doc, list) and all(isinstance(v, dict) for v in doc):
        return [_flatten(v) for v in doc]
    if isinstance(doc, dict):
        return [{"key": k, "value": v} for k, v in _flatten(doc).items()]
    return [{"value": doc}]


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c for r in rows for c in r))


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def to_csv(rows: list[dict]) -> str:
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_text(r.get(c)) for c in cols])
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """An aligned pipe table (GitHub-flavoured Markdown; plain text, no box drawing): numbers
    right-aligned, text left-aligned."""
    cols = _columns(rows)
    cells = [[_text(r.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in cols]
    width = [max([len(c), 3, *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]

    def line(values):
        return "| " + " | ".join(v.rjust(width[i]) if numeric[i] else v.ljust(width[i])
                                 for i, v in enumerate(values)) + " |"

    rule = "| " + " | ".join(("-" * (width[i] - 1) + ":") if numeric[i] else "-" * width[i]
                             for i in range(len(cols))) + " |"
    return "\n".join([line(cols), rule, *(line(row) for row in cells)]) + "\n"


def to_arrow(rows: list[dict]):
    """A pyarrow table of the rows; a column of mixed types is stored as text."""
    import pyarrow as pa

    cols = _columns(rows)
    arrays = {}
    for c in cols:
        values = [r.get(c) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int} or kinds <= {float} or kinds <= {bool} or kinds <= {str}:
            arrays[c] = pa.array(values)
        elif kinds <= {int, float}:
            arrays[c] = pa.array([None if v is None else float(v) for v in values])
        else:
            arrays[c] = pa.array([None if v is None else _text(v) for v in values])
    return pa.table(arrays)


def parquet_bytes(table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# ----------------------------------------------------------------------
# A recording's events as one table
# ----------------------------------------------------------------------
#: Per event kind, the tracepoint's own names for the a, b, c, d columns (trace/format.py's Kind).
FIELDS = {
    Kind.SWITCH_OUT: ("sched_switch", ("prev_state", "next_pid")),
    Kind.SWITCH_IN: ("sched_switch_in", ("prev_pid",)),
    Kind.MIGRATE: ("sched_migrate_task", ("orig_cpu", "dest_cpu")),
    Kind.FORK: ("sched_process_fork", ("child_pid", "clone_flags")),
    Kind.EXEC: ("sched_process_exec", ("old_pid",)),
    Kind.EXIT: ("sched_process_exit", ("group_dead",)),
    Kind.SYS_ENTER: ("sys_enter", ("id", None)),
    Kind.SYS_EXIT: ("sys_exit", ("id", "ret")),
    Kind.SIGNAL: ("signal_deliver", ("sig", "sa_handler", "code")),
    Kind.RSEQ_UPDATE: ("rseq_update", ("cpu_id", "node_id", "mm_cid")),
    Kind.RSEQ_IP_FIXUP: ("rseq_ip_fixup", ("regs_ip", "start_ip", "post_commit_offset", "abort_ip")),
    Kind.IRQ: ("irq", ("irq_kind", "address", "ip")),  # address: user page faults; ip: where recorded
    Kind.LOST: ("lost", ("lost_count",)),
    Kind.USER_ENTER: ("user_enter", ()),
    Kind.USER_EXIT: ("user_exit", ()),
    Kind.KERNEL_FAULT: ("page_fault_kernel", ("address", "ip", "error_code")),
}
_UNSIGNED = {"regs_ip", "start_ip", "abort_ip", "post_commit_offset"}


def event_columns(trace: Trace) -> dict[str, np.ndarray | list]:
    """One column per field: ``ts_ns``, ``cpu``, ``pid``, ``comm``, ``event``, then every
    tracepoint field under its own name (absent for other events: masked), and ``args`` of the
    syscalls whose arguments the recording keeps (``arg0`` .. ``arg5``)."""
    ev = trace.events
    n = len(ev["ts"])
    kinds = ev["kind"]
    comms = trace.meta.get("tasks", {})
    names = np.array([FIELDS[Kind(k)][0] for k in range(len(Kind))], dtype=object)
    cols: dict[str, object] = {
        "ts_ns": ev["ts"].astype(np.int64),
        "cpu": ev["cpu"].astype(np.int16),
        "pid": ev["pid"].astype(np.int32),
        "comm": [comms.get(str(p), "") for p in ev["pid"].tolist()],
        "event": names[kinds].tolist() if n else [],
    }
    fields: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, (_, slots) in FIELDS.items():
        sel = kinds == kind
        if not sel.any():
            continue
        for src, name in zip("abcd", slots):
            if name is None:
                continue
            values, mask = fields.setdefault(name, (np.zeros(n, np.int64), np.zeros(n, bool)))
            values[sel] = ev[src][sel]
            mask[sel] = True
    for name, (values, mask) in fields.items():
        cols[name] = (values.view(np.uint64) if name in _UNSIGNED else values, mask)
    if "irq_kind" in fields:
        values, mask = fields["irq_kind"]
        cols["irq_kind"] = ([IrqKind(int(v)).name.lower() if m else None for v, m in zip(values, mask)], None)
    sa = trace.sysargs
    if len(sa["event"]):
        rows = sa["event"].astype(np.int64)
        for i in range(6):
            values, mask = np.zeros(n, np.uint64), np.zeros(n, bool)
            values[rows] = sa[f"arg{i}"]
            mask[rows] = True
            cols[f"arg{i}"] = (values, mask)
    return cols


def event_table(trace: Trace):
    """:func:`event_columns` as a pyarrow table (nulls where a field does not apply)."""
    import pyarrow as pa

    arrays = {}
    for name, col in event_columns(trace).items():
        if isinstance(col, tuple):
            values, mask = col
            arrays[name] = pa.array(values, mask=None if mask is None else ~mask)
        else:
            arrays[name] = pa.array(col)
    return pa.table(arrays)
